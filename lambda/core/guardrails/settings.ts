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
}

export const DEFAULT_GUARDRAILS: GuardrailSettings = {
  loop: { maxRepeats: 5, windowMs: 10 * 60_000, maxFailures: 3 },
  breaker: { cooldownMs: 0, warningSpacingMs: 6 * 3_600_000 },
};

/** The key's effective loop settings. */
export function loopSettingsFor(base: LoopGuardSettings, overrides: LoopOverrides | undefined): LoopGuardSettings {
  return {
    windowMs: base.windowMs,
    maxRepeats: overrides?.maxRepeats ?? base.maxRepeats,
    maxFailures: overrides?.maxFailures ?? base.maxFailures,
  };
}
