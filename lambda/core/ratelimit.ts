/**
 * Rate limits as GCRA (the generic cell rate algorithm, a token bucket kept as one number). A bucket with
 * capacity L per minute stores only its theoretical arrival time `tat` (µs epoch):
 *
 *   emission interval  T     = 60_000_000 / L µs per unit
 *   burst tolerance    burst = 60_000_000 µs (one full minute of capacity)
 *   a charge of n units increments tat by inc = n·T and is admitted iff  max(tat, now) + inc − now ≤ burst
 *
 *   now ──────────────┬──────────── tat ───────────────┬──▶ time
 *                     └── used capacity (tat − now) ───┘
 *                     └────────────── burst ──────────────────────┘
 *
 * DynamoDB expressions cannot take max(), so the store writes one of two updates:
 *   advance (the usual one):     SET tat = if_not_exists(tat, now) + inc
 *                                IF attribute_not_exists(tat) OR (tat >= now − lag AND tat <= now + burst − inc)
 *   reset (idle longer than lag): SET tat = now + inc          IF attribute_not_exists(tat) OR tat < now − lag
 * "advance" holds whether the bucket is busy (tat > now) or went idle less than `lag` ago, so concurrent
 * requests of a busy key never fail a condition on a wrong guess (which would cancel and re-send their whole
 * reserve transaction). Its price: a bucket idle for d ≤ lag keeps d µs of old debt forgiven, so a burst right
 * after such a pause can take up to ⌊lag / T⌋ units more than L (at most L/60 with lag = 1 s); the sustained
 * rate stays L per minute. "reset" is chosen only when this instance saw the bucket idle for over `lag`; a wrong
 * choice there (another instance wrote meanwhile) fails its condition and is retried once the other way, which
 * can only happen to a key that was quiet. Everything here is pure integer math on µs.
 */

/** One minute in µs: a bucket refills completely in this time, and may hold at most this much debt. */
export const GCRA_BURST_US = 60_000_000;

/** How far a bucket's tat may lag behind now and still be advanced from (see the module comment). */
export const GCRA_LAG_US = 1_000_000;

/** Which conditional write to try. */
export type GcraBranch = 'reset' | 'advance';

/**
 * The tat increment, in µs, for charging `amount` units to a bucket of `limitPerMinute`: ⌊amount·T⌋. Rounding
 * down guarantees that L charges of one unit fit in a fresh bucket; a charge of L+1 units still never fits.
 * The price of integer µs: a charge is rounded by less than 1 µs, so a bucket drained by many tiny charges
 * admits at most L·T/⌊T⌋ units a minute (under 0.1% more than L while L ≤ 60,000/min; token charges are
 * large, so their error is negligible). Negative amounts (a refund) give a negative increment.
 */
export function gcraIncrementUs(amount: number, limitPerMinute: number): number {
  assertLimit(limitPerMinute);
  const exact = (amount * GCRA_BURST_US) / limitPerMinute;
  return amount >= 0 ? Math.floor(exact) : -Math.floor(-exact);
}

/** Whether a charge of `amount` units can ever pass a bucket of `limitPerMinute` (it cannot if larger). */
export function gcraCanEverAdmit(amount: number, limitPerMinute: number): boolean {
  assertLimit(limitPerMinute);
  return amount <= limitPerMinute;
}

/**
 * The write to try, from the last tat we know of: "reset" only when we know the bucket has been idle for more
 * than {@link GCRA_LAG_US}; otherwise (including when we know nothing) "advance".
 */
export function gcraBranch(knownTatUs: number | undefined, nowUs: number): GcraBranch {
  return knownTatUs !== undefined && knownTatUs < gcraFloorUs(nowUs) ? 'reset' : 'advance';
}

/** The oldest tat "advance" may add to: now − lag. */
export function gcraFloorUs(nowUs: number): number {
  return nowUs - GCRA_LAG_US;
}

/** The branch whose condition the stored tat (undefined: no item) satisfies. */
export function gcraBranchFor(storedTatUs: number | undefined, nowUs: number): GcraBranch {
  return storedTatUs !== undefined && storedTatUs < gcraFloorUs(nowUs) ? 'reset' : 'advance';
}

/** Whether a bucket whose stored tat is `oldTatUs` (undefined: no item) admits an increment of `incUs` now. */
export function gcraAdmits(oldTatUs: number | undefined, nowUs: number, incUs: number): boolean {
  return gcraTatAfter(oldTatUs, nowUs, incUs) - nowUs <= GCRA_BURST_US;
}

/** The tat after admitting `incUs`: max(tat, now) + inc. */
export function gcraTatAfter(oldTatUs: number | undefined, nowUs: number, incUs: number): number {
  return Math.max(oldTatUs ?? nowUs, nowUs) + incUs;
}

/** The busy branch's condition bound: the largest old tat that still admits `incUs` (now + burst − inc). */
export function gcraBusyCeilingUs(nowUs: number, incUs: number): number {
  return nowUs + GCRA_BURST_US - incUs;
}

/** Whole units still available after the bucket reached `tatUs`: ⌊(now + burst − tat) / T⌋, within [0, L]. */
export function gcraRemaining(tatUs: number | undefined, nowUs: number, limitPerMinute: number): number {
  assertLimit(limitPerMinute);
  const headroomUs = nowUs + GCRA_BURST_US - Math.max(tatUs ?? nowUs, nowUs);
  const units = Math.floor((headroomUs * limitPerMinute) / GCRA_BURST_US);
  return Math.min(limitPerMinute, Math.max(0, units));
}

/** Milliseconds until the bucket is full again (tat ≤ now), rounded up; 0 when it already is. */
export function gcraResetMs(tatUs: number | undefined, nowUs: number): number {
  if (tatUs === undefined || tatUs <= nowUs) return 0;
  return Math.ceil((tatUs - nowUs) / 1000);
}

/** Milliseconds until a charge of `incUs` would be admitted by a bucket at `oldTatUs`, rounded up; 0 if now. */
export function gcraRetryAfterMs(oldTatUs: number | undefined, nowUs: number, incUs: number): number {
  const excessUs = gcraTatAfter(oldTatUs, nowUs, incUs) - nowUs - GCRA_BURST_US;
  return excessUs <= 0 ? 0 : Math.ceil(excessUs / 1000);
}

/**
 * Formats a duration as OpenAI's `x-ratelimit-reset-*` headers do: `"250ms"`, `"1s"`, `"6m0s"`, `"1h2m3s"`.
 * Sub-second remainders of durations over a second are rounded up to the next whole second.
 */
export function formatResetDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`;
  const total = Math.ceil(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

function assertLimit(limitPerMinute: number): void {
  if (!Number.isInteger(limitPerMinute) || limitPerMinute <= 0) {
    throw new RangeError(`a rate limit must be a positive whole number per minute, got ${limitPerMinute}`);
  }
}
