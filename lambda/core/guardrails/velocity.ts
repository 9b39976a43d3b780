/**
 * The spend-velocity breaker: needs no configured limit. Per key and per user, spend admitted within a short
 * fixed window (5 minutes) beyond an absolute floor ($3) AND beyond a multiple (4×) of the scope's own recent
 * baseline opens the scope's circuit.
 *
 *   reserve (the existing TransactWriteItems) also updates vel#<scope> / w<window> for the key and the user:
 *     ADD v :admitted   IF  v < ceiling          ceiling = max(floor, multiple × baseline), computed in memory
 *   settle (the existing TransactWriteItems):  ADD v (cost − admitted)   — the window ends up holding real spend
 *   refused → 429 circuit_open; after the response: trip 1 of the day opens the circuit for the cooldown (15 min)
 *             and alerts; a later trip the same day opens it until an operator acknowledges it (escalation).
 *
 * `admitted` is the input's cost plus the cost of a modest output (the output-cap floor), never more than the
 * reservation: counting at admission makes the breaker hold against parallel workers (every in-flight request
 * is in the window), and counting less than the whole reservation keeps a parallel batch of cheap calls with
 * large default caps from tripping it. Keyed by user as well as by key, it holds against key rotation.
 *
 * The baseline is the scope's average spend per window over the previous hour, read from the hour counter
 * after a reservation (off the critical path, in parallel with the provider call) and cached per instance;
 * an instance that has not read it yet uses the floor alone (stricter, never looser). No extra round trip.
 */
import type { ScopeId } from '../types';
import { windowKey } from '../windows';
import type { VelocitySettings } from './settings';

/** One velocity window item a reservation adds to (and settle corrects). */
export interface VelocityCharge {
  readonly scope: ScopeId;
  /** Index of the fixed window (floor(now / windowMs)). */
  readonly window: number;
  readonly windowEnd: number;
  /** The request is admitted only while the window's spend is below this (micro-USD). */
  readonly ceilingMicros: number;
  /** What this request adds at admission (micro-USD). */
  readonly admittedMicros: number;
}

/** The scopes the breaker watches: keys (not service principals) and users (not BYOK scopes). */
export function velocityScopes(scopes: readonly ScopeId[]): ScopeId[] {
  return scopes.filter((s) => (s.startsWith('key:') && !s.startsWith('key:svc:')) || (s.startsWith('user:') && !s.endsWith('#byok')));
}

/** The ceiling of a window: max(floor, multiple × baseline per window). */
export function velocityCeiling(settings: VelocitySettings, baselinePerWindow: number | undefined): number {
  return Math.max(settings.floorMicros, Math.ceil(settings.multiple * (baselinePerWindow ?? 0)));
}

/** The hour-counter key whose spend is a scope's baseline at `now`: the previous hour. */
export function baselineHourKey(now: number): string {
  return windowKey('hour', now - 3_600_000);
}

/**
 * Per-instance cache of baselines (average spend per velocity window over the previous hour), by scope. The
 * pipeline asks which scopes need a read after a reservation and feeds the values back.
 */
export class VelocityBaselines {
  private readonly cache = new Map<ScopeId, { readonly hourKey: string; readonly perWindow: number }>();

  constructor(private readonly settings: VelocitySettings) {}

  /** The cached baseline of `scope` for the hour before `now`, if read. */
  get(scope: ScopeId, now: number): number | undefined {
    const hit = this.cache.get(scope);
    return hit && hit.hourKey === baselineHourKey(now) ? hit.perWindow : undefined;
  }

  /** Scopes whose baseline for `now` has not been read yet. */
  missing(scopes: readonly ScopeId[], now: number): ScopeId[] {
    return scopes.filter((s) => this.get(s, now) === undefined);
  }

  /** Records a scope's spend in the previous hour. */
  remember(scope: ScopeId, now: number, spentLastHour: number): void {
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(scope, { hourKey: baselineHourKey(now), perWindow: (spentLastHour * this.settings.windowMs) / 3_600_000 });
  }

  /** The charges of one request on the given scopes. */
  chargesFor(scopes: readonly ScopeId[], now: number, admittedMicros: number): VelocityCharge[] {
    const window = Math.floor(now / this.settings.windowMs);
    return velocityScopes(scopes).map((scope) => ({
      scope,
      window,
      windowEnd: (window + 1) * this.settings.windowMs,
      ceilingMicros: velocityCeiling(this.settings, this.get(scope, now)),
      admittedMicros,
    }));
  }
}
