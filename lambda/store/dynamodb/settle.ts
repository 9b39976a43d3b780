/**
 * Settle of a request that holds on its own (a pooled request's part goes back to its pool):
 *
 *   settle:   [hold delete] [counter updates…] [token bucket adjust] [loop streak] [velocity fix…] [usage put]
 *             └─ hold already reclaimed by the sweeper? → settleLate
 *   counter updates: reserved on (items.ts reservesOn)  committed += cost − amount, reserved −= amount, spent += cost
 *                    left to settle (no limit)           committed += cost,                           spent += cost
 *                    (requests +1 on each; either way the counter ends with the cost in `committed` and `spent`)
 *   late settle after a sweep: [counters += cost − amount] [usage put replacing 'abandoned']   (exactly once)
 *
 * Every path is exactly once: the hold's delete, or the `abandoned` record's replacement, is conditional.
 */
import type { TransactWriteItem } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import type { Reservation, SettleInput } from '../../core/stores';
import { unexpectedCancellation } from './denials';
import { holdKey, reservesOn } from './items';
import { assertTransactionSize, LedgerCore } from './ledger-core';
import { LedgerItems } from './ledger-items';
import { LoopCounts } from './loop-counts';
import { ScopePools } from './pools';
import { usageItem } from './usage-store';
import { UsageWrites } from './usage-writes';

/** Settles holds and pooled requests' own parts. */
export class HoldSettle {
  constructor(
    private readonly core: LedgerCore,
    private readonly items: LedgerItems,
    private readonly loops: LoopCounts,
    private readonly records: UsageWrites,
    private readonly pools: ScopePools,
  ) {}

  async settleOwn(input: SettleInput): Promise<void> {
    const { reservation, cost } = input;
    if (reservation.pool) {
      // The record and the loop outcome first (a failure here is retried by the caller, harmlessly); the pool
      // gets its part back last and once: if that fails, the request stays charged its whole amount.
      const loop = reservation.loop;
      await Promise.all([this.records.writeUsage([input.usage]), ...(loop ? [this.loops.settleLoop(loop, input.loopOutcome, input.loopStatus)] : [])]);
      await this.pools.settle(input, reservation.pool);
      return;
    }
    // A copy the loop guard counted on its own (ledger.ts reserveOwn) settles on its own, first, in one single write
    // that a retried settle repeats harmlessly; one counted in the reserve transaction settles in this one.
    const loop = reservation.loop;
    if (loop?.copy) await this.loops.settleLoop(loop, input.loopOutcome, input.loopStatus);
    const bucketAdjustments = [...this.items.tokenAdjustments(input), ...this.items.loopStreak(input), ...this.items.velocitySettle(input)];
    const usagePut = (): TransactWriteItem => ({
      Put: { TableName: this.core.usage, Item: usageItem(input.usage, { retentionDays: this.core.usageRetentionDays }) },
    });

    const settleItems: TransactWriteItem[] = [
      this.holdDelete(reservation),
      ...reservation.counters.map((ref) =>
        reservesOn(ref, reservation.limitedOnly)
          ? this.items.counterUpdate(ref, { committed: cost - reservation.amount, reserved: -reservation.amount, spent: cost, requests: 1 })
          : this.items.counterUpdate(ref, { committed: cost, spent: cost, requests: 1 }),
      ),
      ...bucketAdjustments,
      usagePut(),
    ];
    assertTransactionSize(settleItems.length, 'settle');
    const reasons = await this.core.transact(settleItems);
    if (!reasons) return;
    if (reasons[0]?.Code !== 'ConditionalCheckFailed') throw unexpectedCancellation(reasons);

    return this.settleLate(input, bucketAdjustments);
  }

  /**
   * Takes back a reservation that was refused after its reserve committed (the loop guard, counting the copy in
   * parallel, refused it): ONE transaction, conditioned on the hold, that deletes the hold and gives the counters,
   * rate buckets and velocity windows back what the reserve added; no usage record (nothing was forwarded). A hold
   * already gone (a retry of this, or swept) changes nothing more: what the sweeper charged stays charged.
   */
  async cancelHeld(reservation: Reservation): Promise<void> {
    const nowUs = this.core.clock.now() * 1000;
    const items: TransactWriteItem[] = [
      this.holdDelete(reservation),
      // Only the counters the reserve wrote (a window without a limit is written at settle alone: items.ts reservesOn).
      ...reservation.counters
        .filter((ref) => reservesOn(ref, reservation.limitedOnly))
        .map((ref) => this.items.counterUpdate(ref, { committed: -reservation.amount, reserved: -reservation.amount, spent: 0, requests: 0 })),
      ...reservation.rateCharges.filter((c) => c.amount > 0).flatMap((c) => this.items.bucketShift(c, -c.amount, nowUs)),
      ...this.items.velocitySettle({ reservation, cost: 0 } as SettleInput),
    ];
    const reasons = await this.core.transact(items);
    if (reasons && reasons[0]?.Code !== 'ConditionalCheckFailed') throw unexpectedCancellation(reasons);
  }

  /** The hold's delete, conditioned on its being there: what makes a settle or a take-back happen once. */
  private holdDelete(reservation: Reservation): TransactWriteItem {
    const hold = holdKey(reservation.requestId, reservation.expiresAt);
    return { Delete: { TableName: this.core.budgets, Key: marshall({ pk: hold.pk, sk: hold.sk }), ConditionExpression: 'attribute_exists(pk)' } };
  }

  /**
   * Settle after the hold is gone: the sweeper reclaimed it (charging its full amount and writing an estimated
   * 'abandoned' record), or this request was settled already (a retried settle). Exactly one of:
   *
   *   'abandoned' record for the held amount  → [counters += cost − held] [usage put replacing it]
   *   no record at all                        → [counters += cost, requests +1] [usage put IF new]
   *   any other record                        → settled before: nothing changes
   */
  async settleLate(input: SettleInput, bucketAdjustments: readonly TransactWriteItem[]): Promise<void> {
    const { reservation, cost } = input;
    const held = reservation.amount;
    const replace: TransactWriteItem[] = [
      ...reservation.counters.map((ref) => this.items.counterUpdate(ref, { committed: cost - held, spent: cost - held, requests: 0 })),
      ...bucketAdjustments,
      {
        Put: {
          TableName: this.core.usage,
          Item: usageItem(input.usage, { retentionDays: this.core.usageRetentionDays }),
          ConditionExpression: 'outcome = :abandoned AND costMicros = :held',
          ExpressionAttributeValues: { ':abandoned': { S: 'abandoned' }, ':held': { N: String(held) } },
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        },
      },
    ];
    const reasons = await this.core.transact(replace);
    if (!reasons) return;
    const usageReason = reasons[replace.length - 1];
    if (usageReason?.Code !== 'ConditionalCheckFailed') throw unexpectedCancellation(reasons);
    if (usageReason.Item !== undefined && Object.keys(usageReason.Item).length > 0) return; // settled before

    const fresh: TransactWriteItem[] = [
      ...reservation.counters.map((ref) => this.items.counterUpdate(ref, { committed: cost, spent: cost, requests: 1 })),
      ...bucketAdjustments,
      {
        Put: {
          TableName: this.core.usage,
          Item: usageItem(input.usage, { retentionDays: this.core.usageRetentionDays }),
          ConditionExpression: 'attribute_not_exists(pk)',
        },
      },
    ];
    const freshReasons = await this.core.transact(fresh);
    if (!freshReasons) return;
    if (freshReasons[fresh.length - 1]?.Code === 'ConditionalCheckFailed') return; // settled meanwhile
    throw unexpectedCancellation(freshReasons);
  }
}
