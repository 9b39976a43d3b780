/**
 * The sweeper's release of a pool's grants once the pool's epoch and grace are over: the pool closes, its room
 * goes back to the counters, takes never settled stay charged (each with an `abandoned` record its late settle
 * replaces), all in one transaction conditioned on the pool item as read.
 */
import { PutItemCommand, type TransactWriteItem } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { StoreUnavailableError } from '../../core/errors';
import type { MicroUsd } from '../../core/money';
import type { UsageRecord } from '../../core/types';
import { errorName, translateError } from './client';
import { abandonedTake, grantNames, type Item, num, parseMarker, VOID_GRANT } from './pool-markers';
import type { GrantHold, ScopePools } from './pools';

/** Releases pools' grants (the sweeper). */
export class PoolRelease {
  constructor(private readonly pools: ScopePools) {}

  /**
   * The sweeper's release of one grant once its pool's epoch and grace are over, in ONE transaction with a
   * condition on the pool item as read (so a give-back meanwhile makes it read again, and a crash anywhere
   * leaves either nothing done or everything):
   *
   *   grant never reached the room (its claimer died) → the pool records it void; counters get it all back
   *   otherwise → the pool closes; room left R: refund min(R, grant) (R < 0, a debt of overshoots: all of it
   *               charged here); counters: reserved −grant, spent grant − refund, requests counted so far
   *   takes still marked (never settled) → charged; each gets an `abandoned` record (written first, only where
   *               no record exists) that its late settle replaces; one whose real record exists is settled here
   *
   * False when the hold vanished (released before). Throws StoreUnavailableError to leave it for the next sweep.
   */
  async release(hold: GrantHold, now: number): Promise<boolean> {
    for (let attempt = 0; attempt < 8; attempt++) {
      const item = await this.pools.readConsistent(hold.pool);
      const holdDelete: TransactWriteItem = {
        Delete: { TableName: this.pools.host.table, Key: marshall({ pk: hold.pk, sk: hold.sk }), ConditionExpression: 'attribute_exists(pk)' },
      };
      const items: TransactWriteItem[] = [holdDelete];
      let cost: MicroUsd;
      // The grant's marker as this layout names it, or as the one before did (a pool of an earlier deploy).
      const [compact, legacy] = grantNames(hold.requestId);
      const grantAttr = item?.[compact] === undefined && item?.[legacy] !== undefined ? legacy : compact;
      if (!item || item[grantAttr] === undefined) {
        // Never added to the room: nothing of it was taken. The pool records it void, so a late add cannot happen.
        cost = 0;
        items.push({
          Update: {
            TableName: this.pools.host.table,
            Key: marshall(hold.pool),
            UpdateExpression: 'SET #g = :void, closed = if_not_exists(closed, :now), #ttl = if_not_exists(#ttl, :ttl)',
            ConditionExpression: 'attribute_not_exists(#g)',
            ExpressionAttributeNames: { '#g': grantAttr, '#ttl': 'ttl' },
            ExpressionAttributeValues: marshall({ ':void': VOID_GRANT, ':now': now, ':ttl': this.pools.ttlOf(hold.pool) }),
          },
        });
        items.push(...this.pools.host.heldCounterItems(hold.counters, { committed: -hold.amount, reserved: -hold.amount, spent: 0, requests: 0 }));
      } else {
        const room = num(item.room);
        const refund = room >= 0 ? Math.min(room, hold.amount) : room;
        // Takes never settled: charged with the grants; their records are written first (see above).
        const settledHere = await this.recordUnsettled(hold, item, now);
        const extra = settledHere.reduce((sum, t) => sum + t.refund, 0);
        const counted = num(item.requests);
        const requests = counted - num(item.requestsCounted) + settledHere.length;
        cost = hold.amount - refund - extra;
        const names: Record<string, string> = {};
        const removes = settledHere.map((t, i) => {
          names[`#m${i}`] = t.marker;
          return `#m${i}`;
        });
        const conditions = [
          item.room === undefined ? 'attribute_not_exists(room)' : 'room = :room',
          item.requestsCounted === undefined ? 'attribute_not_exists(requestsCounted)' : 'requestsCounted = :was',
          ...removes.map((n) => `attribute_exists(${n})`),
        ];
        items.push({
          Update: {
            TableName: this.pools.host.table,
            Key: marshall(hold.pool),
            UpdateExpression: `SET closed = if_not_exists(closed, :now), room = :left, requestsCounted = :counted${removes.length ? ` REMOVE ${removes.join(', ')}` : ''}`,
            ConditionExpression: conditions.join(' AND '),
            ...(removes.length ? { ExpressionAttributeNames: names } : {}),
            ExpressionAttributeValues: marshall({
              ':now': now,
              ':left': room - refund,
              ':counted': counted,
              ...(item.room === undefined ? {} : { ':room': room }),
              ...(item.requestsCounted === undefined ? {} : { ':was': num(item.requestsCounted) }),
            }),
          },
        });
        items.push(...this.pools.host.heldCounterItems(hold.counters, { committed: -(refund + extra), reserved: -hold.amount, spent: cost, requests }));
      }
      items.push(...this.pools.host.velocityItems(hold.grant.velocity.map((v) => ({ ...v, admittedMicros: hold.amount })), cost));
      const reasons = await this.pools.host.transact(items);
      if (!reasons) return true;
      if (reasons[0]?.Code === 'ConditionalCheckFailed') return false;
      if (reasons[1]?.Code === 'ConditionalCheckFailed') continue; // the pool changed meanwhile: read it again
      throw new Error(`DynamoDB cancelled a pool release unexpectedly (reasons: ${reasons.map((r) => r.Code ?? 'None').join(',')})`);
    }
    throw new StoreUnavailableError('A pool is still being written to; its release waits for the next sweep.', { code: 'store_contention' });
  }

  /**
   * The sweeper's records of a pool's takes never settled (a request still running, or whose instance died):
   * an `abandoned` record for the amount taken, written only where the request has none. Returns the takes
   * whose own record exists already (their settle stopped between the record and the give-back): the release
   * settles them, giving back what their record did not spend. A shared pool's takes have their record from
   * the request's own hold; a lease's, from the lease.
   */
  async recordUnsettled(hold: GrantHold, item: Record<string, unknown>, now: number): Promise<Array<{ marker: string; refund: MicroUsd }>> {
    if (this.pools.role === 'shared') return [];
    const settled: Array<{ marker: string; refund: MicroUsd }> = [];
    const epochStart = this.pools.startOf(hold.pool.pk, Number(hold.pool.sk.slice(1)));
    for (const [name, value] of Object.entries(item)) {
      const take = parseMarker(name, value, item, epochStart);
      if (!take) continue;
      const record: UsageRecord = abandonedTake(hold.context, take, now);
      try {
        await this.pools.host.client.send(
          new PutItemCommand({
            TableName: this.pools.host.usageTable,
            Item: this.pools.host.usageItem(record),
            ConditionExpression: 'attribute_not_exists(pk)',
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
        );
      } catch (err) {
        if (errorName(err) !== 'ConditionalCheckFailedException') throw translateError(err);
        const old = (err as { Item?: Item }).Item;
        const existing = old ? unmarshall(old) : undefined;
        if (take.lease || !existing || existing.outcome === 'abandoned') continue;
        settled.push({ marker: name, refund: take.amount - num(existing.costMicros) });
      }
    }
    return settled;
  }
}
