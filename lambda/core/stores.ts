/**
 * The storage contracts of the domain. The DynamoDB adapters in `lambda/store/dynamodb/` implement them;
 * the domain never sees an SDK type. Adapters translate SDK failures into domain errors at their edge:
 * a denied condition becomes {@link BudgetExceededError} or {@link RateLimitError}, an unreachable store
 * becomes {@link StoreUnavailableError}, anything else is rethrown.
 */
import type { MicroUsd } from './money';
import type { BudgetLimits, KeyRecord, KeyStatus, RequestType, ScopeId, StatusActor, UsageRecord } from './types';
import type { Window } from './windows';

export interface KeyStore {
  get(keyId: string): Promise<KeyRecord | undefined>;
  /** Creates a key; fails if the id exists. */
  create(record: KeyRecord): Promise<void>;
  listByUser(userId: string): Promise<KeyRecord[]>;
  /** Every key, paged internally (admin and kill switch only). */
  listAll(options?: { readonly status?: KeyStatus }): AsyncIterable<KeyRecord[]>;
  /**
   * Changes a key's status. With `onlyIfStatus`/`onlyIfActor`, the change happens only when the key is in that
   * state (so the kill switch never resumes a key an operator suspended); returns whether it changed.
   */
  setStatus(
    keyId: string,
    change: {
      readonly status: KeyStatus;
      readonly actor: StatusActor;
      readonly reason?: string;
      readonly onlyIfStatus?: KeyStatus;
      readonly onlyIfActor?: StatusActor;
    },
  ): Promise<boolean>;
  touchLastUsed(keyId: string, atIso: string): Promise<void>;
}

/** One budget counter touched by a request: a scope's spend in one window. */
export interface CounterRef {
  readonly scope: ScopeId;
  readonly window: Window;
  /** e.g. `day#2026-11-23` */
  readonly windowKey: string;
  /** The platform counter is sharded to spread writes; other scopes have no shard. */
  readonly shard?: number;
  /** The limit this counter must stay within (for a shard: its share), absent when not enforced. */
  readonly limit?: MicroUsd;
  /** ms epoch when the window ends, for TTL. */
  readonly windowEnd: number;
}

/** A charge against a per-key token bucket (GCRA), in the bucket's unit (requests or tokens). */
export interface RateCharge {
  readonly keyId: string;
  readonly dimension: 'requests' | 'tokens';
  /** Bucket capacity per minute. */
  readonly limitPerMinute: number;
  readonly amount: number;
}

export interface ReserveInput {
  readonly requestId: string;
  readonly now: number;
  /** When an unsettled hold may be reclaimed by the sweeper (ms epoch). */
  readonly expiresAt: number;
  readonly amount: MicroUsd;
  readonly counters: readonly CounterRef[];
  readonly rateCharges: readonly RateCharge[];
  /** Stored with the hold so the sweeper can record what it reclaims. */
  readonly context: {
    readonly keyId: string;
    readonly userId: string;
    readonly orgId?: string;
    readonly model: string;
    readonly provider?: string;
    readonly requestType?: RequestType;
    readonly endpoint?: string;
  };
}

export interface RateState {
  readonly dimension: 'requests' | 'tokens';
  readonly limit: number;
  readonly remaining: number;
  /** ms until the bucket is full again. */
  readonly resetMs: number;
}

/** A successful hold: what settle needs to release it. */
export interface Reservation {
  readonly requestId: string;
  readonly amount: MicroUsd;
  readonly counters: readonly CounterRef[];
  readonly rateCharges: readonly RateCharge[];
  readonly rateStates: readonly RateState[];
  readonly expiresAt: number;
  /** The partition of the hold item (sharded by request id). */
  readonly holdShard: number;
}

export interface SettleInput {
  readonly reservation: Reservation;
  /** The actual cost to add to every counter (0 on most failure paths). */
  readonly cost: MicroUsd;
  /** Actual tokens, to refund (or charge) the token bucket the difference from the estimate. */
  readonly actualTokens?: number;
  readonly usage: UsageRecord;
}

export interface CounterValue {
  readonly ref: CounterRef;
  /** Spent plus held. */
  readonly committed: MicroUsd;
  readonly spent: MicroUsd;
  readonly reserved: MicroUsd;
  readonly requests: number;
}

/**
 * Budgets, holds and rate buckets: everything that must be atomic with the decision to admit a request.
 */
export interface Ledger {
  /**
   * Atomically: charges every rate bucket, adds `amount` to every counter (each within its limit) and writes
   * the hold. Throws RateLimitError or BudgetExceededError (changing nothing) or StoreUnavailableError.
   */
  reserve(input: ReserveInput): Promise<Reservation>;
  /**
   * Atomically: removes the hold, moves its amount out of every counter's held total, adds the actual cost,
   * and writes the usage record. A hold already reclaimed by the sweeper is not released twice.
   */
  settle(input: SettleInput): Promise<void>;
  /** Current values of counters (platform shards are summed into one value per window). */
  readCounters(refs: readonly CounterRef[]): Promise<CounterValue[]>;
  getLimits(scopes: readonly ScopeId[]): Promise<Map<ScopeId, BudgetLimits>>;
  /** Sets (or, with `null`, removes) one scope's limit for one window. */
  setLimit(scope: ScopeId, window: Window, limit: MicroUsd | null): Promise<void>;
  /** Releases holds whose expiry has passed (a crashed invocation's); returns how many. */
  sweepExpired(now: number): Promise<number>;
}

export interface UsageQuery {
  readonly by: 'user' | 'key' | 'org';
  readonly id: string;
  /** Inclusive ISO start, exclusive ISO end. */
  readonly from: string;
  readonly to: string;
}

/** The usage ledger (write side is part of {@link Ledger.settle}); these are the report queries. */
export interface UsageStore {
  query(q: UsageQuery): Promise<UsageRecord[]>;
  /** Every record in [from, to) across all callers (report by model); reads the day partitions. */
  queryAll(from: string, to: string): Promise<UsageRecord[]>;
}
