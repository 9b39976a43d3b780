/**
 * How the admin CLI prints for people: tables, money ({@link humanUsd}: `$1,234.57`, exact under a cent) and
 * times (local `YYYY-MM-DD HH:MM:SS`, or relative such as `3 min ago`). `--json` output never goes through
 * here: it keeps exact micro-USD (or exact decimal strings) and ISO-8601 UTC times.
 */
import { humanUsd } from '../core/money';

export { humanUsd };

/** Rows as an aligned text table (columns from the first row). */
export function table(rows: readonly Record<string, string | number>[], indent = ''): string {
  if (rows.length === 0) return `${indent}(none)`;
  const cols = Object.keys(rows[0]!);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '').length)));
  const line = (cells: readonly string[]) => `${indent}${cells.map((c, i) => c.padEnd(width[i]!)).join('  ')}`.trimEnd();
  return [line(cols), line(width.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => String(r[c] ?? ''))))].join('\n');
}

const pad = (n: number) => String(n).padStart(2, '0');

/** A time in the machine's local zone: `2026-12-06 21:03:12` (empty for none). */
export function localTime(at: number | string | undefined): string {
  if (at === undefined || at === '') return '';
  const d = new Date(at);
  if (Number.isNaN(d.getTime())) return String(at);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** How long ago (or how far ahead) a time is: `just now`, `42 s ago`, `3 min ago`, `5 h ago`, `in 2 days`. */
export function relativeTime(at: number | string | undefined, now: number): string {
  if (at === undefined || at === '') return '';
  const ms = typeof at === 'number' ? at : Date.parse(at);
  if (Number.isNaN(ms)) return String(at);
  const diff = now - ms;
  const abs = Math.abs(diff);
  const text =
    abs < 5_000 ? '' : abs < 60_000 ? `${Math.round(abs / 1000)} s` : abs < 3_600_000 ? `${Math.round(abs / 60_000)} min` : abs < 172_800_000 ? `${Math.round(abs / 3_600_000)} h` : `${Math.round(abs / 86_400_000)} days`;
  if (!text) return 'just now';
  return diff >= 0 ? `${text} ago` : `in ${text}`;
}

/** `2026-12-06 21:03:12 (3 min ago)`. */
export function whenText(at: number | string | undefined, now: number): string {
  if (at === undefined || at === '') return '';
  return `${localTime(at)} (${relativeTime(at, now)})`;
}

/**
 * A time an operator types: ISO-8601 (`2026-12-06`, `2026-12-06T21:00`), or relative to now: `30m`, `2h`,
 * `7d`, `1w` (that long ago), `today`, `yesterday` (local midnight).
 */
export function parseSince(text: string, now: number): number {
  const t = text.trim().toLowerCase();
  const rel = /^(\d+)\s*(s|m|min|h|d|w)$/.exec(t);
  if (rel) {
    const unit = { s: 1_000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[rel[2] as 's'];
    return now - Number(rel[1]) * unit;
  }
  if (t === 'today' || t === 'yesterday') {
    const d = new Date(now);
    d.setHours(0, 0, 0, 0);
    return t === 'today' ? d.getTime() : d.getTime() - 86_400_000;
  }
  // A bare date or local date-time is read in the local zone, as it is printed.
  const local = /^(\d{4})-(\d{2})-(\d{2})(?:[ t](\d{2}):(\d{2})(?::(\d{2}))?)?$/.exec(t);
  if (local) {
    const [, y, mo, d, h, mi, s] = local;
    return new Date(Number(y), Number(mo) - 1, Number(d), Number(h ?? 0), Number(mi ?? 0), Number(s ?? 0)).getTime();
  }
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new RangeError(`--since must be a time such as 2h, 7d, yesterday or 2026-12-06 09:00, got "${text}"`);
  return ms;
}
