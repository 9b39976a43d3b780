/**
 * The sweeper's part of the ledger (every minute on AWS): holds past their expiry are reclaimed, charging their
 * full amount (the gateway cannot prove the provider did not do the work) with an `abandoned` record a late
 * settle replaces; a pool's grant is released through its pool once the pool's epoch and grace are over.
 *
 *   sweep:    [hold delete] [counters: reserved → spent (full amount)…] [usage put 'abandoned', estimated]
 *             a counter the reserve left to settle (marked `u` on the hold): committed and spent += full amount
 */
import { QueryCommand, type TransactWriteItem } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { StoreUnavailableError } from '../../core/errors';
import { translateError } from './client';
import { unexpectedCancellation } from './denials';
import { abandonedRecord, padMs, type StoredHold } from './items';
import { assertTransactionSize, type Item, LedgerCore } from './ledger-core';
import { ScopePools, SHARED_GRANT_PREFIX } from './pools';
import { HOLD_SHARDS } from './schema';
import { usageItem } from './usage-store';

/** A grant's hold: it names its pool and what the release corrects. */
type GrantOfPool = StoredHold & Required<Pick<StoredHold, 'pool' | 'grant'>>;

/**
 * Grants of one pool item released in one transaction at most: with the pool item, its counters and velocity
 * windows (about 15 items), within DynamoDB's 100 items a transaction.
 */
const GRANTS_PER_RELEASE = 40;

/** Reclaims expired holds and releases pools' grants. */
export class Sweeper {
  constructor(
    private readonly core: LedgerCore,
    private readonly pools: ScopePools,
    private readonly sharedPools: ScopePools,
  ) {}

  /**
   * Reclaims every expired hold; grants are gathered first and released a pool item at a time (one transaction
   * for all of an item's grants, which sit in different hold shards).
   */
  async sweepExpired(now: number): Promise<number> {
    const grants = new Map<string, GrantOfPool[]>();
    const perShard = await Promise.all(
      Array.from({ length: HOLD_SHARDS }, (_, shard) => this.sweepShard(`hold#${shard}`, now, grants)),
    );
    let released = perShard.reduce((a, b) => a + b, 0);
    for (const group of grants.values()) {
      for (let i = 0; i < group.length; i += GRANTS_PER_RELEASE) released += await this.releaseGrants(group.slice(i, i + GRANTS_PER_RELEASE), now);
    }
    return released;
  }

  private async sweepShard(pk: string, now: number, grants: Map<string, GrantOfPool[]>): Promise<number> {
    let released = 0;
    let startKey: Item | undefined;
    do {
      let page;
      try {
        page = await this.core.client.send(
          new QueryCommand({
            TableName: this.core.budgets,
            KeyConditionExpression: 'pk = :pk AND sk < :bound',
            ExpressionAttributeValues: { ':pk': { S: pk }, ':bound': { S: padMs(now) } },
            ExclusiveStartKey: startKey,
          }),
        );
      } catch (err) {
        throw translateError(err);
      }
      startKey = page.LastEvaluatedKey;
      for (const item of page.Items ?? []) {
        const hold = unmarshall(item) as StoredHold;
        if (hold.pool && hold.grant) {
          const grant = hold as GrantOfPool;
          const key = `${grant.requestId.startsWith(SHARED_GRANT_PREFIX) ? 's' : 'k'}|${grant.pool.pk}|${grant.pool.sk}`;
          grants.set(key, [...(grants.get(key) ?? []), grant]);
        } else if (await this.releaseHold(hold, now)) {
          released++;
        }
      }
    } while (startKey);
    return released;
  }

  /**
   * Reclaims one expired hold, charging its full amount: the gateway cannot prove the provider did not do the
   * work, so the money stays spent (moved from `reserved` to `spent`, `committed` unchanged) and the usage
   * record says `abandoned`, estimated. A late settle with real usage replaces both exactly once
   * ({@link settleLate}). False when the hold vanished meanwhile (settled after all).
   */
  private async releaseHold(hold: StoredHold, now: number): Promise<boolean> {
    const record = abandonedRecord(hold, now);
    const items: TransactWriteItem[] = [
      {
        Delete: {
          TableName: this.core.budgets,
          Key: marshall({ pk: hold.pk, sk: hold.sk }),
          ConditionExpression: 'attribute_exists(pk)',
        },
      },
      ...hold.counters.map((c) => ({
        Update: {
          TableName: this.core.budgets,
          Key: marshall({ pk: c.pk, sk: c.sk }),
          // Reserved on: the amount moves from reserved to spent. Left to settle (`u`): it is added whole.
          UpdateExpression: c.u
            ? 'ADD committed :amount, spent :amount, requests :one SET #ttl = if_not_exists(#ttl, :ttl)'
            : 'ADD reserved :neg, spent :amount, requests :one SET #ttl = if_not_exists(#ttl, :ttl)',
          ExpressionAttributeNames: { '#ttl': 'ttl' },
          ExpressionAttributeValues: {
            ...(c.u ? {} : { ':neg': { N: String(-hold.amount) } }),
            ':amount': { N: String(hold.amount) },
            ':one': { N: '1' },
            ':ttl': { N: String(c.ttl) },
          },
        },
      })),
      { Put: { TableName: this.core.usage, Item: usageItem(record, { retentionDays: this.core.usageRetentionDays }) } },
    ];
    assertTransactionSize(items.length, 'sweep');
    const reasons = await this.core.transact(items);
    if (!reasons) return true;
    if (reasons[0]?.Code === 'ConditionalCheckFailed') return false;
    throw unexpectedCancellation(reasons);
  }

  /** Releases grants of one pool item once its epoch and grace are over (pools.ts `release`); how many. */
  private async releaseGrants(holds: readonly GrantOfPool[], now: number): Promise<number> {
    const pools = holds[0]!.requestId.startsWith(SHARED_GRANT_PREFIX) ? this.sharedPools : this.pools;
    try {
      return await pools.release(holds, now);
    } catch (err) {
      if (err instanceof StoreUnavailableError) return 0; // left for the next sweep; the others go on
      throw err;
    }
  }
}
