import { costOfTokens, displayUsd, formatUsd, usdToMicros } from '../../lambda/core/money';

describe('money in integer micro-USD', () => {
  it('when a dollar amount is parsed, it becomes exact micro-USD without float error', () => {
    expect(usdToMicros('12.50')).toBe(12_500_000);
    expect(usdToMicros('0.000001')).toBe(1);
    expect(usdToMicros(0.1 + 0.2)).toBe(300_000);
    expect(usdToMicros(5)).toBe(5_000_000);
  });

  it('when an amount is negative, over-precise or not a number, it is refused', () => {
    expect(() => usdToMicros('-1')).toThrow(RangeError);
    expect(() => usdToMicros('0.0000001')).toThrow(/at most 6 decimals/);
    expect(() => usdToMicros('abc')).toThrow(RangeError);
  });

  it('when micro-USD are formatted, the string has six decimals and displays trim them', () => {
    expect(formatUsd(1234)).toBe('0.001234');
    expect(formatUsd(12_500_000)).toBe('12.500000');
    expect(displayUsd(12_500_000)).toBe('$12.50');
    expect(displayUsd(1234)).toBe('$0.001234');
  });

  it('when tokens are priced, the product is exact and rounded up to a whole micro-USD', () => {
    // 3 tokens at $2.50/MTok = 7.5 micro-USD → 8
    expect(costOfTokens(3, 2_500_000)).toBe(8);
    // 10M tokens at $1,000/MTok would overflow 2^53 as a float product
    expect(costOfTokens(10_000_000, 1_000_000_000)).toBe(10_000_000_000);
    expect(costOfTokens(0, 2_500_000)).toBe(0);
  });

  it('when a million one-token requests are summed as integers, the total is exact', () => {
    let total = 0;
    for (let i = 0; i < 1_000_000; i++) total += costOfTokens(1, 100_000); // $0.10/MTok → 0.1 µ$ → 1 each
    expect(total).toBe(1_000_000);
  });
});
