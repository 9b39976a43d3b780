/**
 * The local dashboard page: one self-contained HTML document (inline CSS under a nonce, inline SVG charts, no
 * script) rendered from a {@link SpendSummary}. Filters (range, team), the auto-refresh toggle and the CSV
 * export are plain links carrying the same query, so the page needs no script: auto-refresh is a
 * `<meta http-equiv="refresh">`.
 */
import { humanUsd } from '../../core/money';
import { type BudgetUse, RANGE_LABELS, type SpendGroup, SUMMARY_RANGES, type SpendSummary, type SummaryRange } from '../../observability/spend-summary';
import { type BarItem, barChart, columnChart, escapeHtml } from './charts';

const CSS = `
:root { color-scheme: light dark; --fg: #1d2330; --muted: #667085; --bg: #f6f7f9; --card: #fff; --line: #e4e7ec;
  --accent: #2f6fde; --warn: #d98a00; --over: #d13b3b; --track: #eef0f4; --ack: #3a8a5c; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8ee; --muted: #98a2b3; --bg: #11141a; --card: #1a1f28; --line: #2a3140; --track: #232a36; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 8px 16px; padding: 12px 24px; border-bottom: 1px solid var(--line); background: var(--card); }
header h1 { font-size: 18px; margin: 0; }
header .period { color: var(--muted); }
nav { display: flex; flex-wrap: wrap; gap: 4px 8px; align-items: baseline; }
nav .what { color: var(--muted); }
nav a { color: var(--accent); text-decoration: none; }
nav a.current { font-weight: 600; text-decoration: underline; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; padding: 16px 24px; align-items: start; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 14px; margin: 0 0 8px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; }
.card .value { font-size: 24px; font-weight: 600; }
.card .name { color: var(--muted); }
.card .value.over { color: var(--over); }
.chart { display: block; width: 100%; max-width: 720px; height: auto; }
.chart.wide { max-width: 1440px; }
.chart text { font-size: 12px; fill: var(--fg); }
.chart .axis { fill: var(--muted); font-size: 12px; }
.chart .grid { stroke: var(--line); }
.chart .col, .chart .bar.ok { fill: var(--accent); }
.chart .bar.warn { fill: var(--warn); }
.chart .bar.over { fill: var(--over); }
.chart .bar.muted { fill: var(--muted); }
.chart .track { fill: var(--track); }
.chart .track.over { fill: var(--over); fill-opacity: 0.18; }
.empty { color: var(--muted); margin: 0; }
.note { color: var(--muted); margin: 6px 0 0; }
ul.events { list-style: none; margin: 0; padding: 0; }
ul.events li { padding: 6px 0; border-bottom: 1px solid var(--line); }
.sev-critical { color: var(--over); font-weight: 600; }
.sev-warning { color: var(--warn); font-weight: 600; }
.ack { color: var(--ack); font-weight: 600; }
.legend { color: var(--muted); margin: 0 0 6px; }
.legend .sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px; }
.legend .sw.ok { background: var(--accent); } .legend .sw.warn { background: var(--warn); } .legend .sw.over { background: var(--over); }
time, .muted { color: var(--muted); }
`;

const fmtTokens = (n: number) => (n >= 1_000_000 ? `${(n / 1_000_000).toFixed(1)}M` : n >= 10_000 ? `${Math.round(n / 1000)}k` : String(n));
const fmtCount = (n: number) => n.toLocaleString('en-US');
const pct = (f: number) => `${Math.round(f * 1000) / 10}%`;
const usdAxis = (micros: number) => humanUsd(Math.round(micros));

function costBars(groups: readonly SpendGroup[], label: (g: SpendGroup) => string): BarItem[] {
  return groups.map((g) => ({ label: label(g), value: g.costMicros, text: `${humanUsd(g.costMicros)} · ${g.requests} req` }));
}

/** A key as people know it: its name, its user and team, and its status when not active. */
function keyLabel(g: SpendGroup): string {
  const who = g.userId ? (g.orgId ? `${g.userId} (${g.orgId})` : g.userId) : '';
  const status = g.keyStatus && g.keyStatus !== 'active' ? ` [${g.keyStatus}]` : '';
  return `${g.keyName ?? g.name}${who ? ` · ${who}` : ''}${status}`;
}

function budgetBar(b: BudgetUse): BarItem {
  const tone = b.state === 'refusing' ? 'over' : b.state === 'near' ? 'warn' : 'ok';
  const state = b.state === 'refusing' ? ` · refusing (${b.refusingBecause})` : '';
  const source = b.source === 'default' ? ', default' : '';
  return { label: `${b.label} (${b.window})`, value: b.utilisation, text: `${pct(b.utilisation)} of ${humanUsd(b.limitMicros)}${source}${state}`, tone };
}

function chartOrEmpty(hasData: boolean, chart: () => string, empty: string): string {
  return hasData ? chart() : `<p class="empty">${escapeHtml(empty)}</p>`;
}

function when(ms: number): string {
  const iso = new Date(ms).toISOString();
  return `<time datetime="${iso}">${iso.slice(0, 16).replace('T', ' ')} UTC</time>`;
}

export interface DashboardView {
  /** Auto-refresh period in seconds; absent = off. */
  readonly refreshSeconds?: number;
}

/** The auto-refresh periods offered. */
export const REFRESH_SECONDS = 30;

/** The dashboard's own link for a range, team and refresh setting. */
export function dashboardHref(path: string, q: { readonly range: SummaryRange; readonly org?: string; readonly refresh?: number }): string {
  const params = new URLSearchParams({ range: q.range });
  if (q.org) params.set('org', q.org);
  if (q.refresh) params.set('refresh', String(q.refresh));
  return `${path}?${params.toString()}`;
}

/** Renders the dashboard page. `nonce` must match the response's Content-Security-Policy. */
export function renderDashboard(summary: SpendSummary, options: { readonly nonce: string } & DashboardView): string {
  const s = summary;
  const t = s.totals;
  const refresh = options.refreshSeconds;
  const here = { range: s.range, ...(s.org ? { org: s.org } : {}), ...(refresh ? { refresh } : {}) };
  const href = (over: Partial<{ range: SummaryRange; org: string | undefined; refresh: number | undefined }>) =>
    escapeHtml(dashboardHref('/dashboard', { ...here, ...over } as { range: SummaryRange; org?: string; refresh?: number }));
  const upstreamRate = t.requests > 0 ? t.upstreamErrors / t.requests : 0;
  const refused = s.refusals?.total;
  const rangeLabel = RANGE_LABELS[s.range];
  const cards = [
    ['total-cost', 'Spend', humanUsd(t.costMicros), ''],
    ['total-requests', 'Requests answered', fmtCount(t.requests), ''],
    ['total-tokens', 'Tokens (in / out)', `${fmtTokens(t.inputTokens)} / ${fmtTokens(t.outputTokens)}`, ''],
    ['refused-total', 'Refused by the gateway', refused === undefined ? 'n/a' : fmtCount(refused), refused ? 'over' : ''],
    ['upstream-errors', 'Upstream errors (provider)', `${fmtCount(t.upstreamErrors)} (${pct(upstreamRate)})`, ''],
  ]
    .map(([id, name, value, tone]) => `<div class="card" data-testid="${id}"><div class="name">${name}</div><div class="value${tone ? ` ${tone}` : ''}">${escapeHtml(value!)}</div></div>`)
    .join('');

  const overTime = chartOrEmpty(
    t.requests > 0,
    () =>
      columnChart(
        s.overTime.map((b) => ({ label: b.label, value: b.costMicros, title: `${b.label}: ${humanUsd(b.costMicros)}, ${b.requests} requests` })),
        { ariaLabel: `Spend over ${rangeLabel}`, formatAxis: usdAxis, wide: true },
      ),
    `No requests ${rangeLabel}.`,
  );

  const r = s.refusals;
  const refusalsByReason = !r
    ? '<p class="empty">Refusal counts are not available on this gateway.</p>'
    : chartOrEmpty(
        r.byReason.length > 0,
        () => barChart(r.byReason.map((x) => ({ label: x.reason, value: x.count, text: `${fmtCount(x.count)} · ${x.label}`, tone: 'over' })), { ariaLabel: 'Refused by reason' }),
        `Nothing refused ${rangeLabel}.`,
      );
  const refusedKeys = !r
    ? '<p class="empty">Refusal counts are not available on this gateway.</p>'
    : chartOrEmpty(
        r.topKeys.length > 0,
        () =>
          barChart(
            r.topKeys.map((k) => ({
              label: k.label,
              value: k.count,
              text: `${fmtCount(k.count)} · ${Object.entries(k.reasons)
                .sort((a, b) => (b[1] ?? 0) - (a[1] ?? 0))
                .map(([reason, n]) => `${reason} ${n}`)
                .join(', ')}`,
              tone: 'over',
            })),
            { ariaLabel: 'Top refused keys' },
          ),
        `No key refused ${rangeLabel}.`,
      );
  const refusalScopes = r && r.byScope.length > 0 ? `<p class="note">by scope: ${r.byScope.slice(0, 8).map((x) => `${escapeHtml(x.scope)} ${fmtCount(x.count)}`).join(' · ')}</p>` : '';

  const circuits = s.circuits;
  const alerts = s.alerts;
  const circuitList =
    circuits === undefined
      ? '<p class="empty">Circuit state is not available on this gateway.</p>'
      : circuits.length === 0
        ? '<p class="empty">All circuits closed.</p>'
        : `<ul class="events">${circuits
            .map(
              (c) =>
                `<li><strong>${escapeHtml(c.scope)}</strong> · ${escapeHtml(c.cause)} · ${escapeHtml(c.reason)} <span class="muted">opened</span> ${when(c.openedAt)} ` +
                `<span class="muted">${c.closesAt ? 'closes' : 'until acknowledged'}</span> ${c.closesAt ? when(c.closesAt) : ''}</li>`,
            )
            .join('')}</ul>`;
  const alertList =
    alerts === undefined
      ? '<p class="empty">Alerts are not available on this gateway.</p>'
      : alerts.length === 0
        ? '<p class="empty">No alerts in the last 24 hours.</p>'
        : `<ul class="events">${alerts
            .map((a) =>
              a.kind === 'acknowledgement'
                ? `<li data-kind="acknowledgement">${when(a.at)} <span class="ack">acknowledged</span> <strong>${escapeHtml(a.scope)}</strong> ${escapeHtml(a.summary)}</li>`
                : `<li data-kind="alert">${when(a.at)} <span class="sev-${escapeHtml(a.severity)}">${escapeHtml(a.severity)}</span> <strong>${escapeHtml(a.scope)}</strong> ${escapeHtml(a.summary)}</li>`,
            )
            .join('')}</ul>`;

  const sv = s.savings;
  const savingsHtml = !sv
    ? '<p class="empty">Savings are not available on this gateway.</p>'
    : `<ul class="events"><li>cache hits <strong data-testid="cache-hits">${sv.cacheHits}</strong> of ${sv.cacheHits + sv.cacheMisses} cached lookups` +
      ` (${sv.cacheHits + sv.cacheMisses > 0 ? ((100 * sv.cacheHits) / (sv.cacheHits + sv.cacheMisses)).toFixed(1) : '0.0'} %)</li>` +
      `<li>saved by the cache <strong data-testid="cache-saved">${escapeHtml(humanUsd(sv.savedMicros))}</strong></li>` +
      `<li>served by fallback <strong data-testid="fallbacks">${sv.fallbacks}</strong>, by budget downgrade <strong>${sv.downgrades}</strong>` +
      ` costing ${escapeHtml(humanUsd(sv.fallbackCostMicros))}</li></ul>`;
  const driftRows = s.drift;
  const driftHtml = !driftRows
    ? '<p class="empty">Billing reconciliation is not available on this gateway.</p>'
    : driftRows.length === 0
      ? '<p class="empty">No reconciled day in this range (npm run admin -- reconcile).</p>'
      : `<ul class="events">${driftRows
          .slice(0, 20)
          .map(
            (d) =>
              `<li>${escapeHtml(d.day)} <strong>${escapeHtml(d.provider)}/${escapeHtml(d.model)}</strong> ledger ${escapeHtml(humanUsd(d.ledgerMicros))} · billed ${escapeHtml(humanUsd(d.billedMicros))} · ` +
              `drift <span class="${d.alarm ? 'sev-critical' : 'muted'}">${d.driftMicros < 0 ? '-' : '+'}${escapeHtml(humanUsd(Math.abs(d.driftMicros)))}</span></li>`,
          )
          .join('')}</ul>`;

  const budgetsHtml =
    chartOrEmpty(
      s.budgets.length > 0,
      () =>
        '<p class="legend"><span class="sw ok"></span>under 80 %<span class="sw warn"></span>80 % or more<span class="sw over"></span>refusing</p>' +
        barChart(s.budgets.map(budgetBar), { ariaLabel: 'Budget utilisation', max: 1, wide: true }),
      'No budget limit in force (every default is turned off and none is set).',
    ) + (s.revokedKeysHidden > 0 ? `<p class="note" data-testid="revoked-hidden">${s.revokedKeysHidden} revoked key${s.revokedKeysHidden === 1 ? '' : 's'} not shown.</p>` : '');

  const current = (on: boolean) => (on ? ' class="current" aria-current="page"' : '');
  const rangeNav = SUMMARY_RANGES.map((x) => `<a href="${href({ range: x })}"${current(x === s.range)}>${escapeHtml(RANGE_LABELS[x])}</a>`).join('');
  const orgNav = [`<a href="${href({ org: undefined })}"${current(!s.org)}>all</a>`, ...s.orgs.map((o) => `<a href="${href({ org: o })}"${current(o === s.org)}>${escapeHtml(o)}</a>`)].join('');
  const refreshNav = `<a href="${href({ refresh: undefined })}"${current(!refresh)}>off</a><a href="${href({ refresh: REFRESH_SECONDS })}"${current(!!refresh)}>${REFRESH_SECONDS} s</a>`;
  const csvHref = escapeHtml(dashboardHref('/dashboard/export.csv', { range: s.range, ...(s.org ? { org: s.org } : {}) }));
  const scopeNote = s.org ? ` · team ${escapeHtml(s.org)}` : '';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${refresh ? `<meta http-equiv="refresh" content="${refresh}">\n` : ''}<title>tollgate · ${escapeHtml(s.period)}${scopeNote}</title>
<link rel="icon" href="data:,">
<style nonce="${escapeHtml(options.nonce)}">${CSS}</style>
</head>
<body>
<header><h1>tollgate</h1><span class="period" data-testid="period">${escapeHtml(s.period)} (UTC)${scopeNote}</span>
<nav data-testid="range-nav"><span class="what">range</span>${rangeNav}</nav>
<nav data-testid="org-nav"><span class="what">team</span>${orgNav}</nav>
<nav data-testid="refresh-nav"><span class="what">auto-refresh</span>${refreshNav}</nav>
<nav><a data-testid="csv-export" href="${csvHref}" download>CSV export</a></nav>
<span class="muted">as of ${when(Date.parse(s.generatedAt))}</span></header>
<main>
<section class="wide" data-testid="totals"><div class="cards">${cards}</div></section>
<section class="wide" data-testid="spend-over-time"><h2>Spend over time</h2>${overTime}</section>
<section data-testid="refusals-by-reason"><h2>Refused ${escapeHtml(rangeLabel)} by reason</h2>${refusalsByReason}${refusalScopes}</section>
<section data-testid="top-refused-keys"><h2>Top refused keys</h2>${refusedKeys}</section>
<section class="wide" data-testid="budgets"><h2>Budget utilisation (every limit in force, current windows)</h2>${budgetsHtml}</section>
<section data-testid="cost-by-model"><h2>Cost by model</h2>${chartOrEmpty(s.byModel.length > 0, () => barChart(costBars(s.byModel, (g) => g.name), { ariaLabel: 'Cost by model' }), 'No usage yet.')}</section>
<section data-testid="team-models"><h2>Spend by team and model</h2>${chartOrEmpty(s.byOrgModel.length > 0, () => barChart(s.byOrgModel.slice(0, 12).map((g) => ({ label: `${g.orgId === '-' ? 'no team' : g.orgId} · ${g.model}`, value: g.costMicros, text: `${humanUsd(g.costMicros)} · ${g.requests} req` })), { ariaLabel: 'Spend by team and model' }), 'No usage yet.')}</section>
<section data-testid="top-users"><h2>Top users by cost</h2>${chartOrEmpty(s.topUsers.length > 0, () => barChart(costBars(s.topUsers, (g) => (g.orgId ? `${g.name} (${g.orgId})` : g.name)), { ariaLabel: 'Top users by cost' }), 'No usage yet.')}</section>
<section data-testid="top-keys"><h2>Top keys by cost</h2>${chartOrEmpty(s.topKeys.length > 0, () => barChart(costBars(s.topKeys, keyLabel), { ariaLabel: 'Top keys by cost' }), 'No usage yet.')}</section>
<section data-testid="circuits"><h2>Open circuits</h2>${circuitList}</section>
<section data-testid="alerts"><h2>Recent alerts and acknowledgements</h2>${alertList}</section>
<section data-testid="savings"><h2>Savings: cache and fallback</h2>${savingsHtml}</section>
<section data-testid="drift"><h2>Billing drift (ledger vs provider)</h2>${driftHtml}</section>
</main>
</body>
</html>
`;
}
