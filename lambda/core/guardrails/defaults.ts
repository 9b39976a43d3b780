/**
 * Safe defaults: every key and every user is limited unless an operator says otherwise. The defaults live
 * here, are filled from the environment once (lambda/config.ts, fed by the deployment config in AWS), and
 * apply to any scope window that has no limit of its own. An operator removes a default only explicitly:
 * `budgets set user:alice day none` stores the {@link UNLIMITED} marker, which is distinct from "not set".
 *
 *   key:<id>   $100 a month      (not service principals `key:svc:*`: they act for many users)
 *   user:<id>  $10 a day         (not `user:<id>#byok`: that is the caller's own money)
 *   platform   $1,000 a day      (also the ledger kill switch's limit, see kill-switch.ts)
 *   per key    60 requests and 5,000,000 tokens a minute (0 on the key record = explicitly unlimited): a coding
 *              agent at full context (200k tokens a request, one every 5 s) stays far below it; the dollar
 *              budgets and the loop and velocity guards are what protect spend
 */
import { type MicroUsd, usdToMicros } from '../money';
import { type BudgetLimits, type ScopeId, type StoredLimits, UNLIMITED } from '../types';
import { isWindow, WINDOWS } from '../windows';

export interface DefaultLimits {
  /** Budgets of a key without its own. @default { month: $100 } */
  readonly key: BudgetLimits;
  /** Budgets of a user without their own. @default { day: $10 } */
  readonly user: BudgetLimits;
  /** Platform-wide budgets without an explicit one. @default { day: $1,000 } */
  readonly platform: BudgetLimits;
  /** Requests per minute of a key without its own; undefined = none. @default 60 */
  readonly keyRpm?: number;
  /** Tokens per minute of a key without its own; undefined = none. @default 5,000,000 */
  readonly keyTpm?: number;
}

export const DEFAULT_LIMITS: DefaultLimits = {
  key: { month: 100_000_000 },
  user: { day: 10_000_000 },
  platform: { day: 1_000_000_000 },
  keyRpm: 60,
  keyTpm: 5_000_000,
};

/** No defaults at all (unit tests of other parts, an operator who turned every default off). */
export const NO_DEFAULT_LIMITS: DefaultLimits = { key: {}, user: {}, platform: {} };

/** The defaults that apply to a scope ({} for org scopes, service keys and BYOK scopes). */
export function defaultsFor(scope: ScopeId, defaults: DefaultLimits): BudgetLimits {
  if (scope === 'platform') return defaults.platform;
  if (scope.startsWith('key:')) return scope.startsWith('key:svc:') ? {} : defaults.key;
  if (scope.startsWith('user:')) return scope.endsWith('#byok') ? {} : defaults.user;
  return {};
}

/** The limits a scope is held to: its own where set, `none` where explicitly unlimited, else the default. */
export function effectiveLimits(scope: ScopeId, stored: StoredLimits | undefined, defaults: DefaultLimits): BudgetLimits {
  const base = defaultsFor(scope, defaults);
  const out: Partial<Record<(typeof WINDOWS)[number], MicroUsd>> = {};
  for (const w of WINDOWS) {
    const own = stored?.[w];
    if (own === UNLIMITED) continue;
    const limit = own ?? base[w];
    if (limit !== undefined) out[w] = limit;
  }
  return out;
}

/** Where each window's limit comes from, for `budgets show` and GET /admin/budgets. */
export type LimitSource = 'set' | 'default' | 'none';

export function describeLimits(
  scope: ScopeId,
  stored: StoredLimits | undefined,
  defaults: DefaultLimits,
): Record<(typeof WINDOWS)[number], { readonly limit?: MicroUsd; readonly source: LimitSource }> {
  const base = defaultsFor(scope, defaults);
  const row = (w: (typeof WINDOWS)[number]) => {
    const own = stored?.[w];
    if (own === UNLIMITED) return { source: 'none' as const };
    if (own !== undefined) return { limit: own, source: 'set' as const };
    const d = base[w];
    return d === undefined ? { source: 'none' as const } : { limit: d, source: 'default' as const };
  };
  return { hour: row('hour'), day: row('day'), month: row('month') };
}

/** A key's effective per-minute limits: its own (0 = explicitly unlimited), else the default. */
export function keyRateLimits(
  key: { readonly rpm?: number; readonly tpm?: number },
  defaults: DefaultLimits,
  options: { readonly service: boolean },
): { readonly rpm?: number; readonly tpm?: number } {
  const pick = (own: number | undefined, d: number | undefined) => (own === undefined ? (options.service ? undefined : d) : own > 0 ? own : undefined);
  const rpm = pick(key.rpm, defaults.keyRpm);
  const tpm = pick(key.tpm, defaults.keyTpm);
  return { ...(rpm ? { rpm } : {}), ...(tpm ? { tpm } : {}) };
}

/**
 * Parses `month=100`, `day=10,hour=2` or `none` (USD) into budget limits; throws a RangeError naming the
 * part that is wrong. Used for the env settings and the deployment config.
 */
export function parseBudgetDefaults(text: string): BudgetLimits {
  const t = text.trim();
  if (t === UNLIMITED || t === '') return {};
  const out: Partial<Record<(typeof WINDOWS)[number], MicroUsd>> = {};
  for (const part of t.split(',')) {
    const [w, usd] = part.split('=').map((x) => x.trim());
    if (!w || !isWindow(w) || usd === undefined) throw new RangeError(`"${part}" is not WINDOW=USD (windows: ${WINDOWS.join(', ')})`);
    out[w] = usdToMicros(usd);
  }
  return out;
}

/** The inverse of {@link parseBudgetDefaults} (for the deployment config → gateway env). */
export function formatBudgetDefaults(limits: BudgetLimits): string {
  const parts = WINDOWS.filter((w) => limits[w] !== undefined).map((w) => `${w}=${(limits[w]! / 1_000_000).toString()}`);
  return parts.length ? parts.join(',') : UNLIMITED;
}
