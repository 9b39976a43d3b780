/**
 * The instant tests that write to DynamoDB Local pretend it is. DynamoDB Local runs a TTL deletion job, and every
 * item the ledger writes carries a TTL derived from the gateway's clock (holds: expiry + 1 day, hour counters:
 * 2 days, token buckets: 1 hour, loop counts, usage records, alerts…). A fixed date in the past (as tests once
 * used) lets that job delete holds, counters and loop counts in the middle of a test, so results depend on the
 * day the suite runs and on when the job happens to wake up. A date far in the future means no TTL can expire
 * during a run, and a fixed one keeps window keys and expected strings stable.
 *
 * 10:30 UTC on the 23rd: mid-hour, mid-day and mid-month, so a test that advances the clock by minutes never
 * straddles a window boundary by accident (tests that cross one do so on purpose, by whole hours or days).
 */
export const TEST_NOW = Date.parse('2099-11-23T10:30:00.000Z');

/** The UTC day of {@link TEST_NOW} plus `days`, as `YYYY-MM-DD` (for usage queries and expected keys). */
export function testDay(days = 0): string {
  return new Date(TEST_NOW + days * 86_400_000).toISOString().slice(0, 10);
}
