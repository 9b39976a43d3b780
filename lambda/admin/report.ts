/**
 * `npm run admin -- report [--window hour|day|month] [--json]`: the dashboard's summary in the terminal — spend
 * over time (a bar per bucket), cost by model, top users and keys, budget utilisation, and, where the store
 * offers them, open circuits and recent alerts. Same figures as /dashboard: both come from
 * {@link buildSpendSummary}.
 */
import { displayUsd } from '../core/money';
import type { Window } from '../core/windows';
import { buildSpendSummary, type SpendGroup, type SpendSummary, type SummarySources } from '../observability/spend-summary';

const BAR_WIDTH = 40;

function table(rows: readonly Record<string, string | number>[]): string {
  if (rows.length === 0) return '  (none)';
  const cols = Object.keys(rows[0]!);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '').length)));
  const line = (cells: readonly string[]) => `  ${cells.map((c, i) => c.padEnd(width[i]!)).join('  ')}`.trimEnd();
  return [line(cols), line(width.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => String(r[c] ?? ''))))].join('\n');
}

function bar(value: number, max: number): string {
  const n = max > 0 ? Math.round((value / max) * BAR_WIDTH) : 0;
  return '█'.repeat(value > 0 ? Math.max(1, n) : 0).padEnd(BAR_WIDTH);
}

const pct = (f: number) => `${Math.round(f * 1000) / 10}%`;

function groupRows(groups: readonly SpendGroup[], column: string): Record<string, string | number>[] {
  return groups.map((g) => ({
    [column]: g.name,
    ...(g.userId !== undefined ? { user: g.userId } : {}),
    requests: g.requests,
    failed: g.failed,
    inputTokens: g.inputTokens,
    outputTokens: g.outputTokens,
    cost: displayUsd(g.costMicros),
  }));
}

/** The summary as text, for people. */
export function formatReport(s: SpendSummary): string {
  const t = s.totals;
  const lines: string[] = [];
  lines.push(`tollgate report · ${s.window} ${s.windowKey.split('#')[1] ?? ''} (UTC) · as of ${s.generatedAt.slice(0, 16).replace('T', ' ')}`);
  lines.push(
    `spend ${displayUsd(t.costMicros)} · ${t.requests} requests (${t.failed} failed, ${pct(t.requests ? t.failed / t.requests : 0)}) · ` +
      `tokens ${t.inputTokens} in / ${t.outputTokens} out (${t.cachedInputTokens} cached)`,
  );
  lines.push('', 'Spend over time');
  const max = Math.max(0, ...s.overTime.map((b) => b.costMicros));
  for (const b of s.overTime) lines.push(`  ${b.label.padStart(5)}  ${bar(b.costMicros, max)} ${displayUsd(b.costMicros).padStart(10)}  ${b.requests} req`);
  lines.push('', 'Cost by model', table(groupRows(s.byModel, 'model')));
  lines.push('', 'Top users', table(groupRows(s.topUsers, 'user')));
  lines.push('', 'Top keys', table(groupRows(s.topKeys, 'key')));
  lines.push(
    '',
    'Budget utilisation',
    table(
      s.budgets.map((b) => ({
        scope: b.scope,
        window: b.window,
        limit: displayUsd(b.limitMicros),
        spent: displayUsd(b.spentMicros),
        held: displayUsd(b.reservedMicros),
        used: pct(b.utilisation),
        '': b.utilisation >= 1 ? 'OVER' : b.utilisation >= 0.8 ? 'near' : '',
      })),
    ),
  );
  if (s.circuits) {
    lines.push('', 'Open circuits', table(s.circuits.map((c) => ({ scope: c.scope, cause: c.cause, reason: c.reason, opened: new Date(c.openedAt).toISOString(), closes: c.closesAt ? new Date(c.closesAt).toISOString() : 'on ack' }))));
  }
  if (s.alerts) {
    lines.push('', 'Recent alerts', table(s.alerts.map((a) => ({ at: new Date(a.at).toISOString(), severity: a.severity, scope: a.scope, summary: a.summary }))));
  }
  return lines.join('\n');
}

/** Builds the summary of the current `window` and prints it (as JSON with `json`). */
export async function runReport(
  sources: SummarySources,
  options: { readonly window: Window; readonly json: boolean; readonly now: number },
  out: (text: string) => void,
): Promise<SpendSummary> {
  const summary = await buildSpendSummary(sources, { window: options.window, now: options.now });
  out(options.json ? JSON.stringify(summary, null, 2) : formatReport(summary));
  return summary;
}
