/**
 * The usage table's partitions (usage-store.ts: a day's records over USAGE_DAY_SHARDS partitions, one user's over
 * USAGE_SCOPE_SHARDS of them) on DynamoDB Local: one user's records really spread over several partition keys;
 * every reader (a user's, a key's and an org's report, findRequest) returns exactly the records and order of the
 * single-partition layout v1, items of layouts v1 and v2 included; a late settle still replaces the sweeper's
 * abandoned record exactly once.
 */
import { BatchWriteItemCommand, QueryCommand, type QueryCommandInput, ScanCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { createHash } from 'node:crypto';
import { ManualClock } from '../../lambda/core/clock';
import type { CounterRef, ReserveInput, UsageQuery } from '../../lambda/core/stores';
import type { UsageRecord } from '../../lambda/core/types';
import { windowBounds, windowKey } from '../../lambda/core/windows';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { USAGE_SCOPE_SHARDS } from '../../lambda/store/dynamodb/schema';
import {
  DynamoDbUsageStore,
  usageDayPartition,
  usageItem,
  usagePartitionKey,
  usagePartitionKeys,
  usageRecordFromItem,
  usageScopeShard,
  usageSortKey,
} from '../../lambda/store/dynamodb/usage-store';
import { createTestTables, type TestTables } from '../support/dynamo';
import { usageRecordFor, v2UsageItem } from '../support/usage-records';

type Item = Record<string, AttributeValue>;

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write.
const T0 = Date.parse('2099-11-23T10:00:00.000Z');
const HOUR = 3_600_000;

/** Request ids shaped like the gateway's (`req_` + 32 hex), derived from a seed so every run uses the same ones. */
function requestId(seed: string): string {
  return `req_${createHash('sha256').update(seed).digest('hex').slice(0, 32)}`;
}

function record(overrides: Partial<UsageRecord> & Pick<UsageRecord, 'requestId' | 'timestamp'>): UsageRecord {
  return {
    userId: 'alice',
    keyId: 'ka',
    provider: 'openai',
    model: 'gpt-4o-mini',
    requestType: 'chat',
    endpoint: '/v1/chat/completions',
    stream: false,
    usage: { inputTokens: 100, outputTokens: 20, cachedInputTokens: 0, cacheWriteTokens: 0 },
    costMicros: 1_000,
    costEstimated: false,
    outcome: 'ok',
    httpStatus: 200,
    durationMs: 50,
    byok: false,
    ...overrides,
  };
}

/** The item as layout v1 wrote it: one partition per user, key and org (byKey, byOrg). */
function preShardItem(r: UsageRecord): Item {
  const item = v2UsageItem(r);
  return {
    ...item,
    pk: { S: `user#${r.userId}` },
    keyPk: { S: `key#${r.keyId}` },
    ...(r.orgId !== undefined ? { orgPk: { S: `org#${r.orgId}` } } : {}),
  };
}

async function putAll(db: TestTables, items: readonly Item[]): Promise<void> {
  for (let i = 0; i < items.length; i += 25) {
    let batch = items.slice(i, i + 25).map((Item) => ({ PutRequest: { Item } }));
    for (let attempt = 0; batch.length > 0; attempt++) {
      if (attempt >= 20) throw new Error('DynamoDB Local kept items unprocessed');
      const out = await db.client.send(new BatchWriteItemCommand({ RequestItems: { [db.tables.usage]: batch } }));
      batch = (out.UnprocessedItems?.[db.tables.usage] ?? []) as typeof batch;
    }
  }
}

/** Every item a query finds, over all its pages. */
async function allPages(db: TestTables, input: Omit<QueryCommandInput, 'TableName' | 'ExclusiveStartKey'>): Promise<Item[]> {
  const out: Item[] = [];
  let start: Item | undefined;
  do {
    const page = await db.client.send(new QueryCommand({ TableName: db.tables.usage, ...input, ExclusiveStartKey: start }));
    out.push(...(page.Items ?? []));
    start = page.LastEvaluatedKey;
  } while (start);
  return out;
}

/** Every item under one partition key of the base table. */
function partition(db: TestTables, value: string): Promise<Item[]> {
  return allPages(db, { KeyConditionExpression: 'pk = :p', ExpressionAttributeValues: { ':p': { S: value } } });
}

/** Exactly the query the store ran for a user in layout v1: one partition, sk BETWEEN from AND to, every page. */
async function preShardQuery(db: TestTables, q: UsageQuery): Promise<UsageRecord[]> {
  const items = await allPages(db, {
    KeyConditionExpression: 'pk = :p AND sk BETWEEN :from AND :to',
    ExpressionAttributeValues: {
      ':p': { S: `user#${q.id}` },
      ':from': { S: new Date(q.from).toISOString() },
      ':to': { S: new Date(q.to).toISOString() },
    },
  });
  return items.map(usageRecordFromItem);
}

/**
 * What one partition of the scope (base table, or byKey / byOrg of the layout before) gave for the query: the
 * scope's records with from ≤ timestamp < to, ordered by sk.
 */
function singlePartitionAnswer(records: readonly UsageRecord[], q: UsageQuery): UsageRecord[] {
  const field = q.by === 'user' ? 'userId' : q.by === 'key' ? 'keyId' : 'orgId';
  const [from, to] = [new Date(q.from).toISOString(), new Date(q.to).toISOString()];
  return records
    .filter((r) => r[field] === q.id && new Date(r.timestamp).toISOString() >= from && new Date(r.timestamp).toISOString() < to)
    .sort((a, b) => (usageSortKey(a.timestamp, a.requestId) < usageSortKey(b.timestamp, b.requestId) ? -1 : 1));
}

describe('usage partition shards', () => {
  it('when request ids are shaped like the gateway’s, each shard gets its share of them within 10%', () => {
    const counts = new Array<number>(USAGE_SCOPE_SHARDS).fill(0);
    const n = 1_000 * USAGE_SCOPE_SHARDS;
    for (let i = 0; i < n; i++) counts[usageScopeShard(requestId(`share-${i}`))]! += 1;
    for (const count of counts) {
      expect(count).toBeGreaterThan(0.9 * (n / USAGE_SCOPE_SHARDS));
      expect(count).toBeLessThan(1.1 * (n / USAGE_SCOPE_SHARDS));
    }
  });

  it('when a record is laid out, its day partition is its user’s shard its request id hashes to, and no index key is written', () => {
    const r = record({ requestId: requestId('layout'), timestamp: '2099-11-23T02:15:00Z', orgId: 'acme' });
    const n = usageScopeShard(r.requestId);
    const item = usageItem(r, { retentionDays: 30 });
    expect(item.pk).toEqual({ S: usageDayPartition('2099-11-23', 'alice', n) });
    expect(item.dayPk).toBeUndefined();
    expect(item.keyPk).toBeUndefined();
    expect(item.orgPk).toBeUndefined();
    expect(usagePartitionKeys('alice')).toEqual([
      ...Array.from({ length: USAGE_SCOPE_SHARDS }, (_, s) => usagePartitionKey('alice', s)),
      'user#alice',
    ]);
  });
});

describe('DynamoDbUsageStore over partition shards', () => {
  let sharded: TestTables;
  let before: TestTables;
  /** Small pages, so every partition of a report is read over several pages. */
  let store: DynamoDbUsageStore;
  const reads: Array<{ partition: string; scanned: number }> = [];
  let recording = false;

  const hot = Array.from({ length: 200 }, (_, i) =>
    record({ requestId: requestId(`hot-${i}`), timestamp: new Date(T0 + i * 1_000).toISOString(), userId: 'hot', keyId: 'khot', orgId: 'horg' }),
  );

  /**
   * Records of several users, keys and orgs over two days: groups of three of one owner share one timestamp
   * (so one instant of one user spans several shards and the request id orders them), some timestamps come
   * without milliseconds, user "a#3"'s v2 partition key is shard 3 of user "a" (and its sk prefix `a#3#` starts
   * with user "a"'s), and of every four records one is stored as layout v1 wrote it and one as v2 did.
   */
  const owners = [
    { userId: 'alice', keyId: 'ka', orgId: 'acme' },
    { userId: 'alice', keyId: 'kb' },
    { userId: 'bob', keyId: 'kc', orgId: 'acme' },
    { userId: 'a#3', keyId: 'kx', orgId: 'other' },
    { userId: 'a', keyId: 'ky', orgId: 'other' },
  ] as const;
  const mixed = Array.from({ length: 150 }, (_, i) => {
    const at = T0 - 11 * HOUR + Math.floor(i / 3) * 37 * 60_000;
    const timestamp = i % 7 === 0 ? new Date(at).toISOString().replace('.000Z', 'Z') : new Date(at).toISOString();
    return record({ requestId: requestId(`mixed-${i}`), timestamp, costMicros: 1_000 + i, ...owners[Math.floor(i / 3) % owners.length]! });
  });

  beforeAll(async () => {
    [sharded, before] = await Promise.all([createTestTables({ sdkOnly: true }), createTestTables()]);
    // Today is the day after the records' last: findRequest walks back over all three of their days.
    store = new DynamoDbUsageStore(sharded.client, sharded.tables, { pageSize: 2, now: () => T0 + 24 * HOUR });
    // Every fourth mixed record as layout v1 wrote it, the next as v2 did, the rest as this one does.
    const laidOut = (r: UsageRecord, i: number): Item =>
      i < hot.length || i % 4 > 1 ? usageItem(r, { retentionDays: 30 }) : i % 4 === 0 ? preShardItem(r) : v2UsageItem(r);
    await putAll(sharded, [...hot, ...mixed].map(laidOut));
    await putAll(before, [...hot, ...mixed].map(preShardItem));
    sharded.client.middlewareStack.add(
      (next) => async (args) => {
        const out = await next(args);
        const input = args.input as { IndexName?: string; ExpressionAttributeValues?: Record<string, AttributeValue> };
        const output = out.output as { ScannedCount?: number };
        if (recording && input.IndexName === undefined && output.ScannedCount !== undefined) {
          reads.push({ partition: input.ExpressionAttributeValues?.[':p']?.S ?? '', scanned: output.ScannedCount });
        }
        return out;
      },
      { step: 'initialize', name: 'recordBaseTableReads' },
    );
  });
  afterAll(() => Promise.all([sharded.cleanup(), before.cleanup()]));

  it('when one user writes under many request ids, the records land on every shard of its day partitions and none on the old keys', async () => {
    const counts: number[] = [];
    for (let n = 0; n < USAGE_SCOPE_SHARDS; n++) {
      const items = (await partition(sharded, usageDayPartition('2099-11-23', 'hot', n))).filter((i) => i.userId?.S === 'hot');
      expect(items.map((i) => usageScopeShard(i.requestId!.S!))).toEqual(items.map(() => n));
      expect(items.filter((i) => i.keyPk !== undefined || i.orgPk !== undefined)).toEqual([]);
      counts.push(items.length);
    }
    expect(counts.every((c) => c > 0)).toBe(true);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(hot.length);
    expect(Math.max(...counts)).toBeLessThan(hot.length / 4); // ~25 of 200 each; one key alone would hold all
    for (const old of usagePartitionKeys('hot')) expect(await partition(sharded, old)).toEqual([]);
  });

  it('when a user, key or org is queried, it gets exactly the records and order the single partition gave, across shards, pages and the old layout', async () => {
    const all = [...hot, ...mixed];
    const ranges = [
      { from: '2099-11-01T00:00:00Z', to: '2099-12-01T00:00:00Z' },
      { from: '2099-11-23T00:00:00.000Z', to: '2099-11-24T00:00:00.000Z' },
      // Bounds on a shared timestamp: from includes all three records at it, to excludes all three.
      { from: mixed[30]!.timestamp, to: mixed[90]!.timestamp },
      { from: new Date(T0 + 50_000).toISOString(), to: new Date(T0 + 150_500).toISOString() },
    ];
    const scopes: Array<Pick<UsageQuery, 'by' | 'id'>> = [
      { by: 'user', id: 'alice' },
      { by: 'user', id: 'bob' },
      { by: 'user', id: 'a' },
      { by: 'user', id: 'a#3' },
      { by: 'user', id: 'hot' },
      { by: 'key', id: 'ka' },
      { by: 'key', id: 'kb' },
      { by: 'key', id: 'kx' },
      { by: 'key', id: 'khot' },
      { by: 'org', id: 'acme' },
      { by: 'org', id: 'other' },
      { by: 'org', id: 'horg' },
      { by: 'user', id: 'nobody' },
    ];
    let compared = 0;
    for (const scope of scopes) {
      for (const r of ranges) {
        const q = { ...scope, ...r };
        const expected = singlePartitionAnswer(all, q);
        if (q.by === 'user') expect(await preShardQuery(before, q)).toEqual(expected); // the oracle is the old store's answer
        expect(await store.query(q)).toEqual(expected);
        compared += expected.length;
      }
    }
    expect(compared).toBeGreaterThan(500);
    // The instant shared by three records spans more than one shard, so the merge decides their order.
    expect(new Set([27, 28, 29].map((i) => usageScopeShard(mixed[i]!.requestId))).size).toBeGreaterThan(1);
  });

  it('when everything is queried, the day partitions still give every record once, in time order', async () => {
    const all = await store.queryAll('2099-11-22T00:00:00Z', '2099-11-25T00:00:00Z');
    const expected = [...hot, ...mixed].sort((a, b) => (usageSortKey(a.timestamp, a.requestId) < usageSortKey(b.timestamp, b.requestId) ? -1 : 1));
    expect(all.map((r) => r.requestId)).toEqual(expected.map((r) => r.requestId));
  });

  it('when a request is looked up, it reads only its user’s records in its own shard, day by day and newest first, at most maxScanned', async () => {
    const target = hot[120]!;
    const shard = usageScopeShard(target.requestId);
    const newerInShard = hot.filter((r) => r.timestamp > target.timestamp && usageScopeShard(r.requestId) === shard).length;
    const rank = newerInShard + 1;
    expect(rank).toBeGreaterThan(1);

    reads.length = 0;
    recording = true;
    try {
      expect(await store.findRequest({ keyId: 'khot', userId: 'hot', requestId: target.requestId, maxScanned: rank })).toEqual(target);
      // Today's partition of the shard (no records of "hot"), then the day of the records.
      expect(reads.map((r) => r.partition)).toEqual([
        usageDayPartition('2099-11-24', 'hot', shard),
        ...reads.slice(1).map(() => usageDayPartition('2099-11-23', 'hot', shard)),
      ]);
      expect(reads.reduce((sum, r) => sum + r.scanned, 0)).toBe(rank);

      reads.length = 0;
      expect(await store.findRequest({ keyId: 'khot', userId: 'hot', requestId: target.requestId, maxScanned: rank - 1 })).toBeUndefined();
      expect(reads.reduce((sum, r) => sum + r.scanned, 0)).toBe(rank - 1);
    } finally {
      recording = false;
    }
  });

  it('when a request is looked up with room to spare, every record of a key is found, in its shard or in the old layouts', async () => {
    for (const r of [...hot.filter((_, i) => i % 10 === 0), ...mixed]) {
      expect(await store.findRequest({ keyId: r.keyId, userId: r.userId, requestId: r.requestId, maxScanned: 5_000 })).toEqual(r);
    }
    // Another key of the same user, or the same key under another user: not this caller's record.
    expect(await store.findRequest({ keyId: 'kb', userId: 'alice', requestId: mixed[0]!.requestId, maxScanned: 5_000 })).toBeUndefined();
    expect(await store.findRequest({ keyId: 'ka', userId: 'bob', requestId: mixed[0]!.requestId, maxScanned: 5_000 })).toBeUndefined();
  });
});

describe('late settle over partition shards', () => {
  let db: TestTables;
  beforeAll(async () => {
    db = await createTestTables();
  });
  afterAll(() => db.cleanup());

  it('when swept holds of one user in every shard are settled late (twice each), each abandoned record is replaced exactly once in its shard', async () => {
    const user = 'late-user';
    const ledger = new DynamoDbLedger(db.client, { tables: db.tables, platformShards: 4, usageRetentionDays: 30, clock: new ManualClock(T0) });
    const ref: CounterRef = { scope: `user:${user}`, window: 'day', windowKey: windowKey('day', T0), windowEnd: windowBounds('day', T0).end, limit: 100_000_000 };
    // Two request ids per shard, chosen from a fixed sequence.
    const ids: string[] = [];
    for (let i = 0; ids.length < 2 * USAGE_SCOPE_SHARDS; i++) {
      const id = requestId(`late-${i}`);
      if (ids.filter((x) => usageScopeShard(x) === usageScopeShard(id)).length < 2) ids.push(id);
    }
    const held = 400_000;
    const reservations = [];
    for (const id of ids) {
      const input: ReserveInput = {
        requestId: id,
        now: T0,
        expiresAt: T0 + 60_000,
        amount: held,
        counters: [ref],
        rateCharges: [],
        context: { keyId: `key-${user}`, userId: user, model: 'gpt-4o-mini' },
      };
      reservations.push(await ledger.reserve(input));
    }
    expect(await ledger.sweepExpired(T0 + 61_000)).toBe(ids.length);
    for (let n = 0; n < USAGE_SCOPE_SHARDS; n++) {
      const items = (await partition(db, usageDayPartition('2099-11-23', user, n))).map((i) => unmarshall(i)).filter((i) => i.userId === user);
      expect(items.map((i) => i.outcome)).toEqual(['abandoned', 'abandoned']);
    }

    const costs = ids.map((_, i) => 10_000 + i);
    for (const [i, reservation] of reservations.entries()) {
      const usage = usageRecordFor(reservation.requestId, user, costs[i]!, T0);
      await ledger.settle({ reservation, cost: costs[i]!, usage });
      await ledger.settle({ reservation, cost: costs[i]!, usage }); // a retried settle changes nothing
    }

    const total = costs.reduce((a, b) => a + b, 0);
    expect((await ledger.readCounters([ref]))[0]).toMatchObject({ committed: total, spent: total, reserved: 0, requests: ids.length });
    const scan = await db.client.send(new ScanCommand({ TableName: db.tables.usage, ConsistentRead: true }));
    const items = (scan.Items ?? []).map((i) => unmarshall(i));
    expect(items.map((i) => i.requestId).sort()).toEqual([...ids].sort());
    for (const item of items) {
      expect(item).toMatchObject({ outcome: 'ok', pk: usageDayPartition('2099-11-23', user, usageScopeShard(String(item.requestId))) });
    }
    const store = new DynamoDbUsageStore(db.client, db.tables);
    const found = await store.query({ by: 'user', id: user, from: '2099-11-23T00:00:00Z', to: '2099-11-24T00:00:00Z' });
    expect(found.map((r) => r.costMicros).reduce((a, b) => a + b, 0)).toBe(total);
    expect(found.map((r) => r.requestId)).toEqual([...ids].sort());
  });
});
