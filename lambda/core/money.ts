/**
 * Money in tollgate is an integer number of micro-USD (1 USD = 1,000,000 micro-USD), end to end: in memory,
 * on the wire between components and in DynamoDB. Floats appear only when a human types a dollar amount
 * (parsed here, once) and when a figure is printed.
 */
export type MicroUsd = number;

export const MICROS_PER_USD = 1_000_000;

/**
 * Parses a dollar amount such as `"12.50"`, `12.5` or `"0.000001"` into micro-USD without float error.
 * Throws on negative, non-finite or over-precise values (more than six decimals).
 */
export function usdToMicros(value: string | number): MicroUsd {
  const text = typeof value === 'number' ? numberToPlainString(value) : value.trim();
  const match = /^(\d+)(?:\.(\d{0,6})(0*))?$/.exec(text);
  if (!match) throw new RangeError(`"${text}" is not a non-negative dollar amount with at most 6 decimals`);
  const whole = Number(match[1]);
  const frac = Number((match[2] ?? '').padEnd(6, '0'));
  const micros = whole * MICROS_PER_USD + frac;
  if (!Number.isSafeInteger(micros)) throw new RangeError(`"${text}" is too large`);
  return micros;
}

function numberToPlainString(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  // toFixed(7) then trim: 0.1+0.2 style noise beyond six decimals is dropped, not rejected.
  const fixed = value.toFixed(7);
  return fixed.slice(0, -1).replace(/\.?0+$/, '') || '0';
}

/** Formats micro-USD as a plain decimal string with six decimals, e.g. `1234` → `"0.001234"`. */
export function formatUsd(micros: MicroUsd): string {
  const sign = micros < 0 ? '-' : '';
  const abs = Math.abs(micros);
  const whole = Math.floor(abs / MICROS_PER_USD);
  const frac = String(abs % MICROS_PER_USD).padStart(6, '0');
  return `${sign}${whole}.${frac}`;
}

/** Formats micro-USD for people: `$12.34`, or more decimals for sub-cent amounts. */
export function displayUsd(micros: MicroUsd): string {
  const text = formatUsd(micros);
  const trimmed = text.replace(/(\.\d\d\d*?)0+$/, '$1');
  return `$${trimmed}`;
}

/**
 * A price in micro-USD per million tokens (the unit price tables use: `$2.50 / MTok` → 2_500_000), so that
 * every price in the public data is an exact integer.
 */
export type MicroUsdPerMTok = number;

/**
 * tokens × price, rounded up to a whole micro-USD. BigInt keeps the product exact: 10M tokens at
 * $1,000/MTok would overflow 2^53 as a plain number.
 */
export function costOfTokens(tokens: number, price: MicroUsdPerMTok): MicroUsd {
  if (tokens <= 0 || price <= 0) return 0;
  const product = BigInt(Math.ceil(tokens)) * BigInt(Math.round(price));
  return Number((product + 999_999n) / 1_000_000n);
}

/**
 * Formats micro-USD for people, one rule everywhere: whole cents with thousands separators from one cent up
 * (`$1,234.57`, `$0.15`, half-up), and the exact amount under a cent (`$0.000004`, `$0.0012`); zero is `$0.00`.
 * For display only: machine output (`--json`) carries exact micro-USD or {@link formatUsd} strings.
 */
export function humanUsd(micros: MicroUsd): string {
  const sign = micros < 0 ? '-' : '';
  const abs = Math.abs(micros);
  if (abs === 0) return '$0.00';
  if (abs < 10_000) return `${sign}$${formatUsd(abs).replace(/0+$/, '')}`;
  const cents = Math.floor((abs + 5_000) / 10_000);
  const whole = String(Math.floor(cents / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `${sign}$${whole}.${String(cents % 100).padStart(2, '0')}`;
}
