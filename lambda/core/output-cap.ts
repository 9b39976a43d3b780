/**
 * The output cap of a call whose caller set none — one small decision, so the reservation and what the
 * provider is told can never disagree:
 *
 *   caller set max_tokens / max_completion_tokens      → theirs, always (reserved and sent as given)
 *   caller set none                                    → min(model cap, what the tightest remaining budget
 *                                                        can pay for, what the key's token rate allows),
 *                                                        but at least `floorTokens`; sent upstream as the cap
 *
 * Without this, a request without a cap to an expensive model (o1-pro: 100k output tokens at $600/MTok = $60)
 * reserves more than a whole $10/day default budget and is refused before it starts. "Remaining" is the limit
 * minus the committed spend this instance last read (stale by at most one request; the reservation itself is
 * still checked atomically), or the whole limit when nothing was read yet.
 */
import { costOfTokens, type MicroUsd } from './money';
import { maxCostOf, type ModelPrice } from './pricing';

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
