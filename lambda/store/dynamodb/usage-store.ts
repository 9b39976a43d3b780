/**
 * The usage ledger's read side, and the item layout its write side (the ledger's settle) uses:
 *
 *   pk     day#<YYYY-MM-DD>#<d>          a day's records, d = (hash(userId) + s) % USAGE_DAY_SHARDS,
 *                                        s = hash(requestId) % USAGE_SCOPE_SHARDS
 *   sk     <userId>#<iso timestamp>#<requestId>
 *   ttl    epoch seconds                 DynamoDB TTL, `retentionDays` after the request
 *
 * A record is ONE write unit: the table and no index (issue 21; it was 2 with GSI byDay, 4 with byKey and byOrg).
 * A day's records are spread over USAGE_DAY_SHARDS partitions, and one user's over USAGE_SCOPE_SHARDS of them
 * (consecutive ones from its hash), so 1,000 req/s of one user stays far under DynamoDB's 1,000 WCU/s per
 * partition and 5,000 req/s of the platform puts ~310 WCU/s on each (schema.ts says why 8 and 16). Each reader:
 *
 *   a user's records        each day of the range: the user's day partitions, sk BETWEEN <userId>#<from> AND
 *                           <userId>#<to> (only the user's records are read)
 *   a request (findRequest) the day partition its user and request id hash to, day by day newest first (at most
 *                           `lookbackDays` days, `maxScanned` records), only the user's records
 *   everything (queryAll)   every day partition of every day of the range
 *   a key's or an org's     the same partitions, filtered by keyId / orgId (the same read units as the report of
 *     records                 everything over that range, which the same admin pages run anyway)
 *   late settle, sweeper    the item's own key, which follows from the record alone (day, user, request id), so
 *                           the sweeper's 'abandoned' record and a late settle's replacement are one item
 *
 * The layouts before this one, read by every reader until their records expire (their TTL):
 *   v2  pk user#<userId>#<s>, sk <iso>#<requestId>, GSI byDay (dayPk day#<date>#<d>): users from the base table,
 *       everything, keys and orgs from byDay; the v1 items carry dayPk too.
 *   v1  pk user#<userId> (and keyPk / orgPk for the retired byKey and byOrg indexes).
 * So byDay stays declared while such records can exist; items of this layout carry no dayPk and never write it.
 * Readers merge every partition by (timestamp, request id, user), the order one partition of a v1 user gave.
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
/** A report reads each day of its range (USAGE_DAY_SHARDS partitions a day, or a user's); this bounds one. */
const MAX_QUERY_ALL_DAYS = 1_000;
const QUERY_CONCURRENCY = 8;
/** How far back findRequest looks by default (days before today's). */
export const DEFAULT_LOOKBACK_DAYS = 31;

/** Whose records a report reads: a user's, a key's or an org's. */
export type UsageScope = UsageQuery['by'];

/** The record field that names each scope. */
const SCOPE_FIELD: Readonly<Record<UsageScope, 'userId' | 'keyId' | 'orgId'>> = { user: 'userId', key: 'keyId', org: 'orgId' };

/** Which of a user's shards (0 … USAGE_SCOPE_SHARDS−1) a request's record is in. */
export function usageScopeShard(requestId: string): number {
  return shardOf(requestId, USAGE_SCOPE_SHARDS);
}

/** The day partition of shard `scopeShard` of a user's records of `day` (YYYY-MM-DD), e.g. `day#2099-11-23#5`. */
export function usageDayPartition(day: string, userId: string, scopeShard: number): string {
  return `day#${day}#${(shardOf(userId, USAGE_DAY_SHARDS) + scopeShard) % USAGE_DAY_SHARDS}`;
}

/** Every day partition a user's records of `day` may be in (its USAGE_SCOPE_SHARDS shards). */
export function usageUserDayPartitions(day: string, userId: string): string[] {
  return [...new Set(Array.from({ length: USAGE_SCOPE_SHARDS }, (_, s) => usageDayPartition(day, userId, s)))];
}

/** The base-table partition key of shard `shard` of a user's records in layout v2, e.g. `user#alice#3`. */
export function usagePartitionKey(userId: string, shard: number): string {
  return `user#${userId}#${shard}`;
}

/** Every partition key a user's records of the layouts before days may be under: v2's shards, then v1's one. */
export function usagePartitionKeys(userId: string): string[] {
  const shards = Array.from({ length: USAGE_SCOPE_SHARDS }, (_, n) => usagePartitionKey(userId, n));
  return [...shards, preShardPartitionKey(userId)];
}

/** The time order of records: the normalised ISO timestamp, then the request id (the sk of layouts v1 and v2). */
export function usageSortKey(timestamp: string, requestId: string): string {
  return `${normaliseIso(timestamp)}#${requestId}`;
}

/**
 * The DynamoDB item for a usage record.
 * @param options.retentionDays how long DynamoDB keeps it (TTL)
 */
export function usageItem(record: UsageRecord, options: { readonly retentionDays: number }): Item {
  const timestamp = normaliseIso(record.timestamp);
  if (!Number.isSafeInteger(record.costMicros) || record.costMicros < 0) {
    throw new RangeError(`costMicros must be a non-negative integer, got ${record.costMicros}`);
  }
  const { usage, ...rest } = record;
  return marshall(
    {
      ...rest,
      inputTokens: usage.inputTokens,
      outputTokens: usage.outputTokens,
      cachedInputTokens: usage.cachedInputTokens,
      cacheWriteTokens: usage.cacheWriteTokens,
      pk: usageDayPartition(timestamp.slice(0, 10), record.userId, usageScopeShard(record.requestId)),
      sk: `${record.userId}#${timestamp}#${record.requestId}`,
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
  /**
   * Days before today's that findRequest reads (a day is one Query of the user's records in one partition).
   * @default {@link DEFAULT_LOOKBACK_DAYS}
   */
  readonly lookbackDays?: number;
  /** The clock findRequest counts days back from, and `retentionDays` bounds reports by. @default Date.now */
  readonly now?: () => number;
  /**
   * How long records are kept (their TTL): a report reads no day older than this (and two days of DynamoDB's
   * TTL lag) or later than tomorrow, where no record can be, so an "all time" report reads at most this many
   * days. @default none: every day of the range is read (at most 1,000)
   */
  readonly retentionDays?: number;
}

/** A Query of one partition (of the table or of `index`) over sort keys from … to, optionally filtered. */
interface PartitionQuery {
  readonly index?: string;
  readonly attribute: string;
  readonly value: string;
  /** Sort keys from … to (BETWEEN); the whole partition if absent. */
  readonly range?: { readonly from: string; readonly to: string };
  readonly filter?: { readonly attribute: string; readonly value: string };
}

/** The DynamoDB implementation of {@link UsageStore}. */
export class DynamoDbUsageStore implements UsageStore {
  private readonly table: string;
  private readonly pageSize: number | undefined;
  private readonly lookbackDays: number;
  private readonly now: () => number;
  private readonly retentionDays: number | undefined;

  constructor(
    private readonly client: DynamoDBClient,
    tables: Pick<TableNames, 'usage'>,
    options: DynamoDbUsageStoreOptions = {},
  ) {
    this.table = tables.usage;
    if (options.pageSize !== undefined && (!Number.isInteger(options.pageSize) || options.pageSize < 1)) {
      throw new RangeError(`pageSize must be a positive integer, got ${options.pageSize}`);
    }
    const lookbackDays = options.lookbackDays ?? DEFAULT_LOOKBACK_DAYS;
    if (!Number.isInteger(lookbackDays) || lookbackDays < 0 || lookbackDays > MAX_QUERY_ALL_DAYS) {
      throw new RangeError(`lookbackDays must be an integer 0..${MAX_QUERY_ALL_DAYS}, got ${options.lookbackDays}`);
    }
    this.pageSize = options.pageSize;
    this.lookbackDays = lookbackDays;
    this.now = options.now ?? Date.now;
    if (options.retentionDays !== undefined && (!Number.isInteger(options.retentionDays) || options.retentionDays < 1)) {
      throw new RangeError(`retentionDays must be a positive integer, got ${options.retentionDays}`);
    }
    this.retentionDays = options.retentionDays;
  }

  /**
   * Records of one user, key or org with from ≤ timestamp < to, oldest first (by timestamp, then request id).
   * A user's: its day partitions of each day, read by sk range, and its partitions of the layouts before. A key's
   * or an org's: every day partition of the range (as {@link queryAll} reads them), filtered in DynamoDB.
   */
  async query(q: UsageQuery): Promise<UsageRecord[]> {
    const { from, to } = range(q.from, q.to);
    const field = SCOPE_FIELD[q.by];
    let queries: PartitionQuery[];
    if (q.by === 'user') {
      const prefix = `${q.id}#`;
      queries = [
        ...this.daysOf(from, to).flatMap((day) =>
          usageUserDayPartitions(day, q.id).map((value) => ({ attribute: 'pk', value, range: { from: prefix + from, to: prefix + to } })),
        ),
        ...usagePartitionKeys(q.id).map((value) => ({ attribute: 'pk', value, range: { from, to } })),
      ];
    } else {
      queries = this.dayQueries(from, to, { attribute: field, value: q.id });
    }
    // A user's sk prefix or v2 key `user#a#3` can also hold user "a"'s records, or another user's: filter exactly.
    return this.merge(
      (await this.queryPartitions(queries)).filter((item) => item[field]?.S === q.id),
      { from, to },
    );
  }

  /**
   * One key's record of one request, stopping at the first match or after `maxScanned` records read in all. The
   * record can only be in the day partition its user and request id hash to: that partition's records of the
   * user are read day by day, today's first, newest first, for at most `lookbackDays` days before today's; then
   * (with what is left of `maxScanned`) the v2 shard and the v1 partition of the user.
   */
  async findRequest(q: {
    readonly keyId: string;
    readonly userId: string;
    readonly requestId: string;
    readonly maxScanned: number;
  }): Promise<UsageRecord | undefined> {
    const shard = usageScopeShard(q.requestId);
    const today = startOfDay(this.now());
    const prefix = `${q.userId}#`;
    const reads: Array<{ readonly partition: string; readonly prefix?: string }> = [
      ...Array.from({ length: this.lookbackDays + 1 }, (_, d) => ({
        partition: usageDayPartition(dayOf(today - d * DAY_MS), q.userId, shard),
        prefix,
      })),
      { partition: usagePartitionKey(q.userId, shard) },
      { partition: preShardPartitionKey(q.userId) },
    ];
    let scanned = 0;
    for (const read of reads) {
      let startKey: Item | undefined;
      try {
        do {
          const page = await this.client.send(
            new QueryCommand({
              TableName: this.table,
              KeyConditionExpression: read.prefix === undefined ? 'pk = :p' : 'pk = :p AND begins_with(sk, :u)',
              FilterExpression: 'requestId = :r AND keyId = :k AND userId = :u2',
              ExpressionAttributeValues: {
                ':p': { S: read.partition },
                ':r': { S: q.requestId },
                ':k': { S: q.keyId },
                ':u2': { S: q.userId },
                ...(read.prefix === undefined ? {} : { ':u': { S: read.prefix } }),
              },
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

  /** Every record with from ≤ timestamp < to, oldest first: every day partition of each day, and byDay's. */
  async queryAll(fromIso: string, toIso: string): Promise<UsageRecord[]> {
    const { from, to } = range(fromIso, toIso);
    return this.merge(await this.queryPartitions(this.dayQueries(from, to)), { from, to });
  }

  /**
   * Records of many partitions with from ≤ timestamp < to (a day partition is read whole), in one order: by
   * timestamp and request id, then by user.
   */
  private merge(items: readonly Item[], range: { readonly from: string; readonly to: string }): UsageRecord[] {
    return items
      .map((item) => ({ order: orderKey(item), user: item.userId?.S ?? '', item }))
      // `<iso>#<id>` of a record at `to` sorts after the bare `to`, and of one at `from` after `from`.
      .filter((e) => e.order >= range.from && e.order < range.to)
      .sort((a, b) => (a.order !== b.order ? (a.order < b.order ? -1 : 1) : a.user < b.user ? -1 : a.user > b.user ? 1 : 0))
      .map((e) => usageRecordFromItem(e.item));
  }

  /**
   * The days (YYYY-MM-DD) a range [from, to) touches, where records can be (see `retentionDays`); at most
   * MAX_QUERY_ALL_DAYS.
   */
  private daysOf(fromIso: string, toIso: string): string[] {
    let [from, to] = [Date.parse(fromIso), Date.parse(toIso)];
    if (this.retentionDays !== undefined) {
      const now = this.now();
      from = Math.max(from, now - (this.retentionDays + 2) * DAY_MS);
      to = Math.min(to, now + DAY_MS);
      if (from >= to) return [];
    }
    const first = startOfDay(from);
    const last = startOfDay(to - 1);
    const days = Math.floor((last - first) / DAY_MS) + 1;
    if (days > MAX_QUERY_ALL_DAYS) {
      throw new InvalidRequestError(`A usage report may span at most ${MAX_QUERY_ALL_DAYS} days.`, { param: 'from' });
    }
    return Array.from({ length: days }, (_, d) => dayOf(first + d * DAY_MS));
  }

  /**
   * The queries of every record of [from, to), those whose `filter.attribute` is `filter.value` if given: each
   * day's USAGE_DAY_SHARDS partitions, and byDay's (the records of layouts v1 and v2).
   */
  private dayQueries(from: string, to: string, filter?: PartitionQuery['filter']): PartitionQuery[] {
    return this.daysOf(from, to).flatMap((day) =>
      Array.from({ length: USAGE_DAY_SHARDS }, (_, n) => `day#${day}#${n}`).flatMap((value): PartitionQuery[] => [
        // This layout's sk leads with the user: the day's partition is read whole, cut at from and to by the merge.
        { attribute: 'pk', value, filter },
        { index: 'byDay', attribute: 'dayPk', value, range: { from, to }, filter },
      ]),
    );
  }

  /** Runs the queries, QUERY_CONCURRENCY at a time. */
  private async queryPartitions(queries: readonly PartitionQuery[]): Promise<Item[]> {
    const results: Item[][] = [];
    for (let i = 0; i < queries.length; i += QUERY_CONCURRENCY) {
      results.push(...(await Promise.all(queries.slice(i, i + QUERY_CONCURRENCY).map((q) => this.queryPartition(q)))));
    }
    return results.flat();
  }

  private async queryPartition(q: PartitionQuery): Promise<Item[]> {
    const out: Item[] = [];
    let startKey: Item | undefined;
    try {
      do {
        const page = await this.client.send(
          new QueryCommand({
            TableName: this.table,
            IndexName: q.index,
            KeyConditionExpression: q.range ? '#p = :p AND sk BETWEEN :from AND :to' : '#p = :p',
            ...(q.filter ? { FilterExpression: '#f = :f' } : {}),
            ExpressionAttributeNames: { '#p': q.attribute, ...(q.filter ? { '#f': q.filter.attribute } : {}) },
            ExpressionAttributeValues: {
              ':p': { S: q.value },
              ...(q.range ? { ':from': { S: q.range.from }, ':to': { S: q.range.to } } : {}),
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
 * A record's place in time, `<iso>#<requestId>`: its sk in layouts v1 and v2 (whose items come from `user#…`
 * partitions, or from byDay), its sk after `<userId>#` in this one.
 */
function orderKey(item: Item): string {
  const sk = item.sk?.S ?? '';
  return item.pk?.S?.startsWith('day#') ? sk.slice((item.userId?.S ?? '').length + 1) : sk;
}

/** The UTC day (YYYY-MM-DD) of an instant. */
function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** The instant a UTC day starts, for an instant in it. */
function startOfDay(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
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
