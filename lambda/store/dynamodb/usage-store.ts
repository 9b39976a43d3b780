/**
 * The usage ledger's read side, and the item layout its write side (the ledger's settle) uses:
 *
 *   pk     user#<userId>#<s>      base table: shard s of a user's requests, in time order
 *   sk     <iso timestamp>#<requestId>
 *   dayPk  day#<YYYY-MM-DD>#<d>   GSI byDay, d = hash(requestId) % USAGE_DAY_SHARDS spreads a busy day
 *   ttl    epoch seconds          DynamoDB TTL, `retentionDays` after the request
 *
 * A record is written to the table and ONE index (issue 21: 2 write units, down from 4). Each reader:
 *
 *   a user's records        the user's base partitions (its USAGE_SCOPE_SHARDS shards and the pre-shard `user#<id>`)
 *   a request (findRequest) the caller's user's base shard its request id hashes to, newest first, then `user#<id>`
 *   everything (queryAll)   byDay: every shard of every day of the range
 *   a key's or an org's     byDay over the range, filtered by keyId / orgId: the same partitions (and read units)
 *     records                 as the report of everything over that range, which the same admin pages run anyway
 *   late settle, sweeper    the item's own key, which follows from the record alone
 *
 * The layout before this one also wrote `keyPk` (GSI byKey) and `orgPk` (GSI byOrg); items that still carry them
 * are read like the others (every item has `pk`, `sk` and `dayPk`), and the retired indexes are dropped one per
 * deploy (schema.ts USAGE_TABLE.retiredIndexes, docs/deploy-lifecycle.md).
 *
 * s = hash(requestId) % USAGE_SCOPE_SHARDS spreads one busy user over that many partition keys, so 1,000 req/s
 * of one user stays far under DynamoDB's 1,000 WCU/s per partition (schema.ts says why 8). A record's keys follow
 * from the record alone: the sweeper's 'abandoned' record and a late settle's replacement are the same item.
 * Readers fan out over the partitions in parallel and merge by sk (then pk), so every report comes out in the
 * order one partition gave.
 *
 * Money is the integer N attribute `costMicros`; token usage is flattened into four N attributes.
 */
import { QueryCommand, type AttributeValue, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { InvalidRequestError } from '../../core/errors';
import type { UsageQuery, UsageStore } from '../../core/stores';
import type { TokenUsage, UsageRecord } from '../../core/types';
import { translateError } from './client';
import { shardOf } from './hash';
import { USAGE_DAY_SHARDS, USAGE_SCOPE_SHARDS, type TableNames } from './schema';

type Item = Record<string, AttributeValue>;

/** The attributes of a usage item that make up the record (keys and TTL aside). */
type StoredUsage = Omit<UsageRecord, 'usage'> & TokenUsage;

const DAY_MS = 86_400_000;
/** A report by key, by org or of everything reads USAGE_DAY_SHARDS partitions per day; this bounds one. */
const MAX_QUERY_ALL_DAYS = 1_000;
const QUERY_CONCURRENCY = 8;

/** Whose records a report reads: a user's (base table), a key's or an org's (byDay, filtered). */
export type UsageScope = UsageQuery['by'];

/** The record field that names each scope. */
const SCOPE_FIELD: Readonly<Record<UsageScope, 'userId' | 'keyId' | 'orgId'>> = { user: 'userId', key: 'keyId', org: 'orgId' };

/** The partition shard (0 … USAGE_SCOPE_SHARDS−1) of a request's record in the base table. */
export function usageScopeShard(requestId: string): number {
  return shardOf(requestId, USAGE_SCOPE_SHARDS);
}

/** The base-table partition key of shard `shard` of a user's records, e.g. `user#alice#3`. */
export function usagePartitionKey(userId: string, shard: number): string {
  return `user#${userId}#${shard}`;
}

/**
 * Every partition key a user's records may be under: its USAGE_SCOPE_SHARDS shards, then the single partition
 * of the layout before the shards (`user#<id>`), whose records stay until their TTL.
 */
export function usagePartitionKeys(userId: string): string[] {
  const shards = Array.from({ length: USAGE_SCOPE_SHARDS }, (_, n) => usagePartitionKey(userId, n));
  return [...shards, preShardPartitionKey(userId)];
}

/** The byDay partition (0 … USAGE_DAY_SHARDS−1) a request's record lands in. */
export function usageDayShard(requestId: string): number {
  return shardOf(requestId, USAGE_DAY_SHARDS);
}

/** The sort key of a usage record: the normalised ISO timestamp, then the request id. */
export function usageSortKey(timestamp: string, requestId: string): string {
  return `${normaliseIso(timestamp)}#${requestId}`;
}

/**
 * The DynamoDB item for a usage record.
 * @param options.retentionDays how long DynamoDB keeps it (TTL)
 * @param options.shard the byDay partition; @default {@link usageDayShard}(requestId)
 */
export function usageItem(record: UsageRecord, options: { readonly retentionDays: number; readonly shard?: number }): Item {
  const timestamp = normaliseIso(record.timestamp);
  const shard = options.shard ?? usageDayShard(record.requestId);
  if (!Number.isInteger(shard) || shard < 0 || shard >= USAGE_DAY_SHARDS) {
    throw new RangeError(`usage day shard must be 0..${USAGE_DAY_SHARDS - 1}, got ${shard}`);
  }
  if (!Number.isSafeInteger(record.costMicros) || record.costMicros < 0) {
    throw new RangeError(`costMicros must be a non-negative integer, got ${record.costMicros}`);
  }
  const { usage, ...rest } = record;
  const scopeShard = usageScopeShard(record.requestId);
  return marshall(
    {
      ...rest,
      inputTokens: usage.inputTokens,
      outputTokens: usage.outputTokens,
      cachedInputTokens: usage.cachedInputTokens,
      cacheWriteTokens: usage.cacheWriteTokens,
      pk: usagePartitionKey(record.userId, scopeShard),
      sk: `${timestamp}#${record.requestId}`,
      dayPk: `day#${timestamp.slice(0, 10)}#${shard}`,
      ttl: Math.floor(Date.parse(timestamp) / 1000) + options.retentionDays * 86_400,
    },
    { removeUndefinedValues: true },
  );
}

/** The usage record stored in an item written by {@link usageItem}. */
export function usageRecordFromItem(item: Item): UsageRecord {
  const raw = unmarshall(item) as StoredUsage;
  return {
    requestId: raw.requestId,
    timestamp: raw.timestamp,
    userId: raw.userId,
    keyId: raw.keyId,
    ...(raw.orgId !== undefined ? { orgId: raw.orgId } : {}),
    provider: raw.provider,
    model: raw.model,
    requestType: raw.requestType,
    endpoint: raw.endpoint,
    stream: raw.stream,
    usage: {
      inputTokens: raw.inputTokens,
      outputTokens: raw.outputTokens,
      cachedInputTokens: raw.cachedInputTokens,
      cacheWriteTokens: raw.cacheWriteTokens,
    },
    costMicros: raw.costMicros,
    costEstimated: raw.costEstimated,
    ...(raw.overshootMicros !== undefined ? { overshootMicros: raw.overshootMicros } : {}),
    outcome: raw.outcome,
    httpStatus: raw.httpStatus,
    durationMs: raw.durationMs,
    ...(raw.userAgent !== undefined ? { userAgent: raw.userAgent } : {}),
    byok: raw.byok,
  };
}

/** Options of {@link DynamoDbUsageStore}. */
export interface DynamoDbUsageStoreOptions {
  /**
   * Items per Query page of a report (`Limit`); every page is read either way, a smaller page only costs more
   * round trips.
   * @default DynamoDB's (pages of up to 1 MB)
   */
  readonly pageSize?: number;
}

/** The DynamoDB implementation of {@link UsageStore}. */
export class DynamoDbUsageStore implements UsageStore {
  private readonly table: string;
  private readonly pageSize: number | undefined;

  constructor(
    private readonly client: DynamoDBClient,
    tables: Pick<TableNames, 'usage'>,
    options: DynamoDbUsageStoreOptions = {},
  ) {
    this.table = tables.usage;
    if (options.pageSize !== undefined && (!Number.isInteger(options.pageSize) || options.pageSize < 1)) {
      throw new RangeError(`pageSize must be a positive integer, got ${options.pageSize}`);
    }
    this.pageSize = options.pageSize;
  }

  /**
   * Records of one user, key or org with from ≤ timestamp < to, oldest first (by sk, i.e. timestamp then request
   * id). A user's: every base partition of the user, read in parallel and merged. A key's or an org's: the byDay
   * partitions of the range (as {@link queryAll} reads them), filtered by the key or org in DynamoDB.
   */
  async query(q: UsageQuery): Promise<UsageRecord[]> {
    const { from, to } = range(q.from, q.to);
    const field = SCOPE_FIELD[q.by];
    const items =
      q.by === 'user'
        ? (await Promise.all(usagePartitionKeys(q.id).map((value) => this.queryPartition({ attribute: 'pk', value, from, to })))).flat()
        : await this.queryDays(from, to, { attribute: field, value: q.id });
    return items
      .sort(compareKeys)
      .map(usageRecordFromItem)
      .filter((r) => r[field] === q.id); // `user#a#3` is shard 3 of "a" and the pre-shard partition of user "a#3"
  }

  /**
   * One key's record of one request, stopping at the first match or after `maxScanned` records read in all. The
   * record can only be in the base-table shard of the key's user that its request id hashes to, so that shard is
   * read newest first, then (with what is left of `maxScanned`) the user's pre-shard partition; the bound thus
   * reaches about USAGE_SCOPE_SHARDS times further back than a read of all the user's records would.
   */
  async findRequest(q: {
    readonly keyId: string;
    readonly userId: string;
    readonly requestId: string;
    readonly maxScanned: number;
  }): Promise<UsageRecord | undefined> {
    const partitions = [usagePartitionKey(q.userId, usageScopeShard(q.requestId)), preShardPartitionKey(q.userId)];
    let scanned = 0;
    for (const partition of partitions) {
      let startKey: Item | undefined;
      try {
        do {
          const page = await this.client.send(
            new QueryCommand({
              TableName: this.table,
              KeyConditionExpression: 'pk = :p',
              FilterExpression: 'requestId = :r AND keyId = :k AND userId = :u',
              ExpressionAttributeValues: { ':p': { S: partition }, ':r': { S: q.requestId }, ':k': { S: q.keyId }, ':u': { S: q.userId } },
              ScanIndexForward: false,
              Limit: Math.min(500, Math.max(1, q.maxScanned - scanned)),
              ExclusiveStartKey: startKey,
            }),
          );
          const found = page.Items?.[0];
          if (found) return usageRecordFromItem(found);
          scanned += page.ScannedCount ?? 0;
          startKey = page.LastEvaluatedKey;
        } while (startKey && scanned < q.maxScanned);
      } catch (err) {
        throw translateError(err);
      }
      if (scanned >= q.maxScanned) break;
    }
    return undefined;
  }

  /** Every record with from ≤ timestamp < to, oldest first: reads each shard of each day's byDay partition. */
  async queryAll(fromIso: string, toIso: string): Promise<UsageRecord[]> {
    const { from, to } = range(fromIso, toIso);
    return (await this.queryDays(from, to)).sort(compareKeys).map(usageRecordFromItem);
  }

  /** The byDay items of every day shard of [from, to), those whose `filter.attribute` is `filter.value` if given. */
  private async queryDays(from: string, to: string, filter?: { readonly attribute: string; readonly value: string }): Promise<Item[]> {
    const first = Date.parse(from.slice(0, 10));
    const last = Date.parse(new Date(Date.parse(to) - 1).toISOString().slice(0, 10));
    const days = Math.floor((last - first) / DAY_MS) + 1;
    if (days > MAX_QUERY_ALL_DAYS) {
      throw new InvalidRequestError(`A usage report may span at most ${MAX_QUERY_ALL_DAYS} days.`, { param: 'from' });
    }
    const partitions: string[] = [];
    for (let d = 0; d < days; d++) {
      const day = new Date(first + d * DAY_MS).toISOString().slice(0, 10);
      for (let n = 0; n < USAGE_DAY_SHARDS; n++) partitions.push(`day#${day}#${n}`);
    }
    const results: Item[][] = [];
    for (let i = 0; i < partitions.length; i += QUERY_CONCURRENCY) {
      const batch = partitions.slice(i, i + QUERY_CONCURRENCY);
      results.push(
        ...(await Promise.all(batch.map((value) => this.queryPartition({ index: 'byDay', attribute: 'dayPk', value, from, to, filter })))),
      );
    }
    return results.flat();
  }

  private async queryPartition(q: {
    readonly index?: string;
    readonly attribute: string;
    readonly value: string;
    readonly from: string;
    readonly to: string;
    readonly filter?: { readonly attribute: string; readonly value: string };
  }): Promise<Item[]> {
    const out: Item[] = [];
    let startKey: Item | undefined;
    try {
      do {
        // sk = <iso>#<id>: every sk of a record at `to` sorts after the bare `to`, so BETWEEN excludes it.
        const page = await this.client.send(
          new QueryCommand({
            TableName: this.table,
            IndexName: q.index,
            KeyConditionExpression: '#p = :p AND sk BETWEEN :from AND :to',
            ...(q.filter ? { FilterExpression: '#f = :f' } : {}),
            ExpressionAttributeNames: { '#p': q.attribute, ...(q.filter ? { '#f': q.filter.attribute } : {}) },
            ExpressionAttributeValues: {
              ':p': { S: q.value },
              ':from': { S: q.from },
              ':to': { S: q.to },
              ...(q.filter ? { ':f': { S: q.filter.value } } : {}),
            },
            Limit: this.pageSize,
            ExclusiveStartKey: startKey,
          }),
        );
        out.push(...(page.Items ?? []));
        startKey = page.LastEvaluatedKey;
      } while (startKey);
    } catch (err) {
      throw translateError(err);
    }
    return out;
  }
}

/** The one partition a user's records were under before the shards (`user#<id>`). */
function preShardPartitionKey(userId: string): string {
  return `user#${userId}`;
}

/**
 * The order one partition returns: by sk. A report of a key, an org or everything can hold two records with one
 * sk (two users, one request id), which DynamoDB returns in no stated order; the base table's pk makes the order
 * total.
 */
function compareKeys(a: Item, b: Item): number {
  const [skA, skB] = [a.sk?.S ?? '', b.sk?.S ?? ''];
  if (skA !== skB) return skA < skB ? -1 : 1;
  const [pA, pB] = [a.pk?.S ?? '', b.pk?.S ?? ''];
  return pA < pB ? -1 : pA > pB ? 1 : 0;
}

function normaliseIso(text: string): string {
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new RangeError(`"${text}" is not an ISO-8601 timestamp`);
  return new Date(ms).toISOString();
}

function range(fromIso: string, toIso: string): { from: string; to: string } {
  let from: string;
  let to: string;
  try {
    from = normaliseIso(fromIso);
    to = normaliseIso(toIso);
  } catch (err) {
    throw new InvalidRequestError((err as Error).message, { param: 'from' });
  }
  if (from >= to) throw new InvalidRequestError(`"from" (${from}) must be before "to" (${to}).`, { param: 'from' });
  return { from, to };
}
