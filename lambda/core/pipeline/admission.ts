/**
 * What a call asks of the ledger before it may reach the provider: the scopes its spend counts toward, the
 * counter items of each scope and window (limits attached), the circuits it must find closed, the rate
 * buckets it is charged against, the output cap and the amount held — the most the call can cost.
 */
import type { Principal } from '../auth';
import { type DefaultLimits, keyRateLimits } from '../guardrails/defaults';
import type { MicroUsd } from '../money';
import { chooseOutputCap, type OutputCap } from '../output-cap';
import { maxCostOf } from '../pricing';
import type { CircuitRef, CounterRef, RateCharge } from '../stores';
import type { BudgetLimits, ScopeId } from '../types';
import { WINDOWS, windowBounds, windowKey } from '../windows';
import type { BillableCall } from './types';

/** Scopes a principal's spend counts toward, tightest first in messages. */
export function scopesOf(principal: Pick<Principal, 'keyId' | 'userId' | 'orgId'>): ScopeId[] {
  const scopes: ScopeId[] = [`key:${principal.keyId}`, `user:${principal.userId}`];
  if (principal.orgId) scopes.push(`org:${principal.orgId}`);
  scopes.push('platform');
  return scopes;
}

/** The platform shard a request counts in (its circuit item and its counter items). */
export function platformShardOf(requestId: string, shards: number): number {
  let h = 0;
  for (let i = 0; i < requestId.length; i++) h = (h * 31 + requestId.charCodeAt(i)) >>> 0;
  return h % shards;
}

/** The circuit items a request must find closed: one per scope, the platform's in the request's shard. */
export function circuitsFor(scopes: readonly ScopeId[], requestId: string, platformShards: number): CircuitRef[] {
  const shard = platformShardOf(requestId, platformShards);
  return scopes.map((scope) => (scope === 'platform' ? { scope, shard } : { scope }));
}

/** Every counter a request touches: each scope × each window; limits attached where set. */
export function countersFor(
  scopes: readonly ScopeId[],
  limits: Map<ScopeId, BudgetLimits>,
  now: number,
  requestId: string,
  platformShards: number,
): CounterRef[] {
  const refs: CounterRef[] = [];
  const platformShard = platformShardOf(requestId, platformShards);
  // Each window's key and end, once per request rather than once per scope.
  const windows = WINDOWS.map((window) => ({ window, windowKey: windowKey(window, now), windowEnd: windowBounds(window, now).end }));
  for (const scope of scopes) {
    for (const { window, windowKey: key, windowEnd } of windows) {
      const limit = limits.get(scope)?.[window];
      const base = { scope, window, windowKey: key, windowEnd };
      if (scope === 'platform') {
        // Each shard enforces its share, so no single item is hot and the sum never passes the limit.
        refs.push({ ...base, shard: platformShard, ...(limit === undefined ? {} : { limit: Math.floor(limit / platformShards) }) });
      } else {
        refs.push({ ...base, ...(limit === undefined ? {} : { limit }) });
      }
    }
  }
  return refs;
}

export interface Admission {
  readonly cap: OutputCap;
  readonly rateCharges: RateCharge[];
  /** The hold: the most the call can cost at its input estimate and output cap. */
  readonly amount: MicroUsd;
  /** What the velocity breaker counts at admission (the input and a modest output; settle adds the rest). */
  readonly velocityAmount: MicroUsd;
}

/** The output cap, rate charges and hold of a call, given the budget this instance last saw left. */
export function admissionOf(
  call: BillableCall,
  o: { readonly defaults: DefaultLimits; readonly minOutputTokens: number; readonly remainingMicros?: MicroUsd },
): Admission {
  const { principal } = call;
  const rates = keyRateLimits(principal.key, o.defaults, { service: principal.service !== undefined });
  const cap = chooseOutputCap({
    ...(call.estimate.gatewayChoosesCap ? {} : { requested: call.estimate.maxOutputTokens }),
    modelCap: call.estimate.maxOutputTokens,
    inputTokens: call.estimate.inputTokens,
    price: call.model.price,
    ...(o.remainingMicros === undefined ? {} : { remainingMicros: o.remainingMicros }),
    ...(rates.tpm ? { tokensPerMinute: rates.tpm } : {}),
    floorTokens: o.minOutputTokens,
  });
  const estimate = { inputTokens: call.estimate.inputTokens, maxOutputTokens: cap.maxOutputTokens };
  const rateCharges: RateCharge[] = [];
  if (rates.rpm) rateCharges.push({ keyId: principal.keyId, dimension: 'requests', limitPerMinute: rates.rpm, amount: 1 });
  if (rates.tpm) {
    // The token bucket paces throughput; money is bounded by the budgets. At admission it takes the input and
    // the output cap, but at most a quarter of a minute's capacity for the output, so a caller's large
    // max_tokens (the AI SDK sends the model's maximum) is not refused as "too large" and does not need an
    // empty bucket; settle then charges the bucket the actual tokens, so the sustained rate still holds.
    const admitted = estimate.inputTokens + Math.min(estimate.maxOutputTokens, Math.floor(rates.tpm / 4));
    rateCharges.push({ keyId: principal.keyId, dimension: 'tokens', limitPerMinute: rates.tpm, amount: admitted });
  }
  const amount = maxCostOf(call.model.price, estimate);
  const velocityAmount = Math.min(amount, maxCostOf(call.model.price, { inputTokens: estimate.inputTokens, maxOutputTokens: o.minOutputTokens }));
  return { cap, rateCharges, amount, velocityAmount };
}
