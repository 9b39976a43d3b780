/**
 * The storage contracts of the domain. The DynamoDB adapters in `lambda/store/dynamodb/` implement them;
 * the domain never sees an SDK type. Adapters translate SDK failures into domain errors at their edge:
 * a denied condition becomes {@link BudgetExceededError} or {@link RateLimitError}, an unreachable store
 * becomes {@link StoreUnavailableError}, anything else is rethrown.
 */
import type { MicroUsd } from './money';
import type { BudgetLimits, KeyRecord, StoredLimits, KeyStatus, RequestType, ScopeId, StatusActor, UsageRecord } from './types';
import type { Window } from './windows';
import type { LoopCheck } from './guardrails/loop-guard';
import type { LoopOverrides } from './guardrails/settings';
import type { VelocityCharge } from './guardrails/velocity';
import type { UNLIMITED } from './types';

/**
 * A change of a key's status. With `onlyIfStatus`/`onlyIfActor` it applies only to a key in that state (so the
 * kill switch never resumes a key an operator suspended).
 */
export interface KeyStatusChange {
  readonly status: KeyStatus;
  readonly actor: StatusActor;
  readonly reason?: string;
  readonly onlyIfStatus?: KeyStatus;
  readonly onlyIfActor?: StatusActor;
}

/** The same conditional change on many keys in few round trips (the kill switch); resolves with how many changed. */
export interface KeyStatusBatch {
  setStatusMany(keyIds: readonly string[], change: KeyStatusChange & { readonly reason: string; readonly onlyIfStatus: KeyStatus }): Promise<number>;
}

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
    change: KeyStatusChange,
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
  /** Circuits that must be closed (read beside or before the reserve transaction): 429 `circuit_open` if not. */
  readonly circuits?: readonly CircuitRef[];
  /** The loop guard's counter for this request's fingerprint (same transaction): 429 `loop_detected`. */
  readonly loop?: LoopCheck;
  /** The spend-velocity windows of the key and user (same transaction): 429 `circuit_open`. */
  readonly velocity?: readonly VelocityCharge[];
  /** Stored with the hold so the sweeper can record what it reclaims. */
  readonly context: {
    readonly keyId: string;
    readonly userId: string;
    readonly orgId?: string;
    readonly model: string;
    readonly provider?: string;
    readonly requestType?: RequestType;
    readonly endpoint?: string;
    readonly stream?: boolean;
    /** A BYOK call (the sweeper's record says so too). */
    readonly byok?: boolean;
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
  /** The loop check counted at reserve; settle records the upstream outcome on it. */
  readonly loop?: LoopCheck;
  /** The velocity windows added to at reserve; settle corrects them to the actual cost. */
  readonly velocity?: readonly VelocityCharge[];
  /**
   * Set when reserve wrote only the counters it had to check (store/dynamodb/reserve.ts `reservesOn`): a key's or
   * a user's counter without a limit is not reserved on, and settle (or the sweeper) adds the cost to it once.
   */
  readonly limitedOnly?: boolean;
  /**
   * Set when the request was admitted against a budget lease of this instance (core/lease) instead of its own
   * hold: the lease's hold covers it, and its counters change when the lease is returned.
   */
  readonly leaseId?: string;
  /**
   * Set when the request was taken from a scope pool (store/dynamodb/pools.ts) instead of holding on its own:
   * settle gives its unspent part back to that pool.
   */
  readonly pool?: { readonly pk: string; readonly sk: string };
  /**
   * The parts of shared scopes (an org, the platform) taken from their allowance pools (store/dynamodb/pools.ts)
   * instead of held on the request's own: settle gives each its unspent part back. `counters` lists them too.
   */
  readonly shared?: ReadonlyArray<{
    readonly scope: ScopeId;
    readonly pool: { readonly pk: string; readonly sk: string };
    readonly counters: readonly CounterRef[];
  }>;
}

/**
 * The reservation of `input` as admitted: what it asked for, with where it is held (`held`: the expiry, the
 * hold's partition, and the lease, pool or velocity windows it rests on) and the rate states to report.
 */
export function reservationOf(
  input: ReserveInput,
  held: Pick<Reservation, 'rateStates' | 'expiresAt' | 'holdShard'> & Partial<Pick<Reservation, 'leaseId' | 'pool' | 'velocity' | 'limitedOnly'>>,
): Reservation {
  return {
    requestId: input.requestId,
    amount: input.amount,
    counters: input.counters,
    rateCharges: input.rateCharges,
    ...held,
    ...(input.loop ? { loop: input.loop } : {}),
  };
}

export interface SettleInput {
  readonly reservation: Reservation;
  /** The actual cost to add to every counter (0 on most failure paths). */
  readonly cost: MicroUsd;
  /** Actual tokens, to refund (or charge) the token bucket the difference from the estimate. */
  readonly actualTokens?: number;
  readonly usage: UsageRecord;
  /**
   * For the loop guard (when the reservation carries a loop check, settle counts the copy): 'failed' extends
   * the failure streak, 'succeeded' clears it, absent leaves it (the caller went away: says nothing).
   */
  readonly loopOutcome?: 'failed' | 'succeeded';
  /** With a 'failed' loopOutcome: the status the provider answered, kept on the loop item (lastStatus) for the refusal's message. */
  readonly loopStatus?: number;
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
   * and writes the usage record. A hold already reclaimed by the sweeper is not released twice: its estimated
   * charge is replaced by the actual cost once; a repeated settle changes nothing.
   */
  settle(input: SettleInput): Promise<void>;
  /** Current values of counters (platform shards are summed into one value per window). */
  readCounters(refs: readonly CounterRef[]): Promise<CounterValue[]>;
  /** Limits set explicitly (numbers only: windows marked unlimited are absent, as are unset ones). */
  getLimits(scopes: readonly ScopeId[]): Promise<Map<ScopeId, BudgetLimits>>;
  /** Limits as stored, with the explicit `none` marker (defaults apply to windows absent here). */
  getLimitSettings(scopes: readonly ScopeId[]): Promise<Map<ScopeId, StoredLimits>>;
  /** Per-key loop guard overrides (stored with the key's limits); keys without any are absent. */
  getLoopOverrides(keyIds: readonly string[]): Promise<Map<string, LoopOverrides>>;
  /** Sets (or, with `null` fields, removes) a key's loop guard overrides. */
  setLoopOverrides(keyId: string, overrides: { readonly maxRepeats?: number | null; readonly maxFailures?: number | null }): Promise<void>;
  /**
   * Sets one scope's limit for one window: an amount, `none` (explicitly unlimited: no default applies), or
   * `null` (not set: the default applies again).
   */
  setLimit(scope: ScopeId, window: Window, limit: MicroUsd | typeof UNLIMITED | null): Promise<void>;
  /**
   * Reclaims holds whose expiry has passed (a crashed invocation's, or one whose settle kept failing) and
   * charges each its full reservation: an estimated `abandoned` usage record that a late settle with real
   * usage replaces exactly once. Returns how many.
   */
  sweepExpired(now: number): Promise<number>;
  /**
   * For a request admitted against a budget lease of this instance (core/lease) and not settled yet: the
   * lease's slice (held on every counter of the request) and what its requests hold or spent of it, this
   * request's hold included. Undefined otherwise (and on ledgers without leases).
   */
  leaseUseOf?(requestId: string): LeaseUse | undefined;
}

/** How much of a lease's slice is taken (see Ledger.leaseUseOf). */
export interface LeaseUse {
  readonly slice: MicroUsd;
  readonly committed: MicroUsd;
}

/** What a lease's return puts into the ledger instead of its held amount (core/lease). */
export interface LeaseReturn {
  /** The lease's own reservation (its hold). */
  readonly reservation: Reservation;
  /** When the lease was taken and the context its hold was written with (to find the sweeper's record of it). */
  readonly reservedAt: number;
  readonly context: ReserveInput['context'];
  /** What the requests admitted against the lease cost, in all. */
  readonly cost: MicroUsd;
  /** Tokens they used (the token bucket is corrected to this), when known. */
  readonly usedTokens?: number;
  /** Requests admitted against it (the request bucket gets the rest back; counters count these). */
  readonly usedRequests: number;
}

/** The store's side of budget leases: per-request writes of a leased request, and the return of a lease. */
export interface LeaseStore {
  /**
   * Counts one copy for the loop guard (the reserve transaction's loop item, alone), exactly once under SDK
   * retries: answers the check marked with the copy (`copy`), which its {@link settleLoop} needs. Throws
   * LoopDetectedError.
   */
  countLoop(check: LoopCheck, requestId: string): Promise<LoopCheck>;
  /** Records the upstream outcome on the loop item, as settle does. */
  settleLoop(check: LoopCheck, outcome: 'failed' | 'succeeded' | undefined, status?: number): Promise<void>;
  /**
   * Counts a copy the loop guard did not count at admission, together with its outcome, in one write (a copy
   * whose body the instance had never seen: see core/lease), exactly once under SDK retries (marked by the
   * request id).
   */
  recordLoopCopy(check: LoopCheck, requestId: string, outcome: 'failed' | 'succeeded' | undefined, status?: number): Promise<void>;
  /** Writes usage records (in batches where the store is set to). */
  writeUsage(records: readonly UsageRecord[]): Promise<void>;
  /** Returns a lease (or corrects the sweeper's full charge of it), exactly once. */
  returnLease(input: LeaseReturn): Promise<void>;
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
  /**
   * One key's record of one request (newest records first, at most `maxScanned` read); undefined if none. The
   * key's user is where the record is kept (the key's principal knows it).
   */
  findRequest(q: { readonly keyId: string; readonly userId: string; readonly requestId: string; readonly maxScanned: number }): Promise<UsageRecord | undefined>;
  /** Every record in [from, to) across all callers (report by model); reads the day partitions. */
  queryAll(from: string, to: string): Promise<UsageRecord[]>;
}

// ---------------------------------------------------------------------------------------------------------
// Guardrails (issue 4): circuit breaker, loop guard, alerts, kill switch.

/** A circuit item checked by reserve: one per scope (the platform's is sharded like its counter). */
export interface CircuitRef {
  readonly scope: ScopeId;
  readonly shard?: number;
}

/** Why a circuit is open. */
export type CircuitCause = 'breaker' | 'escalation' | 'kill-switch' | 'velocity';

/** An open circuit: every request of the scope gets 429 `circuit_open` until `closesAt` or an ack. */
export interface CircuitState {
  readonly scope: ScopeId;
  readonly cause: CircuitCause;
  readonly openedAt: number;
  /** ms epoch when it closes by itself; absent = stays open until an operator acknowledges it. */
  readonly closesAt?: number;
  readonly reason: string;
}

/** Who acknowledged something, and why (admin CLI). */
export interface Acknowledgement {
  readonly by: string;
  readonly reason: string;
  readonly at: number;
}

export type AlertSeverity = 'warning' | 'critical';

/** One alert, as kept in the table, printed locally and published to the alerts topic. */
export interface Alert {
  readonly id: string;
  /** ms epoch */
  readonly at: number;
  /** e.g. `spend_warning`, `spend_critical`, `spend_escalation`, `loop_detected`, `circuit_reset`, `kill_switch`. */
  readonly type: string;
  readonly severity: AlertSeverity;
  readonly scope: ScopeId;
  readonly summary: string;
  readonly details: Readonly<Record<string, string | number | boolean>>;
}

export interface RecordAlertOptions {
  /** At most one alert per dedupe key and scope (e.g. `day#2026-11-23#warning`). */
  readonly dedupeKey: string;
  /** Expiry of the dedupe marker (ms epoch): the end of the window it is about, plus a margin. */
  readonly dedupeUntil: number;
  /** Alerts sharing a spacing key for the scope are at least `ms` apart (e.g. warnings: 6 h). */
  readonly spacing?: { readonly key: string; readonly ms: number };
  /** Opened together with the alert, in the same transaction. */
  readonly openCircuit?: CircuitState;
  /**
   * Queue the alert for the dispatcher (which publishes it to the alerts topic).
   * @default true (false when the caller publishes it itself)
   */
  readonly outbox?: boolean;
}

/** The kill switch's own record: what it did, and who resumed service. */
export interface KillSwitchState {
  readonly active: boolean;
  readonly activatedAt?: number;
  readonly budgetName?: string;
  readonly actualMicros?: number;
  readonly thresholdMicros?: number;
  /** Keys suspended by the kill switch in the current activation. */
  readonly suspendedKeys: number;
  /** False while (or if) the suspension pass did not finish; a repeated notification resumes it. */
  readonly completed: boolean;
  readonly resumed?: Acknowledgement & { readonly restoredKeys: number };
}

/**
 * The guardrails' state in the budgets table (so reserve can check circuits and loop counters in its one
 * transaction). Alerts written here are also queued in an outbox that the alert dispatcher publishes.
 */
export interface GuardrailStore {
  /**
   * Records an alert once per (scope, dedupe key), honouring spacing; with `openCircuit`, opens that circuit
   * atomically with it (never shortening a longer-open circuit). Returns whether the alert was recorded.
   */
  recordAlert(alert: Alert, options: RecordAlertOptions): Promise<boolean>;
  /** Alerts recorded since `since` (ms epoch), oldest first. */
  listAlerts(since: number): Promise<Alert[]>;
  /** Alerts not yet published (the outbox), oldest first. */
  pendingAlerts(limit: number): Promise<Alert[]>;
  markPublished(alert: Alert): Promise<void>;
  /** Opens (or extends) a circuit; false when an equal or longer one is already open. */
  openCircuit(state: CircuitState): Promise<boolean>;
  /** Circuits open at `now`. */
  listCircuits(now: number): Promise<CircuitState[]>;
  /** Closes a circuit (and clears its recent velocity windows) and records who and why; false when none was open. */
  resetCircuit(scope: ScopeId, ack: Acknowledgement): Promise<boolean>;
  /**
   * Counts a velocity trip of `scope` on day `day` in velocity window `window`: the day's trip count, or
   * undefined when this window's trip was counted already (so racing refusals count once).
   */
  countVelocityTrip(scope: ScopeId, day: string, window: number): Promise<number | undefined>;
  getKillSwitch(): Promise<KillSwitchState>;
  /**
   * Marks the kill switch active; 'activated' the first time, 'incomplete' when an earlier activation did not
   * finish suspending (so the caller resumes it), 'already-active' when it did.
   */
  activateKillSwitch(info: { readonly at: number; readonly budgetName: string; readonly actualMicros: number; readonly thresholdMicros: number }): Promise<'activated' | 'incomplete' | 'already-active'>;
  recordKillSwitchProgress(progress: { readonly suspendedKeys: number; readonly completed: boolean }): Promise<void>;
  /** Marks the kill switch inactive with the acknowledgement; false when it was not active. */
  deactivateKillSwitch(ack: Acknowledgement, restoredKeys: number): Promise<boolean>;
}
