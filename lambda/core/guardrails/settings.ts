/**
 * Guardrail settings: the loop guard, the spend circuit breaker and the alert tiers. Defaults are the
 * documented ones; the gateway's config (lambda/config.ts) may override them, and the loop guard can be
 * tuned per key ({@link LoopOverrides}, stored with the key's budget limits).
 */

export interface LoopGuardSettings {
  /** Copies of one request (same key, model and normalized body) admitted per window. @default 5 */
  readonly maxRepeats: number;
  /** Length of the repeat-counting window. @default 10 minutes */
  readonly windowMs: number;
  /** Upstream failures in a row after which further copies are refused for a window. @default 3 */
  readonly maxFailures: number;
  /**
   * A conversation that carries the same assistant answer (or the same tool call with the same result) this
   * many times is a loop: the request is refused before it is reserved. 0 turns the check off. @default 3
   */
  readonly maxTurnRepeats: number;
}

/**
 * The spend-velocity breaker (core/guardrails/velocity.ts): per key and per user, spend admitted within a short
 * window beyond `floor` AND beyond `multiple` × the scope's own recent baseline opens the scope's circuit.
 */
export interface VelocitySettings {
  /** Off: no velocity items in the reserve transaction. @default true */
  readonly enabled: boolean;
  /** Length of the fixed velocity window. @default 5 minutes */
  readonly windowMs: number;
  /** Spend a scope may always reach within one window (micro-USD). @default $3 */
  readonly floorMicros: number;
  /** How many times its baseline (its average spend per window over the previous hour) a scope may spend. @default 4 */
  readonly multiple: number;
  /** How long a tripped velocity circuit stays open; a second trip the same day stays open until acknowledged. @default 15 minutes */
  readonly cooldownMs: number;
}

/** Per-key overrides of the loop guard (absent fields keep the gateway's settings). */
export type LoopOverrides = Partial<Pick<LoopGuardSettings, 'maxRepeats' | 'maxFailures'>>;

export interface BreakerSettings {
  /**
   * How long an hourly circuit stays open once tripped. 0 = until the hour ends.
   * @default 0
   */
  readonly cooldownMs: number;
  /** Repeated warning alerts of one scope are at least this far apart. @default 6 hours */
  readonly warningSpacingMs: number;
}

export interface GuardrailSettings {
  readonly loop: LoopGuardSettings;
  readonly breaker: BreakerSettings;
  /** @default DEFAULT_GUARDRAILS.velocity (absent: the breaker is off) */
  readonly velocity?: VelocitySettings;
}

export const DEFAULT_VELOCITY: VelocitySettings = {
  enabled: true,
  windowMs: 5 * 60_000,
  floorMicros: 3_000_000,
  multiple: 4,
  cooldownMs: 15 * 60_000,
};

export const DEFAULT_GUARDRAILS: GuardrailSettings = {
  loop: { maxRepeats: 5, windowMs: 10 * 60_000, maxFailures: 3, maxTurnRepeats: 3 },
  breaker: { cooldownMs: 0, warningSpacingMs: 6 * 3_600_000 },
  velocity: DEFAULT_VELOCITY,
};

/** The key's effective loop settings. */
export function loopSettingsFor(base: LoopGuardSettings, overrides: LoopOverrides | undefined): LoopGuardSettings {
  return {
    windowMs: base.windowMs,
    maxRepeats: overrides?.maxRepeats ?? base.maxRepeats,
    maxFailures: overrides?.maxFailures ?? base.maxFailures,
    maxTurnRepeats: base.maxTurnRepeats,
  };
}
