/**
 * The local dashboard page: one self-contained HTML document (inline CSS under a nonce, inline SVG charts, no
 * script) rendered from a {@link SpendSummary}.
 */
import { displayUsd } from '../../core/money';
import { WINDOWS } from '../../core/windows';
import type { BudgetUse, SpendGroup, SpendSummary } from '../../observability/spend-summary';
import { type BarItem, barChart, columnChart, escapeHtml } from './charts';

const CSS = `
:root { color-scheme: light dark; --fg: #1d2330; --muted: #667085; --bg: #f6f7f9; --card: #fff; --line: #e4e7ec;
  --accent: #2f6fde; --warn: #d98a00; --over: #d13b3b; --track: #eef0f4; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8ee; --muted: #98a2b3; --bg: #11141a; --card: #1a1f28; --line: #2a3140; --track: #232a36; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 16px; padding: 16px 24px; border-bottom: 1px solid var(--line); background: var(--card); }
header h1 { font-size: 18px; margin: 0; }
header .period { color: var(--muted); }
nav a { margin-right: 8px; color: var(--accent); text-decoration: none; }
nav a.current { font-weight: 600; text-decoration: underline; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; padding: 16px 24px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 14px; margin: 0 0 8px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; }
.card .value { font-size: 24px; font-weight: 600; }
.card .name { color: var(--muted); }
.chart { width: 100%; height: auto; }
.chart text { font-size: 12px; fill: var(--fg); }
.chart .axis { fill: var(--muted); font-size: 11px; }
.chart .grid { stroke: var(--line); }
.chart .col, .chart .bar.ok { fill: var(--accent); }
.chart .bar.warn { fill: var(--warn); }
.chart .bar.over { fill: var(--over); }
.chart .track { fill: var(--track); }
.empty { color: var(--muted); }
ul.events { list-style: none; margin: 0; padding: 0; }
ul.events li { padding: 6px 0; border-bottom: 1px solid var(--line); }
.sev-critical { color: var(--over); font-weight: 600; }
.sev-warning { color: var(--warn); font-weight: 600; }
time, .muted { color: var(--muted); }
`;

const fmtTokens = (n: number) => (n >= 1_000_000 ? `${(n / 1_000_000).toFixed(1)}M` : n >= 10_000 ? `${Math.round(n / 1000)}k` : String(n));
const pct = (f: number) => `${Math.round(f * 1000) / 10}%`;
const usdAxis = (micros: number) => (micros === 0 ? '$0' : displayUsd(Math.round(micros)));

function costBars(groups: readonly SpendGroup[], label: (g: SpendGroup) => string): BarItem[] {
  return groups.map((g) => ({ label: label(g), value: g.costMicros, text: `${displayUsd(g.costMicros)} · ${g.requests} req` }));
}

function budgetBar(b: BudgetUse): BarItem {
  const tone = b.utilisation >= 1 ? 'over' : b.utilisation >= 0.8 ? 'warn' : 'ok';
  return { label: `${b.scope} (${b.window})`, value: b.utilisation, text: `${pct(b.utilisation)} of ${displayUsd(b.limitMicros)}`, tone };
}

function chartOrEmpty(hasData: boolean, chart: () => string, empty: string): string {
  return hasData ? chart() : `<p class="empty">${escapeHtml(empty)}</p>`;
}

function when(ms: number): string {
  const iso = new Date(ms).toISOString();
  return `<time datetime="${iso}">${iso.slice(0, 16).replace('T', ' ')} UTC</time>`;
}

/** Renders the dashboard page. `nonce` must match the response's Content-Security-Policy. */
export function renderDashboard(summary: SpendSummary, options: { readonly nonce: string }): string {
  const s = summary;
  const period = s.windowKey.split('#')[1] ?? '';
  const t = s.totals;
  const errorRate = t.requests > 0 ? t.failed / t.requests : 0;
  const cards = [
    ['total-cost', 'Spend', displayUsd(t.costMicros)],
    ['total-requests', 'Requests', String(t.requests)],
    ['total-tokens', 'Tokens (in / out)', `${fmtTokens(t.inputTokens)} / ${fmtTokens(t.outputTokens)}`],
    ['error-rate', 'Failed requests', `${t.failed} (${pct(errorRate)})`],
  ]
    .map(([id, name, value]) => `<div class="card" data-testid="${id}"><div class="name">${name}</div><div class="value">${escapeHtml(value!)}</div></div>`)
    .join('');

  const overTime = chartOrEmpty(
    t.requests > 0,
    () =>
      columnChart(
        s.overTime.map((b) => ({ label: b.label, value: b.costMicros, title: `${b.label}: ${displayUsd(b.costMicros)}, ${b.requests} requests` })),
        { ariaLabel: `Spend over the ${s.window}`, formatAxis: usdAxis },
      ),
    'No requests in this window yet.',
  );
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
            .map(
              (a) =>
                `<li>${when(a.at)} <span class="sev-${escapeHtml(a.severity)}">${escapeHtml(a.severity)}</span> <strong>${escapeHtml(a.scope)}</strong> ${escapeHtml(a.summary)}</li>`,
            )
            .join('')}</ul>`;

  const sv = s.savings;
  const savingsHtml = !sv
    ? '<p class="empty">Savings are not available on this gateway.</p>'
    : `<ul class="events"><li>cache hits <strong data-testid="cache-hits">${sv.cacheHits}</strong> of ${sv.cacheHits + sv.cacheMisses} cached lookups` +
      ` (${sv.cacheHits + sv.cacheMisses > 0 ? ((100 * sv.cacheHits) / (sv.cacheHits + sv.cacheMisses)).toFixed(1) : '0.0'} %)</li>` +
      `<li>saved by the cache <strong data-testid="cache-saved">${escapeHtml(displayUsd(sv.savedMicros))}</strong></li>` +
      `<li>served by fallback <strong data-testid="fallbacks">${sv.fallbacks}</strong>, by budget downgrade <strong>${sv.downgrades}</strong>` +
      ` costing ${escapeHtml(displayUsd(sv.fallbackCostMicros))}</li></ul>`;
  const driftRows = s.drift;
  const driftHtml = !driftRows
    ? '<p class="empty">Billing reconciliation is not available on this gateway.</p>'
    : driftRows.length === 0
      ? '<p class="empty">No reconciled day in this window (npm run admin -- reconcile).</p>'
      : `<ul class="events">${driftRows
          .slice(0, 20)
          .map(
            (r) =>
              `<li>${escapeHtml(r.day)} <strong>${escapeHtml(r.provider)}/${escapeHtml(r.model)}</strong> ledger ${escapeHtml(displayUsd(r.ledgerMicros))} · billed ${escapeHtml(displayUsd(r.billedMicros))} · ` +
              `drift <span class="${r.alarm ? 'sev-critical' : 'muted'}">${r.driftMicros < 0 ? '-' : '+'}${escapeHtml(displayUsd(Math.abs(r.driftMicros)))}</span></li>`,
          )
          .join('')}</ul>`;

  const nav = WINDOWS.map((w) => `<a href="/dashboard?window=${w}"${w === s.window ? ' class="current" aria-current="page"' : ''}>${w}</a>`).join('');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tollgate · ${escapeHtml(s.window)} ${escapeHtml(period)}</title>
<link rel="icon" href="data:,">
<style nonce="${escapeHtml(options.nonce)}">${CSS}</style>
</head>
<body>
<header><h1>tollgate</h1><span class="period" data-testid="period">${escapeHtml(s.window)} ${escapeHtml(period)} (UTC)</span><nav>${nav}</nav>
<span class="muted">as of ${when(Date.parse(s.generatedAt))}</span></header>
<main>
<section class="wide" data-testid="totals"><div class="cards">${cards}</div></section>
<section class="wide" data-testid="spend-over-time"><h2>Spend over time</h2>${overTime}</section>
<section data-testid="cost-by-model"><h2>Cost by model</h2>${chartOrEmpty(s.byModel.length > 0, () => barChart(costBars(s.byModel, (g) => g.name), { ariaLabel: 'Cost by model' }), 'No usage yet.')}</section>
<section data-testid="budgets"><h2>Budget utilisation</h2>${chartOrEmpty(s.budgets.length > 0, () => barChart(s.budgets.map(budgetBar), { ariaLabel: 'Budget utilisation', max: 1 }), `No budget limits for this ${s.window}.`)}</section>
<section data-testid="top-users"><h2>Top users by cost</h2>${chartOrEmpty(s.topUsers.length > 0, () => barChart(costBars(s.topUsers, (g) => g.name), { ariaLabel: 'Top users by cost' }), 'No usage yet.')}</section>
<section data-testid="top-keys"><h2>Top keys by cost</h2>${chartOrEmpty(s.topKeys.length > 0, () => barChart(costBars(s.topKeys, (g) => `${g.name} (${g.userId ?? ''})`), { ariaLabel: 'Top keys by cost' }), 'No usage yet.')}</section>
<section data-testid="circuits"><h2>Open circuits</h2>${circuitList}</section>
<section data-testid="alerts"><h2>Recent alerts</h2>${alertList}</section>
<section data-testid="savings"><h2>Savings: cache and fallback</h2>${savingsHtml}</section>
<section data-testid="drift"><h2>Billing drift (ledger vs provider)</h2>${driftHtml}</section>
</main>
</body>
</html>
`;
}

