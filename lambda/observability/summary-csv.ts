/**
 * The dashboard's CSV export: what the page shows for the same range and org, one row per figure, with a
 * `section` column (totals, over_time, by_model, by_team_model, top_users, top_keys, budgets, refusals_by_reason,
 * refused_keys). Money is exact decimal USD (six places, from integer micro-USD); cells that a spreadsheet
 * would run as a formula are prefixed with `'`.
 */
import { formatUsd } from '../core/money';
import type { SpendFigures, SpendSummary } from './spend-summary';

export const CSV_COLUMNS = [
  'section',
  'name',
  'detail',
  'requests',
  'upstream_errors',
  'input_tokens',
  'output_tokens',
  'cost_usd',
  'window',
  'limit_usd',
  'spent_usd',
  'used_pct',
  'state',
  'refusals',
] as const;
type Row = Partial<Record<(typeof CSV_COLUMNS)[number], string | number>>;

/** One CSV cell: quoted when needed, formula-looking text defused. */
export function csvCell(value: string | number | undefined): string {
  if (value === undefined) return '';
  let text = String(value);
  if (typeof value === 'string' && text.length > 1 && /^[=+\-@\t\r]/.test(text) && !/^-?\d+(\.\d+)?$/.test(text)) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function figures(f: SpendFigures): Row {
  return {
    requests: f.requests,
    upstream_errors: f.upstreamErrors,
    input_tokens: f.inputTokens,
    output_tokens: f.outputTokens,
    cost_usd: formatUsd(f.costMicros),
  };
}

/** The summary as CSV (a header line, then one line per row; CRLF line ends as RFC 4180 says). */
export function summaryCsv(s: SpendSummary): string {
  const rows: Row[] = [];
  rows.push({ section: 'totals', name: s.period, detail: s.org ? `team ${s.org}` : 'all teams', ...figures(s.totals), refusals: s.refusals?.total ?? '' });
  for (const b of s.overTime) rows.push({ section: 'over_time', name: b.start, detail: b.label, ...figures(b) });
  for (const g of s.byModel) rows.push({ section: 'by_model', name: g.name, ...figures(g) });
  for (const g of s.byOrgModel) rows.push({ section: 'by_team_model', name: g.orgId ?? '', detail: g.model, ...figures(g) });
  for (const g of s.topUsers) rows.push({ section: 'top_users', name: g.name, detail: g.orgId ?? '', ...figures(g) });
  for (const g of s.topKeys) rows.push({ section: 'top_keys', name: g.name, detail: [g.keyName, g.userId, g.orgId, g.keyStatus].filter(Boolean).join(' / '), ...figures(g) });
  for (const b of s.budgets) {
    rows.push({
      section: 'budgets',
      name: b.scope,
      detail: `${b.label} (${b.source})`,
      window: b.windowKey,
      limit_usd: formatUsd(b.limitMicros),
      spent_usd: formatUsd(b.spentMicros),
      used_pct: (Math.round(b.utilisation * 1000) / 10).toFixed(1),
      state: b.refusingBecause ? `${b.state}: ${b.refusingBecause}` : b.state,
    });
  }
  for (const r of s.refusals?.byReason ?? []) rows.push({ section: 'refusals_by_reason', name: r.reason, detail: r.label, refusals: r.count });
  for (const k of s.refusals?.topKeys ?? []) {
    const reasons = Object.entries(k.reasons).map(([reason, n]) => `${reason}=${n}`).join(' ');
    rows.push({ section: 'refused_keys', name: k.keyId, detail: `${k.label}; ${reasons}`, refusals: k.count });
  }
  const line = (cells: readonly (string | number | undefined)[]) => cells.map(csvCell).join(',');
  return [line(CSV_COLUMNS), ...rows.map((r) => line(CSV_COLUMNS.map((c) => r[c])))].join('\r\n') + '\r\n';
}
