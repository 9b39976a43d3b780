/**
 * The output cap of a request: the most output tokens (per choice) the reservation pays for. When the caller
 * gave no cap, the gateway sends the provider this one, so the provider can never produce more than was
 * reserved (the reservation bounds the spend).
 */

/** What the cap is decided from. */
export interface OutputCapInput {
  /** The caller's own cap (`max_completion_tokens`, `max_tokens`, `max_output_tokens`), when it gave one. */
  readonly requested?: number;
  /** The model's largest output, from the price book, when known. */
  readonly modelMax?: number;
  /** The gateway's cap for models without a known maximum (`TOLLGATE_DEFAULT_MAX_OUTPUT_TOKENS`). */
  readonly defaultMax: number;
}

/** The decided cap. */
export interface OutputCap {
  /** Output tokens reserved for (per choice). */
  readonly tokens: number;
  /** True when the caller set it: the body already carries it and nothing needs to be added upstream. */
  readonly fromCaller: boolean;
}

/**
 * Decides the output cap: the caller's, or else the model's maximum, or else the gateway default. One
 * function so a later rule (e.g. clamping to what the budget has left) changes reservation and upstream cap
 * together.
 */
export function outputCapFor(input: OutputCapInput): OutputCap {
  if (input.requested !== undefined) return { tokens: input.requested, fromCaller: true };
  return { tokens: input.modelMax ?? input.defaultMax, fromCaller: false };
}
