/**
 * Output caps, decided in two steps so the reservation and what the provider is told can never disagree:
 *
 *   1. the route (`requestedCapFor`): the caller's own cap, or else the model's maximum, or else the gateway
 *      default — the most a call could produce;
 *   2. the pipeline (`chooseOutputCap`): a caller's cap is kept as given; when the gateway chose one it is
 *      lowered to what the tightest remaining budget and the key's token rate allow, reserved for, and sent
 *      upstream so the provider can never produce more than was reserved.
 */
import { costOfTokens, type MicroUsd } from './money';
import { maxCostOf, type ModelPrice } from './pricing';

/** What the cap is decided from. */
export interface RequestedCapInput {
  /** The caller's own cap (`max_completion_tokens`, `max_tokens`, `max_output_tokens`), when it gave one. */
  readonly requested?: number;
  /** The model's largest output, from the price book, when known. */
  readonly modelMax?: number;
  /** The gateway's cap for models without a known maximum (`TOLLGATE_DEFAULT_MAX_OUTPUT_TOKENS`). */
  readonly defaultMax: number;
}

/** The decided cap. */
export interface RequestedCap {
  /** Output tokens reserved for (per choice). */
  readonly tokens: number;
  /** True when the caller set it: the body already carries it and nothing needs to be added upstream. */
  readonly fromCaller: boolean;
}

/** Step 1: the caller's cap, or else the model's maximum, or else the gateway default. */
export function requestedCapFor(input: RequestedCapInput): RequestedCap {
  if (input.requested !== undefined) return { tokens: input.requested, fromCaller: true };
  return { tokens: input.modelMax ?? input.defaultMax, fromCaller: false };
}


export interface OutputCapInput {
  /** The caller's own cap, when the request carried one. */
  readonly requested?: number;
  /** The model's own output limit, or the configured default when unknown. */
  readonly modelCap: number;
  readonly inputTokens: number;
  readonly price: ModelPrice;
  /** The tightest remaining budget known for the call's scopes (micro-USD); undefined = no budget applies. */
  readonly remainingMicros?: MicroUsd;
  /** The key's tokens-per-minute limit, when it has one (a reservation above it could never pass). */
  readonly tokensPerMinute?: number;
  /** Never choose fewer output tokens than this. */
  readonly floorTokens: number;
}

export interface OutputCap {
  readonly maxOutputTokens: number;
  /** True when the gateway chose the cap (then it must be sent upstream). */
  readonly chosenByGateway: boolean;
}

/** Decides the output cap a call reserves for and, when the gateway chose it, sends upstream. */
export function chooseOutputCap(input: OutputCapInput): OutputCap {
  if (input.requested !== undefined) return { maxOutputTokens: input.requested, chosenByGateway: false };
  let cap = input.modelCap;
  if (input.tokensPerMinute !== undefined) cap = Math.min(cap, input.tokensPerMinute - input.inputTokens);
  if (input.remainingMicros !== undefined) {
    const inputCost = maxCostOf(input.price, { inputTokens: input.inputTokens, maxOutputTokens: 0 });
    const perMillion = maxCostOf(input.price, { inputTokens: input.inputTokens, maxOutputTokens: 1_000_000 }) - inputCost;
    if (perMillion > 0) {
      let affordable = Math.floor(((input.remainingMicros - inputCost) * 1_000_000) / perMillion);
      // Rounding up per request can make the estimate a micro-dollar dearer than the division says.
      while (affordable > 0 && inputCost + costOfTokens(affordable, perMillion) > input.remainingMicros) affordable--;
      cap = Math.min(cap, affordable);
    }
  }
  return { maxOutputTokens: Math.min(input.modelCap, Math.max(input.floorTokens, cap)), chosenByGateway: true };
}
