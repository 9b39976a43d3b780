/**
 * Busy scopes: a key is pooled, and a shared scope (an org, the platform) admitted through its allowance pools,
 * while it is marked busy. A mark comes from a reserve transaction's conflict on the scope's items or from a
 * pool's refill; it is written on the scope's limits item (`poolUntil`), where every instance's limits read
 * finds it. Also the helpers that cut a request into its shared scopes' parts and its own.
 */
import { type CancellationReason, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import type { Reservation, ReserveInput } from '../../core/stores';
import type { ScopeId } from '../../core/types';
import { LedgerCore, MAX_HINTS } from './ledger-core';

/** How long a shared scope stays near its limit after a grant was refused by its budget (ms). */
export const NEAR_LIMIT_MS = 60_000;
/** Allowance pools a shared scope near its limit admits through (of its `shards`). */
export const NEAR_LIMIT_SHARDS = 4;

/** Which scopes this instance admits through pools, learnt from conflicts and from the marks other instances wrote. */
export class BusyScopes {
  /** Scopes busy until when (from conflicts seen here and marks read): a key's pools, a shared scope's allowances. */
  private readonly busyScopes = new Map<ScopeId, number>();
  /** When this instance last wrote a scope's busy mark. */
  private readonly markedAt = new Map<ScopeId, number>();
  /** Shared scopes near their limit until when (see markNear). */
  private readonly nearScopes = new Map<ScopeId, number>();

  constructor(
    private readonly core: LedgerCore,
    private readonly options: { readonly markMs: number; readonly pooling: boolean; readonly sharing: boolean },
  ) {}

  private get markMs(): number {
    return this.options.markMs;
  }

  private get pooling(): boolean {
    return this.options.pooling;
  }

  private get sharing(): boolean {
    return this.options.sharing;
  }

  /** Marks a key pooled (here at once; for every instance through its limits item, at most twice a mark's life). */
  markPooled(keyId: string, now: number): void {
    if (this.pooling) this.markBusy(`key:${keyId}`, now);
  }

  /**
   * Marks a scope busy: a key's requests then go through its pools, a shared scope's (org, platform) through
   * its allowance pools. Here at once; for every instance through the scope's limits item (`poolUntil`), which
   * every limits read fetches, written at most twice a mark's life.
   */
  markBusy(scope: ScopeId, now: number): void {
    const until = now + this.markMs;
    this.busyScopes.set(scope, until);
    if (this.busyScopes.size > MAX_HINTS) this.busyScopes.delete(this.busyScopes.keys().next().value as ScopeId);
    const last = this.markedAt.get(scope);
    if (last !== undefined && now - last < this.markMs / 2 && now >= last) return;
    this.markedAt.set(scope, now);
    if (this.markedAt.size > MAX_HINTS) this.markedAt.delete(this.markedAt.keys().next().value as ScopeId);
    void this.core.client
      .send(
        new UpdateItemCommand({
          TableName: this.core.budgets,
          Key: marshall({ pk: `limit#${scope}`, sk: 'limits' }),
          UpdateExpression: 'SET poolUntil = :until',
          ConditionExpression: 'attribute_not_exists(poolUntil) OR poolUntil < :until',
          ExpressionAttributeValues: { ':until': { N: String(until) } },
        }),
      )
      .catch(() => undefined); // a hint: other instances find the scope busy on their own
  }

  isBusy(scope: ScopeId, now: number): boolean {
    return (this.busyScopes.get(scope) ?? 0) > now;
  }

  /**
   * Marks a shared scope near its limit (a grant of its pools was refused by its budget): its requests then use
   * only a few of its allowance pools ({@link NEAR_LIMIT_SHARDS}), so the little that is left is not spread as
   * idle room over dozens of pools. Here at once; for every instance through the limits item (`nearUntil`).
   */
  markNear(scope: ScopeId, now: number): void {
    const until = now + NEAR_LIMIT_MS;
    const last = this.nearScopes.get(scope);
    this.nearScopes.set(scope, until);
    if (this.nearScopes.size > MAX_HINTS) this.nearScopes.delete(this.nearScopes.keys().next().value as ScopeId);
    // Written at most twice a mark's life: while the mark known here has more than half of it left, not again.
    if (last !== undefined && last > now + NEAR_LIMIT_MS / 2) return;
    void this.core.client
      .send(
        new UpdateItemCommand({
          TableName: this.core.budgets,
          Key: marshall({ pk: `limit#${scope}`, sk: 'limits' }),
          UpdateExpression: 'SET nearUntil = :until',
          ConditionExpression: 'attribute_not_exists(nearUntil) OR nearUntil < :half',
          ExpressionAttributeValues: { ':until': { N: String(until) }, ':half': { N: String(now + NEAR_LIMIT_MS / 2) } },
        }),
      )
      .catch(() => undefined); // a hint: other instances find it on their own
  }

  isNear(scope: ScopeId, now: number): boolean {
    return (this.nearScopes.get(scope) ?? 0) > now;
  }

  /** Learns the busy and near-the-limit marks on the limits items a read returned. */
  learnMarks(values: ReadonlyArray<Record<string, unknown>>): void {
    for (const value of values) {
      const pk = String(value.pk);
      if (!pk.startsWith('limit#')) continue;
      const scope = pk.slice('limit#'.length) as ScopeId;
      if (typeof value.nearUntil === 'number' && value.nearUntil > (this.nearScopes.get(scope) ?? 0)) this.nearScopes.set(scope, value.nearUntil);
      if (typeof value.poolUntil !== 'number') continue;
      if (value.poolUntil > (this.busyScopes.get(scope) ?? 0)) this.busyScopes.set(scope, value.poolUntil);
    }
  }

  /** What a reserve's transaction conflicts say is busy: a shared scope's items, else the key's. */
  conflicted(input: ReserveInput, itemsBefore: number, reasons: readonly CancellationReason[]): void {
    let shared = false;
    for (const [j, ref] of input.counters.entries()) {
      if (reasons[itemsBefore + j]?.Code === 'TransactionConflict' && isShared(ref.scope) && this.sharing) {
        this.markBusy(ref.scope, input.now);
        shared = true;
      }
    }
    if (!shared) this.markPooled(input.context.keyId, input.now);
  }
}

/** A shared scope's part of a reservation: the pool it was taken from and its counters (as the pool keeps them). */
export type SharedTake = NonNullable<Reservation['shared']>[number];

/** Scopes whose requests are many users' (an org, the platform): admitted through allowance pools when on. */
export function isShared(scope: ScopeId): boolean {
  return scope === 'platform' || scope.startsWith('org:');
}

/**
 * The part of a request that one allowance pool takes (no rate, loop or velocity charges): the counters and
 * circuits of `scopes`, its first (an org, or the platform alone) naming the pool group (poolGroupKey reads
 * keyId). A busy org's part holds the platform's counters too (ledger.ts sharedGroups): one take a request.
 */
export function sharedPart(input: ReserveInput, ...scopes: ScopeId[]): ReserveInput {
  const of = new Set(scopes);
  return {
    requestId: input.requestId,
    now: input.now,
    expiresAt: input.expiresAt,
    amount: input.amount,
    counters: input.counters.filter((c) => of.has(c.scope)),
    rateCharges: [],
    ...(input.circuits ? { circuits: input.circuits.filter((c) => of.has(c.scope)) } : {}),
    context: { ...input.context, keyId: scopes[0]! },
  };
}

/**
 * The scopes of a busy org's allowance pools when they hold the platform's part too (ledger.ts sharedGroups): the
 * request's org and the platform, if it has counters of both.
 */
export function orgWithPlatform(input: ReserveInput): [ScopeId, ScopeId] | undefined {
  const org = input.counters.find((c) => c.scope.startsWith('org:'))?.scope;
  return org && input.counters.some((c) => c.scope === 'platform') ? [org, 'platform'] : undefined;
}

/** The scopes a shared take holds (its counters'): an org's take may hold the platform's too. */
export function takenScopes(takes: readonly SharedTake[] | undefined): Set<ScopeId> {
  return new Set((takes ?? []).flatMap((t) => [t.scope, ...t.counters.map((c) => c.scope)]));
}

/** The reservation of one shared take, as its pool settles it. */
export function sharedReservation(source: Pick<Reservation, 'requestId' | 'amount' | 'expiresAt'>, take: SharedTake): Reservation {
  return { requestId: source.requestId, amount: source.amount, counters: take.counters, rateCharges: [], rateStates: [], expiresAt: source.expiresAt, holdShard: 0, pool: take.pool };
}

/** A reservation without its shared takes: what the request holds on its own. */
export function ownPart(reservation: Reservation): Reservation {
  const shared = takenScopes(reservation.shared);
  const { shared: _shared, ...own } = reservation;
  return { ...own, counters: reservation.counters.filter((c) => !shared.has(c.scope)) };
}
