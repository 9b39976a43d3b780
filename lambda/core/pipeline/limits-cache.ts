/**
 * Budget limits and loop-guard overrides, cached per instance. Both change rarely and are read on every
 * request, so a read is shared by concurrent callers and, for a short while past its cache time, served stale
 * while a fresh read runs in the background.
 */
import type { Clock } from '../clock';
import { type DefaultLimits, effectiveLimits } from '../guardrails/defaults';
import type { LoopOverrides } from '../guardrails/settings';
import type { Ledger } from '../stores';
import type { BudgetLimits, ScopeId } from '../types';

/**
 * How long past its cache time a scope's limits (and a key's loop overrides) may still serve requests while a
 * fresh read runs in the background: a key-cache miss on a busy instance then costs the key read and the
 * admission, not a third round trip for limits that rarely change. A limit change reaches an instance within
 * the cache time plus this (an admin change made through this instance clears its cache at once). With a cache
 * time of 0 (TOLLGATE_AUTH_CACHE_MS=0) nothing is served stale.
 */
export const STALE_LIMITS_MS = 30_000;

export class LimitsCache {
  private readonly limits = new Map<ScopeId, { limits: Promise<BudgetLimits>; at: number }>();
  private readonly loops = new Map<string, { overrides: Promise<LoopOverrides | undefined>; at: number }>();

  constructor(
    private readonly ledger: Pick<Ledger, 'getLimitSettings' | 'getLoopOverrides'>,
    private readonly clock: Clock,
    private readonly cacheMs: number,
    private readonly defaults: DefaultLimits,
  ) {}

  /**
   * Effective budget limits of the given scopes (their own, or the defaults), cached for a few seconds;
   * concurrent callers share one read.
   */
  async limitsOf(scopes: readonly ScopeId[]): Promise<Map<ScopeId, BudgetLimits>> {
    const now = this.clock.now();
    const missing: ScopeId[] = [];
    const stale = new Map<ScopeId, Promise<BudgetLimits>>();
    for (const scope of scopes) {
      const hit = this.limits.get(scope);
      if (hit && now - hit.at < this.cacheMs) continue;
      missing.push(scope);
      // Read a moment ago and now being read again: this request uses the value it has (see STALE_LIMITS_MS).
      if (hit && this.servesStale(now - hit.at)) stale.set(scope, hit.limits);
    }
    if (missing.length > 0) {
      if (this.limits.size >= 10_000) this.limits.clear();
      const fetched = this.ledger.getLimitSettings(missing);
      for (const scope of missing) {
        const limits = fetched.then((m) => effectiveLimits(scope, m.get(scope), this.defaults));
        const entry = { limits, at: now };
        const previous = this.limits.get(scope);
        this.limits.set(scope, entry);
        // A failed read is not cached: the next request reads again (or uses the previous value while fresh enough).
        limits.catch(() => {
          if (this.limits.get(scope) !== entry) return;
          if (previous) this.limits.set(scope, previous);
          else this.limits.delete(scope);
        });
      }
    }
    const out = new Map<ScopeId, BudgetLimits>();
    await Promise.all(scopes.map(async (scope) => out.set(scope, await (stale.get(scope) ?? this.limits.get(scope)!.limits))));
    return out;
  }

  /** A key's loop guard overrides, cached like limits. */
  loopOverridesOf(keyId: string): Promise<LoopOverrides | undefined> {
    const now = this.clock.now();
    const hit = this.loops.get(keyId);
    if (hit && now - hit.at < this.cacheMs) return hit.overrides;
    if (hit && this.servesStale(now - hit.at)) {
      // Refreshed in the background; this request uses what was read a moment ago (see STALE_LIMITS_MS).
      void this.readLoopOverrides(keyId, now).catch(() => undefined);
      return hit.overrides;
    }
    return this.readLoopOverrides(keyId, now);
  }

  /** Forgets cached limits (after an admin change in this process). */
  invalidate(): void {
    this.limits.clear();
  }

  private servesStale(age: number): boolean {
    return this.cacheMs > 0 && age < this.cacheMs + STALE_LIMITS_MS;
  }

  private readLoopOverrides(keyId: string, now: number): Promise<LoopOverrides | undefined> {
    const overrides = this.ledger.getLoopOverrides([keyId]).then((m) => m.get(keyId));
    if (this.loops.size > 10_000) this.loops.clear();
    const entry = { overrides, at: now };
    this.loops.set(keyId, entry);
    overrides.catch(() => {
      if (this.loops.get(keyId) === entry) this.loops.delete(keyId);
    });
    return overrides;
  }
}
