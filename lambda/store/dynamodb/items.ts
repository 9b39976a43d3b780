/**
 * The items of the budgets table the ledger writes, by key: counters, circuits, loop guard items, velocity
 * windows and holds (layout in schema.ts), and the usage record the sweeper writes for a hold it reclaims.
 */
import type { CounterRef, CircuitRef, RateCharge, Reservation, ReserveInput } from '../../core/stores';
import type { LoopCheck } from '../../core/guardrails/loop-guard';
import type { VelocityCharge } from '../../core/guardrails/velocity';
import type { MicroUsd } from '../../core/money';
import { GCRA_BURST_US } from '../../core/ratelimit';
import type { UsageRecord } from '../../core/types';
import { COUNTER_RETENTION_MS } from '../../core/windows';
import { isShared } from './busy-scopes';
import { shardOf } from './hash';
import { HOLD_SHARDS } from './schema';
import type { PoolRef } from './pools';

const HOLD_SK_DIGITS = 15;

/** Partition key of a counter item: `ctr#<scope>`, or `ctr#platform#s<n>` for a platform shard. */
export function counterPk(ref: Pick<CounterRef, 'scope' | 'shard'>): string {
  return ref.scope === 'platform' ? `ctr#platform#s${ref.shard ?? 0}` : `ctr#${ref.scope}`;
}

/** Key of a circuit item: `circuit#<scope>` / `state`, the platform's sharded like its counter. */
export function circuitKey(ref: CircuitRef): { pk: string; sk: string } {
  return { pk: ref.scope === 'platform' ? `circuit#platform#s${ref.shard ?? 0}` : `circuit#${ref.scope}`, sk: 'state' };
}

/** `openUntil` of a circuit that stays open until an operator acknowledges it. */
export const UNTIL_ACKNOWLEDGED = Number.MAX_SAFE_INTEGER;

/** Partitions one owner's loop items are spread over, so a busy user never makes one partition hot. */
export const LOOP_SHARDS = 8;

/** Key of a loop guard item: one per owner (the user) and fingerprint, partitioned by the fingerprint. */
export function loopKey(check: Pick<LoopCheck, 'owner' | 'fingerprint'>): { pk: string; sk: string } {
  return { pk: `loop#${check.owner}#${shardOf(check.fingerprint, LOOP_SHARDS)}`, sk: check.fingerprint };
}

/** Key of a spend-velocity window item: `vel#<scope>` / `w<window, zero-padded>`. */
export function velocityKey(charge: Pick<VelocityCharge, 'scope' | 'window'>): { pk: string; sk: string } {
  return { pk: `vel#${charge.scope}`, sk: `w${String(charge.window).padStart(12, '0')}` };
}

/** Key of a hold item: sharded by request id, sorted by expiry so the sweeper finds expired ones by range. */
export function holdKey(requestId: string, expiresAt: number): { pk: string; sk: string; shard: number } {
  const shard = shardOf(requestId, HOLD_SHARDS);
  return { pk: `hold#${shard}`, sk: `${padMs(expiresAt)}#${requestId}`, shard };
}


/**
 * Whether reserve writes a counter (`committed`, `reserved` += amount) or leaves it to settle. A request held on
 * its own (`limitedOnly`) reserves on every counter with a limit and on the shared scopes' counters (org,
 * platform: their transaction conflicts are what starts the scope's allowance pools, busy-scopes.ts); a key's or
 * a user's window without a limit only counts what is spent, so settle (or the sweeper) adds the cost to it once.
 * A budget lease reserves on every counter (its return corrects all of them); a pool's grant: grantReservesOn.
 */
export function reservesOn(ref: CounterRef, limitedOnly: boolean | undefined): boolean {
  return !limitedOnly || ref.limit !== undefined || isShared(ref.scope);
}

/**
 * Whether a pool's grant reserves on a counter: one with a limit (its condition admits the money), and for a key's
 * pool the shared scopes' too (their conflicts start the scope's allowance pools, as a request's own do); not a
 * key's or a user's window without a limit, nor an allowance pool's scope's, nor any for a grant of rate units
 * only (no money). The hold marks the others `u`, and the grant's release adds to them what the pool spent
 * (pools.ts PoolHost.heldCounterItems): 4 of a quiet key's 6 counter writes a grant were such windows.
 */
export function grantReservesOn(ref: CounterRef, amount: number, sharedPool: boolean): boolean {
  return amount > 0 && (ref.limit !== undefined || (!sharedPool && isShared(ref.scope)));
}

/** A hold's counter: its key and TTL; `u: 1` when reserve did not write it (settle or the sweeper adds it all). */
export interface StoredHoldCounter {
  readonly pk: string;
  readonly sk: string;
  readonly ttl: number;
  readonly u?: 1;
}

/** A hold item as stored by reserve. */
export interface StoredHold {
  readonly pk: string;
  readonly sk: string;
  readonly requestId: string;
  readonly amount: MicroUsd;
  readonly reservedAt: number;
  /** Every counter of the request (the sweeper charges them all), those reserve did not write marked `u`. */
  readonly counters: readonly StoredHoldCounter[];
  readonly context: ReserveInput['context'];
  /** A pool's grant (pools.ts): the pool, and what its release corrects. */
  readonly pool?: PoolRef;
  /** (Holds of earlier versions carry `grant.counters` too: the same counters as `counters`.) */
  readonly grant?: { readonly velocity: readonly VelocityCharge[] };
}

/** The hold item a reservation wrote, as far as the sweeper's record of it needs it. */
export function storedHoldOf(reservation: Reservation, reservedAt: number, context: ReserveInput['context']): StoredHold {
  const hold = holdKey(reservation.requestId, reservation.expiresAt);
  return { pk: hold.pk, sk: hold.sk, requestId: reservation.requestId, amount: reservation.amount, reservedAt, counters: [], context };
}

/** The usage record of a hold the sweeper reclaims: charged its full amount, estimated, outcome `abandoned`. */
export function abandonedRecord(hold: StoredHold, now: number): UsageRecord {
  return {
    requestId: hold.requestId,
    timestamp: new Date(hold.reservedAt).toISOString(),
    userId: hold.context.userId,
    keyId: hold.context.keyId,
    ...(hold.context.orgId !== undefined ? { orgId: hold.context.orgId } : {}),
    provider: hold.context.provider ?? 'unknown',
    model: hold.context.model,
    requestType: hold.context.requestType ?? 'chat',
    endpoint: hold.context.endpoint ?? 'unknown',
    stream: hold.context.stream ?? false,
    usage: { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 },
    costMicros: hold.amount,
    costEstimated: true,
    outcome: 'abandoned',
    httpStatus: 0,
    durationMs: Math.max(0, now - hold.reservedAt),
    byok: hold.context.byok ?? false,
  };
}

export function bucketHintKey(charge: Pick<RateCharge, 'keyId' | 'dimension'>): string {
  return `${charge.keyId}#${charge.dimension}`;
}

export function counterTtl(ref: CounterRef): number {
  return Math.ceil((ref.windowEnd + COUNTER_RETENTION_MS[ref.window]) / 1000);
}

/** After two minutes past `now` a bucket's tat is surely in the past, i.e. the item is worthless. */
export function bucketTtl(nowUs: number): number {
  return Math.ceil((nowUs + 2 * GCRA_BURST_US) / 1_000_000) + 3_600;
}

export function padMs(ms: number): string {
  return String(Math.max(0, Math.floor(ms))).padStart(HOLD_SK_DIGITS, '0');
}

export function num(value: unknown): number {
  return typeof value === 'number' ? value : 0;
}
