/**
 * `npm run admin -- report [--range hour|today|yesterday|7d|month] [--org TEAM] [--json]` (or the older
 * `--window hour|day|month`): the dashboard's summary in the terminal — spend over time (a bar per bucket),
 * refusals by reason and the most refused keys, cost by model and by team, top users and keys, the utilisation of
 * every budget in force, and, where the store offers them, open circuits and recent alerts. Same figures as
 * /dashboard: both come from {@link buildSpendSummary}. Money and times read as in every CLI table (format.ts:
 * `$1,234.57`, exact under a cent; local times); `--json` is the summary itself, exact integer micro-USD and ISO
 * times.
 */
import { humanUsd } from '../core/money';
import type { Window } from '../core/windows';
import { localTime, table as sharedTable } from './format';
import { buildSpendSummary, type SpendGroup, type SpendSummary, type SummaryRange, type SummarySources } from '../observability/spend-summary';

const BAR_WIDTH = 40;

/** The CLI's table (format.ts), indented under its heading. */
const table = (rows: readonly Record<string, string | number>[]) => sharedTable(rows, '  ');

function bar(value: number, max: number): string {
  const n = max > 0 ? Math.round((value / max) * BAR_WIDTH) : 0;
  return '█'.repeat(value > 0 ? Math.max(1, n) : 0).padEnd(BAR_WIDTH);
}

const pct = (f: number) => `${Math.round(f * 1000) / 10}%`;

function groupRows(groups: readonly SpendGroup[], column: string): Record<string, string | number>[] {
  return groups.map((g) => ({
    [column]: g.name,
    ...(g.keyName !== undefined ? { name: g.keyName } : {}),
    ...(g.userId !== undefined ? { user: g.userId } : {}),
    ...(column !== 'model' ? { team: g.orgId ?? '' } : {}),
    ...(g.keyStatus !== undefined ? { status: g.keyStatus } : {}),
    requests: g.requests,
    upstreamErrors: g.upstreamErrors,
    inputTokens: g.inputTokens,
    outputTokens: g.outputTokens,
    cost: humanUsd(g.costMicros),
  }));
}

/** The summary as text, for people. */
export function formatReport(s: SpendSummary): string {
  const t = s.totals;
  const lines: string[] = [];
  lines.push(`tollgate report · ${s.period} (UTC)${s.org ? ` · team ${s.org}` : ''} · as of ${s.generatedAt.slice(0, 16).replace('T', ' ')}`);
  const refused = s.refusals ? `${s.refusals.total} refused by the gateway · ` : '';
  lines.push(
    `spend ${humanUsd(t.costMicros)} · ${t.requests} requests answered · ${refused}${t.upstreamErrors} upstream errors (${pct(t.requests ? t.upstreamErrors / t.requests : 0)}) · ` +
      `tokens ${t.inputTokens} in / ${t.outputTokens} out (${t.cachedInputTokens} cached)`,
  );
  lines.push('', 'Spend over time');
  const max = Math.max(0, ...s.overTime.map((b) => b.costMicros));
  for (const b of s.overTime) lines.push(`  ${b.label.padStart(5)}  ${bar(b.costMicros, max)} ${humanUsd(b.costMicros).padStart(10)}  ${b.requests} req`);
  if (s.refusals) {
    const r = s.refusals;
    lines.push('', `Refused by reason (${r.days.length === 1 ? r.days[0] : `${r.days[0]} – ${r.days[r.days.length - 1]}`})`, table(r.byReason.map((x) => ({ reason: x.reason, refused: x.count, meaning: x.label }))));
    lines.push('', 'Top refused keys', table(r.topKeys.map((k) => ({ key: k.keyId, who: k.label, refused: k.count, reasons: Object.entries(k.reasons).map(([reason, n]) => `${reason} ${n}`).join(', ') }))));
  }
  lines.push('', 'Cost by model', table(groupRows(s.byModel, 'model')));
  lines.push('', 'Cost by team and model', table(s.byOrgModel.map((g) => ({ team: g.orgId ?? '-', model: g.model, requests: g.requests, cost: humanUsd(g.costMicros) }))));
  lines.push('', 'Top users', table(groupRows(s.topUsers, 'user')));
  lines.push('', 'Top keys', table(groupRows(s.topKeys, 'key')));
  lines.push(
    '',
    'Budget utilisation (every limit in force, current windows)',
    table(
      s.budgets.map((b) => ({
        scope: b.scope,
        who: b.label,
        window: b.window,
        limit: humanUsd(b.limitMicros),
        source: b.source,
        spent: humanUsd(b.spentMicros),
        held: humanUsd(b.reservedMicros),
        used: pct(b.utilisation),
        state: b.state === 'refusing' ? `REFUSING (${b.refusingBecause})` : b.state === 'near' ? 'near' : '',
      })),
    ),
  );
  if (s.revokedKeysHidden > 0) lines.push(`  (${s.revokedKeysHidden} revoked key${s.revokedKeysHidden === 1 ? '' : 's'} not shown)`);
  if (s.circuits) {
    lines.push('', 'Open circuits', table(s.circuits.map((c) => ({ scope: c.scope, cause: c.cause, reason: c.reason, opened: localTime(c.openedAt), closes: c.closesAt ? localTime(c.closesAt) : 'on ack' }))));
  }
  if (s.alerts) {
    lines.push(
      '',
      'Recent alerts and acknowledgements',
      table(s.alerts.map((a) => ({ at: localTime(a.at), kind: a.kind === 'acknowledgement' ? 'acknowledged' : a.severity, scope: a.scope, summary: a.summary }))),
    );
  }
  return lines.join('\n');
}

/** Builds the summary of the current `range` (or `window`) and prints it (as JSON with `json`). */
export async function runReport(
  sources: SummarySources,
  options: { readonly window?: Window; readonly range?: SummaryRange; readonly org?: string; readonly json: boolean; readonly now: number },
  out: (text: string) => void,
): Promise<SpendSummary> {
  const summary = await buildSpendSummary(sources, {
    ...(options.range ? { range: options.range } : options.window ? { window: options.window } : {}),
    ...(options.org ? { org: options.org } : {}),
    now: options.now,
  });
  out(options.json ? JSON.stringify(summary, null, 2) : formatReport(summary));
  return summary;
}
