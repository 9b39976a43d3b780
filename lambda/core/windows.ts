/**
 * Budget windows. A window is identified by its key (`hour#2026-11-23T02`, `day#2026-11-23`, `month#2026-11`,
 * all UTC), so a new window starts by itself when the key changes: there is no reset job.
 */
export const WINDOWS = ['hour', 'day', 'month'] as const;
export type Window = (typeof WINDOWS)[number];

export function isWindow(value: string): value is Window {
  return (WINDOWS as readonly string[]).includes(value);
}

/** The key of the window of kind `window` that contains `atMs`. */
export function windowKey(window: Window, atMs: number): string {
  const iso = new Date(atMs).toISOString(); // 2026-11-23T02:15:00.000Z
  switch (window) {
    case 'hour':
      return `hour#${iso.slice(0, 13)}`;
    case 'day':
      return `day#${iso.slice(0, 10)}`;
    case 'month':
      return `month#${iso.slice(0, 7)}`;
  }
}

/** Start (inclusive) and end (exclusive) of the window containing `atMs`, in epoch ms. */
export function windowBounds(window: Window, atMs: number): { start: number; end: number } {
  const d = new Date(atMs);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth();
  switch (window) {
    case 'hour': {
      const start = Date.UTC(y, m, d.getUTCDate(), d.getUTCHours());
      return { start, end: start + 3_600_000 };
    }
    case 'day': {
      const start = Date.UTC(y, m, d.getUTCDate());
      return { start, end: start + 86_400_000 };
    }
    case 'month':
      return { start: Date.UTC(y, m, 1), end: Date.UTC(y, m + 1, 1) };
  }
}

/** How long a counter item of this window is kept after the window ends (then DynamoDB TTL removes it). */
export const COUNTER_RETENTION_MS: Readonly<Record<Window, number>> = {
  hour: 2 * 86_400_000,
  day: 40 * 86_400_000,
  month: 400 * 86_400_000,
};
