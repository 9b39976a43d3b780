/**
 * Reclaim: a scope's pools give their idle room back to the counters before the pools close, when a request
 * of the scope was refused only for what is held (room-wait.ts). A pool's grants hold, on the counters, what
 * its requests spent, what its requests in flight took, and the room nobody took yet:
 *
 *   grants' holds (Σ amount) = room R + in-flight takes I + spent in the pool P (− overshoots the counters got
 *   directly, `direct`)
 *
 * One reclaim of one grant, in ONE transaction:
 *
 *   pool item   room −r, moved +p           IF open AND room ≥ r AND moved as read
 *   grant hold  amount −(r + p)             IF amount as read   (a retried or repeated reclaim changes nothing)
 *   counters    committed −r, reserved −(r + p), spent +p   (velocity windows −r: the grant charged them whole)
 *
 * so the room goes back (other pools and per-request reserves may use it) and the counters show what the pool
 * spent, while the hold keeps exactly what its release will settle: the release charges hold − min(room, hold),
 * i.e. what the takes in flight at the reclaim spend in the end. Money is conserved at every step: what leaves
 * the room leaves the hold and the counters' `reserved` by the same amount.
 */
import { GetItemCommand, type TransactWriteItem, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { MicroUsd } from '../../core/money';
import type { ReserveInput } from '../../core/stores';
import { holdKey } from './items';
import { appliedGrants, groupId, num, QUIET_SHARD, SHARED_GRANT_PREFIX } from './pool-markers';
import type { GrantHold, PoolRef, ScopePools } from './pools';

/** How often one instance reclaims one pool group's room (ms): every refused request need not read them all. */
const RECLAIM_EVERY_MS = 250;

/** Gives pools' idle room (and what they spent) back to the counters. */
export class PoolReclaim {
  /** When this instance last reclaimed a pool group. */
  private readonly lastAt = new Map<string, number>();

  constructor(private readonly pools: ScopePools) {}

  /**
   * Reclaims the room of every pool of the request's group (this epoch's and the last one's, all shards): the
   * group's items are read in one batch, and each pool with room or unmoved spend gives it back grant by
   * grant. Returns the room given back. Best effort: a pool written meanwhile is left for the next reclaim.
   */
  async reclaim(input: ReserveInput, now: number): Promise<MicroUsd> {
    const group = groupId(input);
    const last = this.lastAt.get(group);
    if (last !== undefined && now - last < RECLAIM_EVERY_MS && now >= last) return 0;
    this.lastAt.set(group, now);
    if (this.lastAt.size > 10_000) this.lastAt.delete(this.lastAt.keys().next().value as string);
    // One reclaim of a group at a time across instances, at most every RECLAIM_EVERY_MS: every request waiting
    // for room would otherwise read all the group's pools.
    if (!(await this.claim(group, now))) return 0;
    const refs: PoolRef[] = [];
    // A key's quiet pool too (pools.ts QUIET_SHARD): a key may have both while it turns busy.
    const shards: Array<number | string> = Array.from({ length: this.pools.opts.shards }, (_, k) => k);
    if (this.pools.opts.quietEpochMs > 0) shards.push(QUIET_SHARD);
    for (const k of shards) {
      const pk = `pool#${group}#${k}`;
      const epoch = this.pools.epochOf(pk, now);
      refs.push({ pk, sk: `e${epoch}` }, { pk, sk: `e${epoch - 1}` });
    }
    let items: Array<Record<string, unknown>>;
    try {
      items = (await this.pools.host.batchGet(refs)).map((item) => unmarshall(item));
    } catch {
      return 0;
    }
    let returned = 0;
    for (const item of items) {
      if (item.closed !== undefined) continue;
      try {
        returned += await this.reclaimPool({ pk: String(item.pk), sk: String(item.sk) }, item);
      } catch {
        // Best effort: the next reclaim (or the pool's release) returns it.
      }
    }
    return returned;
  }

  private async claim(group: string, now: number): Promise<boolean> {
    try {
      await this.pools.host.client.send(
        new UpdateItemCommand({
          TableName: this.pools.host.table,
          Key: marshall({ pk: `reclaim#${group}`, sk: 'at' }),
          UpdateExpression: 'SET #at = :now, #ttl = :ttl',
          ConditionExpression: 'attribute_not_exists(#at) OR #at <= :before OR #at > :now',
          ExpressionAttributeNames: { '#at': 'at', '#ttl': 'ttl' },
          ExpressionAttributeValues: marshall({ ':now': now, ':before': now - RECLAIM_EVERY_MS, ':ttl': Math.ceil(now / 1000) + 3_600 }),
        }),
      );
      return true;
    } catch {
      return false; // another instance reclaims now (or the store is busy: the next wait tries again)
    }
  }

  private async reclaimPool(ref: PoolRef, item: Record<string, unknown>): Promise<MicroUsd> {
    let room = Math.max(0, num(item.room));
    let spent = Math.max(0, num(item.spent) - num(item.direct) - num(item.moved));
    let moved = num(item.moved);
    if (room + spent <= 0) return 0;
    // A grant's id is the pool item's and its marker's last part (pool-refill.ts).
    const prefix = this.pools.role === 'shared' ? SHARED_GRANT_PREFIX : 'pool.';
    const grants = appliedGrants(item, (part) => `${prefix}${ref.pk.slice('pool#'.length)}.${ref.sk}.${part}`)
      .sort((a, b) => b.amount - a.amount)
      .map((g) => g.grantId);
    let returned = 0;
    for (const grantId of grants) {
      if (room + spent <= 0) break;
      const key = holdKey(grantId, this.pools.closesAt(ref));
      const out = await this.pools.host.client.send(
        new GetItemCommand({ TableName: this.pools.host.table, Key: marshall({ pk: key.pk, sk: key.sk }), ConsistentRead: true }),
      );
      if (!out.Item) continue;
      const hold = unmarshall(out.Item) as GrantHold;
      const amount = num(hold.amount);
      const r = Math.min(room, amount);
      const p = Math.min(spent, amount - r);
      if (r + p <= 0) continue;
      const items: TransactWriteItem[] = [
        {
          Update: {
            TableName: this.pools.host.table,
            Key: marshall(ref),
            UpdateExpression: 'ADD room :nr, moved :p, reclaimed :r',
            ConditionExpression: `attribute_not_exists(closed) AND room >= :r AND ${moved === 0 ? '(attribute_not_exists(moved) OR moved = :m)' : 'moved = :m'}`,
            ExpressionAttributeValues: marshall({ ':nr': -r, ':r': r, ':p': p, ':m': moved }),
          },
        },
        {
          Update: {
            TableName: this.pools.host.table,
            Key: marshall({ pk: key.pk, sk: key.sk }),
            UpdateExpression: 'ADD amount :nx',
            ConditionExpression: 'amount = :h',
            ExpressionAttributeValues: marshall({ ':nx': -(r + p), ':h': amount }),
          },
        },
        ...this.pools.host.heldCounterItems([{ counters: hold.counters, delta: { committed: -r, reserved: -(r + p), spent: p, requests: 0 } }]),
        ...(r > 0 ? this.pools.host.velocityItems([{ velocity: hold.grant.velocity.map((v) => ({ ...v, admittedMicros: r })), cost: 0 }]) : []),
      ];
      const reasons = await this.pools.host.transact(items);
      if (reasons) break; // the pool or the hold changed meanwhile: left for the next reclaim
      room -= r;
      spent -= p;
      moved += p;
      returned += r;
    }
    return returned;
  }
}
