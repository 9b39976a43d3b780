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
import type { CounterDelta, GrantHold, ScopePools } from './pools';

/** Releases pools' grants (the sweeper). */
export class PoolRelease {
  constructor(private readonly pools: ScopePools) {}

  /**
   * The sweeper's release of a pool's grants once the pool's epoch and grace are over: every grant of one pool
   * item it found in ONE transaction, with a condition on the pool item as read (so a give-back meanwhile makes it
   * read again, and a crash anywhere leaves either nothing done or everything):
   *
   *   a grant never added to the room (its claimer died) → the pool records it void; counters get it all back
   *   the others → the pool closes; room left R: refund min(R, their sum), shared among them in turn (R < 0, a
   *               debt of overshoots: all of it charged here); counters: reserved −grant, spent grant − its
   *               refund, requests counted so far
   *   takes still marked (never settled) → charged; each gets an `abandoned` record (written first, only where
   *               no record exists) that its late settle replaces; one whose real record exists is settled here
   *
   * One transaction for a pool's grants (a quiet key's epoch has several): each counter and velocity window is
   * written once, not once a grant (pool-release writes were 18 units a grant, most of them counters).
   * Returns how many of the holds it released (a hold gone meanwhile was released before). Throws
   * StoreUnavailableError to leave them for the next sweep.
   */
  async release(holds: readonly GrantHold[], now: number): Promise<number> {
    const pool = holds[0]?.pool;
    if (!pool) return 0;
    for (let attempt = 0; attempt < 8; attempt++) {
      const item = await this.pools.readConsistent(pool);
      const items: TransactWriteItem[] = holds.map((hold) => ({
        Delete: { TableName: this.pools.host.table, Key: marshall({ pk: hold.pk, sk: hold.sk }), ConditionExpression: 'attribute_exists(pk)' },
      }));
      const counters: Array<{ counters: GrantHold['counters']; delta: CounterDelta }> = [];
      const velocity: Array<{ velocity: GrantHold['grant']['velocity']; cost: MicroUsd }> = [];
      const charge = (hold: GrantHold, refund: MicroUsd, extra: MicroUsd, requests: number, applied: boolean): void => {
        const cost = applied ? hold.amount - refund - extra : 0;
        const delta = applied ? { committed: -(refund + extra), reserved: -hold.amount, spent: cost, requests } : { committed: -hold.amount, reserved: -hold.amount, spent: 0, requests: 0 };
        counters.push({ counters: hold.counters, delta });
        velocity.push({ velocity: hold.grant.velocity.map((v) => ({ ...v, admittedMicros: hold.amount })), cost });
      };
      const names: Record<string, string> = { '#ttl': 'ttl' };
      const values: Record<string, unknown> = { ':now': now, ':ttl': this.pools.ttlOf(pool) };
      const sets = ['closed = if_not_exists(closed, :now)', '#ttl = if_not_exists(#ttl, :ttl)'];
      const conditions: string[] = [];
      const applied: GrantHold[] = [];
      for (const [i, hold] of holds.entries()) {
        // The grant's marker as this layout names it, or as the one before did (a pool of an earlier deploy).
        const [compact, legacy] = grantNames(hold.requestId);
        const attr = item?.[compact] === undefined && item?.[legacy] !== undefined ? legacy : compact;
        if (item && item[attr] !== undefined) {
          applied.push(hold);
          continue;
        }
        // Never added to the room: nothing of it was taken. The pool records it void, so a late add cannot happen.
        names[`#g${i}`] = attr;
        values[':void'] = VOID_GRANT;
        sets.push(`#g${i} = :void`);
        conditions.push(`attribute_not_exists(#g${i})`);
        charge(hold, 0, 0, 0, false);
      }
      const removes: string[] = [];
      if (item && applied.length) {
        const room = num(item.room);
        // Takes never settled: charged with the grants; their records are written first (see above).
        const settledHere = await this.recordUnsettled(applied[0]!, item, now);
        const extra = settledHere.reduce((sum, t) => sum + t.refund, 0);
        const counted = num(item.requests);
        const requests = counted - num(item.requestsCounted) + settledHere.length;
        let left = room;
        for (const [j, hold] of applied.entries()) {
          const refund = room >= 0 ? Math.min(left, hold.amount) : j === 0 ? room : 0;
          if (room >= 0) left -= refund;
          charge(hold, refund, j === 0 ? extra : 0, j === 0 ? requests : 0, true);
        }
        for (const [i, t] of settledHere.entries()) {
          names[`#m${i}`] = t.marker;
          removes.push(`#m${i}`);
          conditions.push(`attribute_exists(#m${i})`);
        }
        sets.push('room = :left', 'requestsCounted = :counted');
        values[':left'] = room >= 0 ? left : 0;
        values[':counted'] = counted;
        conditions.push(item.room === undefined ? 'attribute_not_exists(room)' : 'room = :room');
        conditions.push(item.requestsCounted === undefined ? 'attribute_not_exists(requestsCounted)' : 'requestsCounted = :was');
        if (item.room !== undefined) values[':room'] = room;
        if (item.requestsCounted !== undefined) values[':was'] = num(item.requestsCounted);
      }
      items.push({
        Update: {
          TableName: this.pools.host.table,
          Key: marshall(pool),
          UpdateExpression: `SET ${sets.join(', ')}${removes.length ? ` REMOVE ${removes.join(', ')}` : ''}`,
          ...(conditions.length ? { ConditionExpression: conditions.join(' AND ') } : {}),
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: marshall(values),
        },
      });
      items.push(...this.pools.host.heldCounterItems(counters), ...this.pools.host.velocityItems(velocity));
      const reasons = await this.pools.host.transact(items);
      if (!reasons) return holds.length;
      if (reasons.slice(0, holds.length).some((r) => r?.Code === 'ConditionalCheckFailed')) {
        // A hold vanished (released before): the others are released one by one.
        if (holds.length === 1) return 0;
        let released = 0;
        for (const hold of holds) released += await this.release([hold], now);
        return released;
      }
      if (reasons[holds.length]?.Code === 'ConditionalCheckFailed') continue; // the pool changed meanwhile: read it again
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
