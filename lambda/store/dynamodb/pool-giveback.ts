/**
 * A take's give-back (settle, lease return, cancel): its unspent part and units go back to its pool exactly
 * once (the take's marker is removed in the same write); an overshoot past the room, or a pool closed
 * meanwhile, corrects the counters directly in one transaction conditioned on the marker.
 */
import { type TransactWriteItem, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { StoreUnavailableError } from '../../core/errors';
import type { MicroUsd } from '../../core/money';
import type { RateCharge, Reservation } from '../../core/stores';
import { errorName, translateError } from './client';
import { type Item, num, unitAttr } from './pool-markers';
import type { PoolRef, ScopePools } from './pools';

/** Gives takes back to their pool (or to the counters), exactly once. */
export class PoolGiveBack {
  constructor(private readonly pools: ScopePools) {}

  /**
   * Gives a settled take's unspent part (and units) back to its pool, exactly once: the take's marker is removed
   * in the same write, so a retried give-back whose first answer was lost finds nothing to do.
   *
   *   pool open                 → ONE UpdateItem: room += amount − cost, REMOVE marker   IF marker AND open
   *                               (an overshoot, cost > amount, only while the room covers it)
   *   overshoot past the room   → ONE transaction: pool REMOVE marker; every counter += cost − amount
   *   pool closed (released)    → ONE transaction: pool REMOVE marker; every counter += cost − amount, requests
   *                               (and, for a lease or a refused take, the sweeper's `abandoned` record deleted)
   *
   * Either way the counters hold at least what was spent at once (grants cover the room an overshoot used), so
   * the overshoot circuit, which reads them, sees it; the take's own amount stays in the grants.
   */
  async giveBack(
    reservation: Reservation,
    pool: PoolRef,
    back: {
      readonly cost: MicroUsd;
      readonly requests: number;
      readonly units: Record<RateCharge['dimension'], number>;
      /** The sweeper's record of this take, deleted if the pool closed first (a lease or a refused take has no own record). */
      readonly forget?: Item;
    },
  ): Promise<void> {
    const marker = this.pools.markerName(reservation.requestId);
    const refund = reservation.amount - back.cost;
    let closed: boolean | undefined;
    let roomSeen: number | undefined;
    // An overshoot is paid from the pool's room while it has enough (that money is charged already); past
    // that, straight to the counters (below).
    const values: Record<string, number> = { ':back': refund, ':cost': back.cost, ':n': back.requests };
    const adds = ['room :back', 'given :back', 'spent :cost', 'requests :n'];
    for (const c of reservation.rateCharges) {
      const n = back.units[c.dimension];
      if (c.amount <= 0 || !n) continue;
      const attr = unitAttr(c.dimension);
      values[`:${attr}`] = n;
      adds.push(`${attr} :${attr}`);
    }
    const conditions = ['attribute_exists(#t)', 'attribute_not_exists(closed)'];
    if (refund < 0) {
      values[':over'] = -refund;
      conditions.push('room >= :over');
    }
    try {
      await this.pools.send(
        new UpdateItemCommand({
          TableName: this.pools.host.table,
          Key: marshall(pool),
          UpdateExpression: `ADD ${adds.join(', ')} REMOVE #t`,
          ConditionExpression: conditions.join(' AND '),
          ExpressionAttributeNames: { '#t': marker },
          ExpressionAttributeValues: marshall(values),
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      return;
    } catch (err) {
      if (errorName(err) !== 'ConditionalCheckFailedException') throw translateError(err);
      const old = (err as { Item?: Item }).Item;
      const value = old ? unmarshall(old) : undefined;
      if (value?.[marker] === undefined) return; // given back before (a retry), or released with it settled
      closed = value.closed !== undefined;
      if (!closed && refund < 0) roomSeen = num(value.room);
    }
    await this.settleDirect(reservation, pool, back, closed, roomSeen);
  }

  /**
   * The transaction of {@link giveBack} for an overshoot or a closed pool; the marker makes it happen once. An
   * overshoot past an open pool's room first empties that room (charged already, conditioned on the room as read)
   * and charges only the rest to the counters: the shard is then dry, and its refill checks the limit against
   * counters that hold the overshoot, so each shard passes a limit by at most one request's overshoot.
   */
  async settleDirect(
    reservation: Reservation,
    pool: PoolRef,
    back: { readonly cost: MicroUsd; readonly requests: number; readonly forget?: Item },
    closedSeen: boolean | undefined,
    roomSeen?: number,
  ): Promise<void> {
    const marker = this.pools.markerName(reservation.requestId);
    const delta = back.cost - reservation.amount;
    let closed = closedSeen ?? false;
    let room = roomSeen;
    for (let attempt = 0; attempt < 4; attempt++) {
      // What of the overshoot the open pool's room pays (never below zero: a debt is the release's to charge).
      const fromRoom = !closed && delta > 0 && room !== undefined ? Math.max(0, Math.min(room, delta)) : 0;
      const values: Record<string, number> = closed ? {} : { ':cost': back.cost, ':n': back.requests };
      let update = closed ? 'REMOVE #t' : 'ADD spent :cost, requests :n REMOVE #t';
      let condition = `attribute_exists(#t) AND ${closed ? 'attribute_exists(closed)' : 'attribute_not_exists(closed)'}`;
      if (!closed && room !== undefined && delta > 0) {
        values[':seen'] = room;
        condition += ' AND room = :seen';
        if (fromRoom > 0) {
          values[':used'] = -fromRoom;
          update = 'ADD spent :cost, requests :n, room :used, given :used REMOVE #t';
        }
      }
      if (!closed && delta - fromRoom !== 0) {
        // What the counters get here directly is not the grants' to cover: a reclaim (pool-reclaim.ts) moves only
        // the pool's `spent` less this `direct` part to the counters.
        values[':direct'] = delta - fromRoom;
        update = update.replace('ADD ', 'ADD direct :direct, ');
      }
      const items: TransactWriteItem[] = [
        {
          Update: {
            TableName: this.pools.host.table,
            Key: marshall(pool),
            // Open: the pool counts the request (the release adds it to the counters); closed: the counters do.
            UpdateExpression: update,
            ConditionExpression: condition,
            ExpressionAttributeNames: { '#t': marker },
            ...(Object.keys(values).length ? { ExpressionAttributeValues: marshall(values) } : {}),
          },
        },
        ...this.pools.host.counterItems(reservation.counters, { committed: delta - fromRoom, spent: delta - fromRoom, requests: closed ? back.requests : 0 }),
      ];
      if (closed && back.forget) {
        items.push({
          Delete: {
            TableName: this.pools.host.usageTable,
            Key: back.forget,
            ConditionExpression: 'attribute_not_exists(pk) OR outcome = :abandoned',
            ExpressionAttributeValues: { ':abandoned': { S: 'abandoned' } },
          },
        });
      }
      const reasons = await this.pools.host.transact(items);
      if (!reasons) return;
      if (reasons[0]?.Code !== 'ConditionalCheckFailed') {
        throw new Error(`DynamoDB cancelled a pool settle unexpectedly (reasons: ${reasons.map((r) => r.Code ?? 'None').join(',')})`);
      }
      const item = await this.pools.readConsistent(pool);
      if (item?.[marker] === undefined) return; // done before, or settled by the release
      closed = item.closed !== undefined;
      if (room !== undefined) room = num(item.room);
    }
    throw new StoreUnavailableError('The gateway cannot settle this request right now; try again shortly.', { code: 'store_contention' });
  }
}
