import { windowBounds, windowKey } from '../../lambda/core/windows';

describe('budget windows', () => {
  const at = Date.UTC(2026, 10, 23, 2, 15, 30);

  it('when a time is keyed, each window names its UTC period', () => {
    expect(windowKey('hour', at)).toBe('hour#2026-11-23T02');
    expect(windowKey('day', at)).toBe('day#2026-11-23');
    expect(windowKey('month', at)).toBe('month#2026-11');
  });

  it('when the period rolls over, the key changes by itself (no reset job)', () => {
    const nextMonth = Date.UTC(2026, 11, 1, 0, 0, 0);
    expect(windowKey('month', nextMonth - 1)).toBe('month#2026-11');
    expect(windowKey('month', nextMonth)).toBe('month#2026-12');
  });

  it('when bounds are asked for, they cover exactly the period', () => {
    expect(windowBounds('hour', at)).toEqual({ start: Date.UTC(2026, 10, 23, 2), end: Date.UTC(2026, 10, 23, 3) });
    expect(windowBounds('month', at)).toEqual({ start: Date.UTC(2026, 10, 1), end: Date.UTC(2026, 11, 1) });
  });
});
