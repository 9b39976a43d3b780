/**
 * Inline SVG charts for the local dashboard: drawn on the server, so the page needs no script and no CDN.
 * Every mark carries a `<title>` (the browser's tooltip) with its exact figure.
 */

/** Escapes text for HTML and SVG content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

export interface ColumnPoint {
  readonly label: string;
  readonly value: number;
  /** The tooltip, e.g. `14h: $0.42, 12 requests`. */
  readonly title: string;
}

const W = 720;
const round = (n: number) => Math.round(n * 10) / 10;

/**
 * The width of a chart spanning the whole page: twice a half-width one's, so that both draw their text at the
 * same size when the page is wide (CSS caps each at its own viewBox width, never scaling text up).
 */
export const WIDE = 2 * W;

/** A column chart (spend over time): one column per point, every `labelEvery`-th label on the axis. */
export function columnChart(
  points: readonly ColumnPoint[],
  options: { readonly ariaLabel: string; readonly formatAxis: (v: number) => string; readonly wide?: boolean },
): string {
  const W = options.wide ? WIDE : 720;
  const h = 200;
  const top = 12;
  const bottom = 24;
  const left = 84;
  const plotH = h - top - bottom;
  const max = Math.max(0, ...points.map((p) => p.value));
  const step = points.length > 0 ? (W - left - 8) / points.length : 0;
  const labelEvery = Math.max(1, Math.ceil(points.length / 12));
  const cols = points
    .map((p, i) => {
      const bh = max > 0 ? (p.value / max) * plotH : 0;
      const x = left + i * step;
      const label = i % labelEvery === 0 ? `<text class="axis" x="${round(x + step / 2)}" y="${h - 6}" text-anchor="middle">${escapeHtml(p.label)}</text>` : '';
      return (
        `<rect class="col" x="${round(x + step * 0.12)}" y="${round(top + plotH - bh)}" width="${round(step * 0.76)}" height="${round(bh)}">` +
        `<title>${escapeHtml(p.title)}</title></rect>${label}`
      );
    })
    .join('');
  const grid = [0, 0.5, 1]
    .map((f) => {
      const y = round(top + plotH - f * plotH);
      return `<line class="grid" x1="${left}" x2="${W - 8}" y1="${y}" y2="${y}"/><text class="axis" x="${left - 6}" y="${y + 4}" text-anchor="end">${escapeHtml(options.formatAxis(max * f))}</text>`;
    })
    .join('');
  return `<svg class="chart${options.wide ? ' wide' : ''}" viewBox="0 0 ${W} ${h}" role="img" aria-label="${escapeHtml(options.ariaLabel)}">${grid}${cols}</svg>`;
}

export interface BarItem {
  readonly label: string;
  readonly value: number;
  /** The figure printed at the end of the bar. */
  readonly text: string;
  /** Extra CSS class for the bar, e.g. a warning level. */
  readonly tone?: 'ok' | 'warn' | 'over' | 'muted';
}

/**
 * Horizontal bars (cost by model, top users, budget utilisation). With `max`, bars are drawn against that
 * scale (1 for utilisation), otherwise against the largest value.
 */
export function barChart(items: readonly BarItem[], options: { readonly ariaLabel: string; readonly max?: number; readonly wide?: boolean }): string {
  const W = options.wide ? WIDE : 720;
  const row = 26;
  const labelW = 280;
  const textW = options.wide ? 420 : 190;
  const barW = W - labelW - textW;
  const h = Math.max(row, items.length * row) + 4;
  const max = options.max ?? Math.max(0, ...items.map((i) => i.value));
  const rows = items
    .map((item, i) => {
      const y = i * row + 4;
      const width = max > 0 ? Math.min(1, item.value / max) * barW : 0;
      const label = item.label.length > 40 ? `${item.label.slice(0, 39)}…` : item.label;
      // The figure stays inside the chart (about 6.7 units a character at 12 px); the whole text is its tooltip.
      const fit = Math.floor((textW - 8) / 6.7);
      const figure = item.text.length > fit ? `${item.text.slice(0, fit - 1)}…` : item.text;
      return (
        `<g class="bar-row"><text class="label" x="${labelW - 8}" y="${y + 15}" text-anchor="end">${escapeHtml(label)}<title>${escapeHtml(item.label)}</title></text>` +
        `<rect class="track${item.tone === 'over' ? ' over' : ''}" x="${labelW}" y="${y + 2}" width="${barW}" height="${row - 8}"/>` +
        `<rect class="bar ${item.tone ?? 'ok'}" x="${labelW}" y="${y + 2}" width="${round(Math.max(width, item.value > 0 ? 2 : 0))}" height="${row - 8}"><title>${escapeHtml(`${item.label}: ${item.text}`)}</title></rect>` +
        `<text class="figure" x="${labelW + barW + 8}" y="${y + 15}">${escapeHtml(figure)}${figure === item.text ? '' : `<title>${escapeHtml(item.text)}</title>`}</text></g>`
      );
    })
    .join('');
  return `<svg class="chart${options.wide ? ' wide' : ''}" viewBox="0 0 ${W} ${h}" role="img" aria-label="${escapeHtml(options.ariaLabel)}">${rows}</svg>`;
}
