/**
 * Budget leases' returns (core/lease): a lease is a hold taken by reserve (or a take from a pool); its return
 * charges the counters what the lease's requests cost, gives the rate buckets back the units not used and
 * corrects the velocity windows, exactly once (after a sweep: the `abandoned` record goes with the correction).
 */
import type { TransactWriteItem } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import type { LeaseReturn, SettleInput } from '../../core/stores';
import { unexpectedCancellation } from './denials';
import { abandonedRecord, holdKey, storedHoldOf } from './items';
import { assertTransactionSize, LedgerCore } from './ledger-core';
import { LedgerItems } from './ledger-items';
import { ScopePools } from './pools';
import { usageItem } from './usage-store';

/** Returns budget leases to the counters or to their pool. */
export class LeaseReturns {
  constructor(
    private readonly core: LedgerCore,
    private readonly items: LedgerItems,
    private readonly pools: ScopePools,
  ) {}

  async returnOwnLease(input: LeaseReturn): Promise<void> {
    const { reservation, cost } = input;
    if (reservation.pool) return this.pools.returnLease(input, reservation.pool);
    const hold = holdKey(reservation.requestId, reservation.expiresAt);
    const settleLike: SettleInput = {
      reservation,
      cost,
      ...(input.usedTokens === undefined ? {} : { actualTokens: input.usedTokens }),
      usage: undefined as never,
    };
    const adjustments = [...this.items.tokenAdjustments(settleLike), ...this.items.requestRefunds(reservation, input.usedRequests), ...this.items.velocitySettle(settleLike)];
    const items: TransactWriteItem[] = [
      { Delete: { TableName: this.core.budgets, Key: marshall({ pk: hold.pk, sk: hold.sk }), ConditionExpression: 'attribute_exists(pk)' } },
      ...reservation.counters.map((ref) =>
        this.items.counterUpdate(ref, { committed: cost - reservation.amount, reserved: -reservation.amount, spent: cost, requests: input.usedRequests }),
      ),
      ...adjustments,
    ];
    assertTransactionSize(items.length, 'lease return');
    const reasons = await this.core.transact(items);
    if (!reasons) return;
    if (reasons[0]?.Code !== 'ConditionalCheckFailed') throw unexpectedCancellation(reasons);

    const marker = usageItem(abandonedRecord(storedHoldOf(reservation, input.reservedAt, input.context), reservation.expiresAt), {
      retentionDays: this.core.usageRetentionDays,
    });
    const late: TransactWriteItem[] = [
      ...reservation.counters.map((ref) =>
        this.items.counterUpdate(ref, { committed: cost - reservation.amount, spent: cost - reservation.amount, requests: input.usedRequests - 1 }),
      ),
      ...adjustments,
      {
        Delete: {
          TableName: this.core.usage,
          Key: { pk: marker.pk!, sk: marker.sk! },
          ConditionExpression: 'outcome = :abandoned AND costMicros = :held',
          ExpressionAttributeValues: { ':abandoned': { S: 'abandoned' }, ':held': { N: String(reservation.amount) } },
        },
      },
    ];
    const lateReasons = await this.core.transact(late);
    if (!lateReasons) return;
    if (lateReasons[late.length - 1]?.Code === 'ConditionalCheckFailed') return; // returned before
    throw unexpectedCancellation(lateReasons);
  }
}
