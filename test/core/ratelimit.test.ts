import {
  formatResetDuration,
  gcraAdmits,
  gcraBranch,
  gcraBranchFor,
  gcraFloorUs,
  GCRA_LAG_US,
  gcraBusyCeilingUs,
  gcraCanEverAdmit,
  gcraIncrementUs,
  gcraRemaining,
  gcraResetMs,
  gcraRetryAfterMs,
  gcraTatAfter,
  GCRA_BURST_US,
} from '../../lambda/core/ratelimit';

const NOW = 1_800_000_000_000_000; // µs epoch

/** Simulates a bucket the way the store does: admit, then move tat. */
function drain(limit: number, amount: number, count: number, nowUs = NOW): { admitted: number; tat: number | undefined } {
  let tat: number | undefined;
  let admitted = 0;
  const inc = gcraIncrementUs(amount, limit);
  for (let i = 0; i < count; i++) {
    if (gcraAdmits(tat, nowUs, inc)) {
      tat = gcraTatAfter(tat, nowUs, inc);
      admitted++;
    }
  }
  return { admitted, tat };
}

describe('GCRA rate math', () => {
  it.each([1, 3, 7, 60, 1000, 7_919, 60_000])('when %i single units arrive at once into a fresh bucket of that capacity, it admits exactly all of them', (limit) => {
    expect(drain(limit, 1, limit + 5).admitted).toBe(limit);
  });

  it('when a huge capacity is drained one unit at a time, rounding to whole µs over-admits by at most 0.1%', () => {
    // T = 666.67 µs is rounded down to 666 µs per unit: the documented price of integer µs.
    const { admitted } = drain(90_000, 1, 100_000);
    expect(admitted).toBeGreaterThanOrEqual(90_000);
    expect(admitted).toBeLessThanOrEqual(90_090);
  });

  it('when a charge is exactly the capacity, it fits a fresh bucket once and never twice', () => {
    expect(drain(40_000, 40_000, 3).admitted).toBe(1);
  });

  it('when a charge is larger than the capacity, it can never be admitted', () => {
    expect(gcraCanEverAdmit(40_001, 40_000)).toBe(false);
    expect(gcraCanEverAdmit(40_000, 40_000)).toBe(true);
    expect(gcraAdmits(undefined, NOW, gcraIncrementUs(40_001, 40_000))).toBe(false);
  });

  it('when a refund is computed, it is the mirror of the charge', () => {
    expect(gcraIncrementUs(-7, 60)).toBe(-gcraIncrementUs(7, 60));
    expect(gcraIncrementUs(1, 60)).toBe(1_000_000);
  });

  it('when the bucket drains, capacity returns at one unit per emission interval', () => {
    const limit = 60; // T = 1 s
    const { tat } = drain(limit, 1, 60);
    expect(gcraRemaining(tat, NOW, limit)).toBe(0);
    expect(gcraAdmits(tat, NOW, gcraIncrementUs(1, limit))).toBe(false);
    expect(gcraRetryAfterMs(tat, NOW, gcraIncrementUs(1, limit))).toBe(1_000);
    const later = NOW + 2_500_000;
    expect(gcraRemaining(tat, later, limit)).toBe(2);
    expect(gcraAdmits(tat, later, gcraIncrementUs(2, limit))).toBe(true);
    expect(gcraAdmits(tat, later, gcraIncrementUs(3, limit))).toBe(false);
    expect(gcraResetMs(tat, NOW)).toBe(60_000);
    expect(gcraResetMs(tat, NOW + 61_000_000)).toBe(0);
  });

  it('when no tat is known or it lags now by at most the lag, it advances; only a known longer idle resets', () => {
    expect(gcraBranch(undefined, NOW)).toBe('advance');
    expect(gcraBranch(NOW, NOW)).toBe('advance');
    expect(gcraBranch(NOW + 1, NOW)).toBe('advance');
    expect(gcraBranch(NOW - GCRA_LAG_US, NOW)).toBe('advance');
    expect(gcraBranch(NOW - GCRA_LAG_US - 1, NOW)).toBe('reset');
    expect(gcraBranchFor(undefined, NOW)).toBe('advance');
    expect(gcraBranchFor(gcraFloorUs(NOW) - 1, NOW)).toBe('reset');
  });

  it('when the busy condition bound is used, it admits exactly the old tats that the admission rule admits', () => {
    const inc = gcraIncrementUs(5, 60);
    const ceiling = gcraBusyCeilingUs(NOW, inc);
    expect(ceiling).toBe(NOW + GCRA_BURST_US - inc);
    expect(gcraAdmits(ceiling, NOW, inc)).toBe(true);
    expect(gcraAdmits(ceiling + 1, NOW, inc)).toBe(false);
  });

  it('when a tat lies in the past, admission and the new tat start from now', () => {
    expect(gcraTatAfter(NOW - 10_000_000, NOW, 5)).toBe(NOW + 5);
    expect(gcraTatAfter(NOW + 10, NOW, 5)).toBe(NOW + 15);
  });

  it('when a limit is not a positive whole number, it throws', () => {
    expect(() => gcraIncrementUs(1, 0)).toThrow(RangeError);
    expect(() => gcraRemaining(undefined, NOW, 1.5)).toThrow(/positive whole number/);
  });

  it.each([
    [0, '0ms'],
    [250, '250ms'],
    [1000, '1s'],
    [1001, '2s'],
    [360_000, '6m0s'],
    [3_723_000, '1h2m3s'],
  ])('when %i ms is formatted, it reads %s', (ms, text) => {
    expect(formatResetDuration(ms)).toBe(text);
  });
});
