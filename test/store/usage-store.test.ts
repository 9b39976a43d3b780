import { type DynamoDBClient, PutItemCommand, QueryCommand } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import type { UsageRecord } from '../../lambda/core/types';
import { USAGE_DAY_SHARDS, USAGE_SCOPE_SHARDS } from '../../lambda/store/dynamodb/schema';
import {
  DynamoDbUsageStore,
  usageDayPartition,
  usageItem,
  usageRecordFromItem,
  usageScopeShard,
  usageUserDayPartitions,
} from '../../lambda/store/dynamodb/usage-store';
import { createTestTables, type TestTables } from '../support/dynamo';
import { v2UsageItem } from '../support/usage-records';

function record(overrides: Partial<UsageRecord> & Pick<UsageRecord, 'requestId' | 'timestamp'>): UsageRecord {
  return {
    userId: 'alice',
    keyId: 'k1',
    provider: 'openai',
    model: 'gpt-4o-mini',
    requestType: 'chat',
    endpoint: '/v1/chat/completions',
    stream: false,
    usage: { inputTokens: 1200, outputTokens: 300, cachedInputTokens: 1000, cacheWriteTokens: 0 },
    costMicros: 1234,
    costEstimated: false,
    outcome: 'ok',
    httpStatus: 200,
    durationMs: 812,
    byok: false,
    ...overrides,
  };
}

describe('usageItem', () => {
  it('when a record has an org, it lays out every key, flattens usage and keeps money an integer N', () => {
    const r = record({ requestId: 'req-1', timestamp: '2099-11-23T02:15:00.000Z', orgId: 'acme', userAgent: 'curl/8' });
    const item = usageItem(r, { retentionDays: 30 });
    expect(item.pk).toEqual({ S: usageDayPartition('2099-11-23', 'alice', usageScopeShard('req-1')) });
    expect(item.pk?.S).toMatch(/^day#2099-11-23#\d+$/);
    expect(item.sk).toEqual({ S: 'alice#2099-11-23T02:15:00.000Z#req-1' });
    // No index key at all (no dayPk, keyPk or orgPk): the record is one write unit, the table's.
    expect(item.keyPk).toBeUndefined();
    expect(item.orgPk).toBeUndefined();
    expect(item.dayPk).toBeUndefined();
    expect(item.costMicros).toEqual({ N: '1234' });
    expect(item.cachedInputTokens).toEqual({ N: '1000' });
    expect(item.usage).toBeUndefined();
    expect(item.ttl).toEqual({ N: String(Date.parse('2099-11-23T02:15:00.000Z') / 1000 + 30 * 86_400) });
    expect(usageRecordFromItem(item)).toEqual(r);
  });

  it('when a record has no org, it writes no orgId', () => {
    const item = usageItem(record({ requestId: 'req-2', timestamp: '2099-11-23T02:15:00.000Z' }), { retentionDays: 30 });
    expect(item.orgPk).toBeUndefined();
    expect(item.orgId).toBeUndefined();
  });

  it('when one user’s request ids are hashed, its records take USAGE_SCOPE_SHARDS day partitions; many users take them all', () => {
    const mine = new Set<string>();
    for (let i = 0; i < 200; i++) mine.add(usageItem(record({ requestId: `req-${i}`, timestamp: '2099-11-23T00:00:00Z' }), { retentionDays: 1 }).pk!.S!);
    expect([...mine].sort()).toEqual(usageUserDayPartitions('2099-11-23', 'alice').sort());
    expect(mine.size).toBe(USAGE_SCOPE_SHARDS);
    const all = new Set<string>();
    for (let u = 0; u < 50; u++) for (const p of usageUserDayPartitions('2099-11-23', `user-${u}`)) all.add(p);
    expect([...all].sort()).toEqual(Array.from({ length: USAGE_DAY_SHARDS }, (_, n) => `day#2099-11-23#${n}`).sort());
  });

  it('when the cost is not a whole number of micro-USD, it refuses to build the item', () => {
    expect(() => usageItem(record({ requestId: 'x', timestamp: '2099-11-23T00:00:00Z', costMicros: 0.5 }), { retentionDays: 1 })).toThrow(
      /costMicros/,
    );
  });
});

describe('DynamoDbUsageStore', () => {
  let db: TestTables;
  let store: DynamoDbUsageStore;
  const records = [
    record({ requestId: 'a1', timestamp: '2099-11-22T23:59:59.999Z', userId: 'alice', keyId: 'ka', orgId: 'acme' }),
    record({ requestId: 'a2', timestamp: '2099-11-23T00:00:00.000Z', userId: 'alice', keyId: 'ka', orgId: 'acme' }),
    record({ requestId: 'a3', timestamp: '2099-11-23T10:00:00.000Z', userId: 'alice', keyId: 'kb' }),
    record({ requestId: 'b1', timestamp: '2099-11-23T11:00:00.000Z', userId: 'bob', keyId: 'kc', orgId: 'acme' }),
    record({ requestId: 'b2', timestamp: '2099-11-24T00:00:00.000Z', userId: 'bob', keyId: 'kc', orgId: 'acme' }),
    ...Array.from({ length: 12 }, (_, i) =>
      record({ requestId: `c${i}`, timestamp: `2099-11-23T12:00:${String(i).padStart(2, '0')}.000Z`, userId: 'carol', keyId: 'kd' }),
    ),
  ];

  beforeAll(async () => {
    db = await createTestTables();
    store = new DynamoDbUsageStore(db.client, db.tables);
    for (const r of records) {
      await db.client.send(new PutItemCommand({ TableName: db.tables.usage, Item: usageItem(r, { retentionDays: 30 }) }));
    }
  });
  afterAll(() => db.cleanup());

  const day = { from: '2099-11-23T00:00:00.000Z', to: '2099-11-24T00:00:00.000Z' };
  const ids = (rs: UsageRecord[]): string[] => rs.map((r) => r.requestId);

  it('when querying a user for a day, it returns that user’s records with from inclusive and to exclusive', async () => {
    expect(ids(await store.query({ by: 'user', id: 'alice', ...day }))).toEqual(['a2', 'a3']);
    expect(ids(await store.query({ by: 'user', id: 'bob', ...day }))).toEqual(['b1']);
  });

  it('when querying a key, it uses the key’s records only', async () => {
    expect(ids(await store.query({ by: 'key', id: 'ka', from: '2099-11-01T00:00:00Z', to: '2099-12-01T00:00:00Z' }))).toEqual(['a1', 'a2']);
  });

  it('when querying an org, it spans its users and skips records without an org', async () => {
    expect(ids(await store.query({ by: 'org', id: 'acme', ...day }))).toEqual(['a2', 'b1']);
  });

  it('when querying everything for a day, it reads all day shards and returns every record in time order', async () => {
    const all = await store.queryAll(day.from, day.to);
    expect(ids(all)).toEqual(['a2', 'a3', 'b1', ...Array.from({ length: 12 }, (_, i) => `c${i}`)]);
    expect(all.reduce((sum, r) => sum + r.costMicros, 0)).toBe(15 * 1234);
  });

  it('when querying everything across days, the partial first and last days are cut at from and to', async () => {
    const all = await store.queryAll('2099-11-22T23:00:00.000Z', '2099-11-23T10:00:00.001Z');
    expect(ids(all)).toEqual(['a1', 'a2', 'a3']);
  });

  it('when records were written by layout v2 (with 16 or the older 4 byDay shards), every report still finds them beside new ones', async () => {
    const old = record({ requestId: 'old-4-shards', timestamp: '2099-11-25T08:00:00.000Z', userId: 'dora', keyId: 'kold', orgId: 'legacy' });
    const v2 = record({ requestId: 'old-16-shards', timestamp: '2099-11-25T09:00:00.000Z', userId: 'dora', keyId: 'kold', orgId: 'legacy' });
    const now = record({ requestId: 'new', timestamp: '2099-11-25T08:30:00.000Z', userId: 'dora', keyId: 'kold', orgId: 'legacy' });
    await db.client.send(new PutItemCommand({ TableName: db.tables.usage, Item: v2UsageItem(old, { dayShards: 4 }) }));
    await db.client.send(new PutItemCommand({ TableName: db.tables.usage, Item: v2UsageItem(v2) }));
    await db.client.send(new PutItemCommand({ TableName: db.tables.usage, Item: usageItem(now, { retentionDays: 30 }) }));
    const next = { from: '2099-11-25T00:00:00.000Z', to: '2099-11-26T00:00:00.000Z' };
    const expected = ['old-4-shards', 'new', 'old-16-shards'];
    expect(ids(await store.queryAll(next.from, next.to))).toEqual(expected);
    expect(ids(await store.query({ by: 'key', id: 'kold', ...next }))).toEqual(expected);
    expect(ids(await store.query({ by: 'org', id: 'legacy', ...next }))).toEqual(expected);
    expect(ids(await store.query({ by: 'user', id: 'dora', ...next }))).toEqual(expected);
  });

  it('with a retention, an "all time" report of a user reads only the days records can be in, and finds them', async () => {
    let queries = 0;
    const counting = {
      send: (command: Parameters<DynamoDBClient['send']>[0]) => {
        if (command instanceof QueryCommand) queries += 1;
        return db.client.send(command);
      },
    } as unknown as DynamoDBClient;
    const kept = new DynamoDbUsageStore(counting, db.tables, { retentionDays: 30, now: () => Date.parse('2099-11-24T12:00:00Z') });
    expect(ids(await kept.query({ by: 'user', id: 'alice', from: '2000-01-01T00:00:00Z', to: '2200-01-01T00:00:00Z' }))).toEqual(['a1', 'a2', 'a3']);
    // 30 days of retention, 2 of TTL lag, today and tomorrow: 34 days of the user's 8 partitions, and its 9
    // partitions of the layouts before (read over the whole range: no days to walk).
    expect(queries).toBe(34 * USAGE_SCOPE_SHARDS + USAGE_SCOPE_SHARDS + 1);
    // Without one, such a range is refused (it would read 73,000 days).
    await expect(store.query({ by: 'user', id: 'alice', from: '2000-01-01T00:00:00Z', to: '2200-01-01T00:00:00Z' })).rejects.toThrow(/at most 1000 days/);
  });

  it('when a request is looked up, it is found within lookbackDays of today and not beyond', async () => {
    const at = (now: string, lookbackDays: number) => new DynamoDbUsageStore(db.client, db.tables, { lookbackDays, now: () => Date.parse(now) });
    const q = { keyId: 'ka', userId: 'alice', requestId: 'a1', maxScanned: 100 };
    expect((await at('2099-11-22T23:59:59.999Z', 0).findRequest(q))?.requestId).toBe('a1');
    expect((await at('2099-11-25T08:00:00Z', 3).findRequest(q))?.requestId).toBe('a1');
    expect(await at('2099-11-25T08:00:00Z', 2).findRequest(q)).toBeUndefined();
  });

  it('when from is not before to, it rejects the query', async () => {
    await expect(store.query({ by: 'user', id: 'alice', from: day.to, to: day.from })).rejects.toThrow(/must be before/);
  });

  it('when a stored item is read back, it is the record that was written', async () => {
    const [first] = await store.query({ by: 'user', id: 'alice', from: '2099-11-22T00:00:00Z', to: '2099-11-23T00:00:00Z' });
    expect(first).toEqual(records[0]);
    expect(unmarshall(usageItem(records[0] as UsageRecord, { retentionDays: 1 })).costMicros).toBe(1234);
  });
});
