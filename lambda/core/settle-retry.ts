/**
 * Bounded retries of a settle that failed because the store could not be reached. A settle is idempotent (a
 * repeat finds its hold gone and its record written, and changes nothing), so retrying is always safe. After
 * the last attempt the hold is left for the sweeper, which charges its full reservation.
 */
import { StoreUnavailableError } from './errors';

/** How hard settle tries before leaving the hold to the sweeper. */
export interface SettleRetryOptions {
  /**
   * Attempts in all, the first included.
   * @default 4
   */
  readonly attempts?: number;
  /**
   * Wait before the second attempt; each further wait is 4 × longer, with ±50 % jitter.
   * @default 250 (so 250 ms, 1 s, 4 s: about 5 s in all)
   */
  readonly baseDelayMs?: number;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
}

export const DEFAULT_SETTLE_ATTEMPTS = 4;
export const DEFAULT_SETTLE_BASE_DELAY_MS = 250;

/**
 * Runs `attempt` until it succeeds, it fails with anything but {@link StoreUnavailableError}, or the attempts
 * are used up (then the last error is thrown). `onRetry` hears of each failure that will be retried.
 */
export async function settleWithRetries<T>(
  attempt: () => Promise<T>,
  options: SettleRetryOptions & { readonly onRetry?: (err: StoreUnavailableError, attemptNo: number) => void } = {},
): Promise<T> {
  const attempts = Math.max(1, options.attempts ?? DEFAULT_SETTLE_ATTEMPTS);
  const base = Math.max(0, options.baseDelayMs ?? DEFAULT_SETTLE_BASE_DELAY_MS);
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof StoreUnavailableError) || n >= attempts) throw err;
      options.onRetry?.(err, n);
      await sleep(base * 4 ** (n - 1) * (0.5 + Math.random()));
    }
  }
}
