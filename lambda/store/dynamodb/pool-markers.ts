/**
 * What a pool item carries and how it is named: a pool group's id, a take's marker `t:<request id>` (the
 * kind, amount, arrival and model the sweeper's `abandoned` record is made from), a grant's marker
 * `g:<grant id>`, the refusal a dry pool remembers, and the sweeper's record of a take never settled.
 */
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { createHash } from 'node:crypto';
import { BudgetExceededError, CircuitOpenError, RateLimitError, TollgateError } from '../../core/errors';
import type { MicroUsd } from '../../core/money';
import type { CounterRef, RateCharge, ReserveInput } from '../../core/stores';
import type { UsageRecord } from '../../core/types';
import { budgetExceeded } from './denials';
import type { PoolHost } from './pools';

export type Item = Record<string, AttributeValue>;

/** Grant ids of shared scopes' pools start with this (the sweeper releases them through the shared pools). */
export const SHARED_GRANT_PREFIX = 'spool.';

/** Refusals a pool remembers for a moment after even one request's grant was refused, so its takers need not ask. */
export interface DryState {
  readonly kind: 'budget' | 'rate' | 'circuit';
  readonly message: string;
  readonly code?: string;
  readonly headers: Record<string, string>;
  /**
   * A budget refused only for what is held (spend leaves room): the counter and its values, so each taker's
   * refusal is one the ledger waits on (room-wait.ts) rather than final.
   */
  readonly held?: { readonly ref: CounterRef; readonly old: Record<string, number> };
}

/** Requests that share pools: one key, the same counters and limits, rate limits, circuits and velocity scopes. */
export function poolGroupKey(input: ReserveInput): string {
  // The platform's shard is the pool's (see take), not the request's.
  const counters = input.counters.map((c) => `${c.scope}|${c.windowKey}|${c.limit ?? '-'}`).join(',');
  const rates = input.rateCharges
    .filter((c) => c.amount > 0)
    .map((c) => `${c.dimension}:${c.limitPerMinute}`)
    .join(',');
  const circuits = (input.circuits ?? []).map((c) => c.scope).join(',');
  const velocity = (input.velocity ?? []).map((v) => `${v.scope}:${v.window}`).join(',');
  return [input.context.keyId, input.context.byok ? 'byok' : '', counters, rates, circuits, velocity].join('#');
}

export function groupId(input: ReserveInput): string {
  return createHash('sha256').update(poolGroupKey(input)).digest('base64url').slice(0, 22);
}

export function unitAttr(dimension: RateCharge['dimension']): string {
  return dimension === 'requests' ? 'ur' : 'ut';
}

export function dryError(dry: DryState, amount: MicroUsd): TollgateError {
  if (dry.held) return budgetExceeded(dry.held.ref, { amount, old: dry.held.old });
  const options = { ...(dry.code ? { code: dry.code } : {}), headers: { ...dry.headers } };
  if (dry.kind === 'circuit') return new CircuitOpenError(dry.message, options);
  return dry.kind === 'budget' ? new BudgetExceededError(dry.message, options) : new RateLimitError(dry.message, options);
}

export function num(value: unknown): number {
  return typeof value === 'number' ? value : Number(value ?? 0) || 0;
}

/** A take's marker attribute on its pool item, present from the take until its settle (or the release). */
export const MARKER_PREFIX = 't:';
/** The value a grant's marker takes when the sweeper released a grant that never reached the room. */
export const VOID_GRANT = -1;

export function markerName(requestId: string): string {
  return `${MARKER_PREFIX}${requestId}`;
}

export function grantName(grantId: string): string {
  return `g:${grantId}`;
}

export interface MarkedTake {
  readonly requestId: string;
  readonly amount: MicroUsd;
  readonly reservedAt: number;
  readonly model: string;
  readonly lease: boolean;
}

export function parseMarker(name: string, value: string): MarkedTake | undefined {
  const [kind, amount, at, ...model] = value.split(';');
  if (kind === 's' || amount === undefined || at === undefined) return undefined;
  return { requestId: name.slice(MARKER_PREFIX.length), amount: Number(amount), reservedAt: Number(at), model: model.join(';'), lease: kind === 'l' };
}

/** The sweeper's record of a take never settled: its amount, estimated, `abandoned` (its late settle replaces it). */
export function abandonedTake(context: ReserveInput['context'], take: MarkedTake, now: number): UsageRecord {
  return {
    requestId: take.requestId,
    timestamp: new Date(take.reservedAt).toISOString(),
    userId: context.userId,
    keyId: context.keyId,
    ...(context.orgId !== undefined ? { orgId: context.orgId } : {}),
    provider: 'unknown',
    model: take.model,
    requestType: 'chat',
    endpoint: take.lease ? 'lease' : 'unknown',
    stream: false,
    usage: { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 },
    costMicros: take.amount,
    costEstimated: true,
    outcome: 'abandoned',
    httpStatus: 0,
    durationMs: Math.max(0, now - take.reservedAt),
    byok: context.byok ?? false,
  };
}

/** The key of the sweeper's record of a take (to delete it when a lease or a refused take settles late). */
export function abandonedKeyOf(host: PoolHost, requestId: string, reservedAt: number, context: ReserveInput['context']): Item {
  const item = host.usageItem(abandonedTake(context, { requestId, amount: 0, reservedAt, model: '', lease: true }, reservedAt));
  return { pk: item.pk!, sk: item.sk! };
}
