/**
 * The DynamoDB physics of bench:scale (bench/support/dynamo-physics.ts) on DynamoDB Local: transaction
 * conflicts, per-partition throughput (GSI partitions included) and the SDK's throttling retries, all in
 * virtual time. Nothing here depends on how fast the machine is: every figure is virtual.
 */
import {
  type AttributeValue,
  GetItemCommand,
  PutItemCommand,
  TransactionCanceledException,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { StoreUnavailableError } from '../../lambda/core/errors';
import { windowBounds, windowKey } from '../../lambda/core/windows';
import { createDynamoDbClient } from '../../lambda/store/dynamodb/client';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { TABLES, type TableDefinition } from '../../lambda/store/dynamodb/schema';
import { DynamoPhysics, type PhysicsOptions } from '../../bench/support/dynamo-physics';
import { VirtualScheduler } from '../../bench/support/virtual-time';
import { createTestTables, testDynamoDbEndpoint, type TestTables } from '../support/dynamo';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write.
const T0 = Date.parse('2099-11-23T10:00:00.000Z');
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

interface World {
  readonly scheduler: VirtualScheduler;
  readonly physics: DynamoPhysics;
  readonly client: DynamoDBClient;
}

const clients: DynamoDBClient[] = [];
afterAll(() => clients.forEach((c) => c.destroy()));

function world(options: Partial<Omit<PhysicsOptions, 'scheduler' | 'tables'>> = {}): World {
  const scheduler = new VirtualScheduler(T0);
  const tables = new Map<string, TableDefinition>(TABLES.map((def) => [db.tables[def.id], def]));
  // One second of burst: a partition's whole per-second capacity is there at once, which keeps the counts simple.
  const physics = new DynamoPhysics({ scheduler, tables, random: () => 0.5, burstSeconds: 1, ...options });
  const client = createDynamoDbClient({ region: 'us-east-1', endpoint: testDynamoDbEndpoint(), maxAttempts: 10, requestTimeoutMs: 120_000, connectionTimeoutMs: 30_000 });
  physics.install(client);
  clients.push(client);
  return { scheduler, physics, client };
}

/** Runs the calls in virtual time and returns how each ended. */
async function settleAll<T>(w: World, calls: ReadonlyArray<Promise<T>>): Promise<Array<PromiseSettledResult<T>>> {
  const all = Promise.allSettled(calls);
  await w.scheduler.run({ maxVirtualMs: 600_000 });
  return all;
}

function uniquePk(what: string): string {
  seq += 1;
  return `${what}#${seq}-${Math.random().toString(36).slice(2, 8)}`;
}

const add = (table: string, pk: string, sk = 'c') =>
  ({
    Update: {
      TableName: table,
      Key: marshall({ pk, sk }),
      UpdateExpression: 'ADD n :one',
      ExpressionAttributeValues: { ':one': { N: '1' } },
    },
  }) as const;

/** A ledger on the plain client (no physics), for reading back outside virtual time. */
function plainLedger(): DynamoDbLedger {
  return new DynamoDbLedger(db.client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30 });
}

async function readN(client: DynamoDBClient, pk: string, sk = 'c'): Promise<number | undefined> {
  const out = await client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall({ pk, sk }), ConsistentRead: true }));
  return out.Item ? (unmarshall(out.Item).n as number) : undefined;
}

describe('transaction conflicts', () => {
  it('when two transactions overlap on one item, the second is cancelled with TransactionConflict on that item and writes nothing', async () => {
    const w = world();
    const counter = uniquePk('ctr');
    const other = uniquePk('hold');
    const first = w.client.send(new TransactWriteItemsCommand({ TransactItems: [add(db.tables.budgets, counter)] }));
    const second = w.client.send(new TransactWriteItemsCommand({ TransactItems: [add(db.tables.budgets, other), add(db.tables.budgets, counter)] }));
    const [a, b] = await settleAll(w, [first, second]);

    expect(a?.status).toBe('fulfilled');
    expect(b?.status).toBe('rejected');
    const err = (b as PromiseRejectedResult).reason as TransactionCanceledException;
    expect(err).toBeInstanceOf(TransactionCanceledException);
    expect(err.name).toBe('TransactionCanceledException');
    expect(err.CancellationReasons?.map((r) => r.Code)).toEqual(['None', 'TransactionConflict']);
    expect(await readN(db.client, counter)).toBe(1);
    expect(await readN(db.client, other)).toBeUndefined();
    expect(w.physics.stats.transactionConflicts).toBe(1);
  });

  it('when a condition-check item is held by another transaction, the transaction checking it is cancelled too', async () => {
    const w = world();
    const circuit = uniquePk('circuit');
    const counter = uniquePk('ctr');
    const writer = w.client.send(new TransactWriteItemsCommand({ TransactItems: [add(db.tables.budgets, circuit)] }));
    const checker = w.client.send(
      new TransactWriteItemsCommand({
        TransactItems: [
          { ConditionCheck: { TableName: db.tables.budgets, Key: marshall({ pk: circuit, sk: 'c' }), ConditionExpression: 'attribute_not_exists(openUntil)' } },
          add(db.tables.budgets, counter),
        ],
      }),
    );
    const [, b] = await settleAll(w, [writer, checker]);
    expect(((b as PromiseRejectedResult).reason as TransactionCanceledException).CancellationReasons?.map((r) => r.Code)).toEqual([
      'TransactionConflict',
      'None',
    ]);
    expect(await readN(db.client, counter)).toBeUndefined();
  });

  it('when a transaction holds an item, a single-item write to it fails with TransactionConflictException', async () => {
    const w = world();
    const counter = uniquePk('ctr');
    const txn = w.client.send(new TransactWriteItemsCommand({ TransactItems: [add(db.tables.budgets, counter)] }));
    const single = w.client.send(new UpdateItemCommand(add(db.tables.budgets, counter).Update));
    const [a, b] = await settleAll<unknown>(w, [txn, single]);
    expect(a?.status).toBe('fulfilled');
    expect((b as PromiseRejectedResult).reason).toMatchObject({ name: 'TransactionConflictException' });
    expect(await readN(db.client, counter)).toBe(1);
  });

  it('when a transaction starts after the one before it ended, both commit', async () => {
    const w = world();
    const counter = uniquePk('ctr');
    const run = async () => {
      await w.client.send(new TransactWriteItemsCommand({ TransactItems: [add(db.tables.budgets, counter)] }));
      await w.client.send(new TransactWriteItemsCommand({ TransactItems: [add(db.tables.budgets, counter)] }));
    };
    const [r] = await settleAll(w, [run()]);
    expect(r?.status).toBe('fulfilled');
    expect(await readN(db.client, counter)).toBe(2);
    expect(w.physics.stats.transactionConflicts).toBe(0);
    // Two transactions one after the other took virtual time, none of it real.
    expect(w.scheduler.now()).toBeGreaterThan(T0);
  });

  it('when the ledger meets a conflict, its own retry (in virtual time) commits the reserve', async () => {
    const w = world();
    const ledger = new DynamoDbLedger(w.client, {
      tables: db.tables,
      platformShards: 1,
      usageRetentionDays: 30,
      clock: w.scheduler,
      sleep: w.scheduler.sleep,
    });
    const scope = `user:${uniquePk('u')}` as const;
    const ref = { scope, window: 'day' as const, windowKey: windowKey('day', T0), windowEnd: windowBounds('day', T0).end, limit: 10_000 };
    const reserve = (n: number) =>
      ledger.reserve({
        requestId: `r-${scope}-${n}`,
        now: T0,
        expiresAt: T0 + 600_000,
        amount: 1_000,
        counters: [ref],
        rateCharges: [],
        context: { keyId: 'k', userId: scope.slice(5), model: 'm' },
      });
    const results = await settleAll(w, [reserve(1), reserve(2), reserve(3)]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
    expect(w.physics.stats.transactionConflicts).toBeGreaterThan(0);
    const [value] = await plainLedger().readCounters([ref]);
    expect(value?.reserved).toBe(3_000);
  });
});

describe('per-partition throughput', () => {
  it('when a partition is written past its WCU per second, the excess is throttled with ProvisionedThroughputExceededException', async () => {
    const w = world({ writeUnitsPerSecond: 10, sdkMaxAttempts: 1 });
    const pk = uniquePk('hot');
    const puts = Array.from({ length: 12 }, (_, i) =>
      w.client.send(new PutItemCommand({ TableName: db.tables.budgets, Item: marshall({ pk, sk: `s${i}` }) })),
    );
    const results = await settleAll(w, puts);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(10);
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(refused).toHaveLength(2);
    for (const r of refused) expect(r.reason).toMatchObject({ name: 'ProvisionedThroughputExceededException' });
    const hot = w.physics.hotPartitions(1)[0];
    expect(hot?.partition).toBe(`${db.tables.budgets}:${pk}`);
    expect(hot?.peakWriteUnitsPerSecond).toBe(10);
    expect(hot?.throttles).toBe(2);
  });

  it('when a burst meets a partition with the default burst allowance, only 100 ms of its capacity passes at once', async () => {
    const w = world({ writeUnitsPerSecond: 100, sdkMaxAttempts: 1, burstSeconds: undefined });
    const pk = uniquePk('burst');
    const puts = Array.from({ length: 30 }, (_, i) => w.client.send(new PutItemCommand({ TableName: db.tables.budgets, Item: marshall({ pk, sk: `s${i}` }) })));
    const results = await settleAll(w, puts);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(10);
  });

  it('when a throttled put is retried by the SDK after its backoff, it succeeds once the partition has refilled', async () => {
    const w = world({ writeUnitsPerSecond: 1 });
    const pk = uniquePk('slow');
    const put = (sk: string) => w.client.send(new PutItemCommand({ TableName: db.tables.budgets, Item: marshall({ pk, sk }) }));
    const results = await settleAll(w, [put('a'), put('b')]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
    expect(w.physics.stats.throttledCalls).toBeGreaterThan(0);
    expect(w.physics.stats.throttleFailures).toBe(0);
    // The backoff was waited in virtual time: at least the one second a unit takes to refill.
    expect(w.scheduler.now() - T0).toBeGreaterThanOrEqual(1_000);
  });

  it('when a transactional write costs twice the units, a partition takes half as many', async () => {
    const w = world({ writeUnitsPerSecond: 10 });
    const pk = uniquePk('txn');
    const txns = Array.from({ length: 6 }, (_, i) => w.client.send(new TransactWriteItemsCommand({ TransactItems: [add(db.tables.budgets, pk, `s${i}`)] })));
    const results = await settleAll(w, txns);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(5);
    const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect((refused?.reason as TransactionCanceledException).CancellationReasons?.map((r) => r.Code)).toEqual(['ThrottlingError']);
    expect(w.physics.stats.throttledTransactions).toBe(1);
  });

  it('when writes are billed, the total counts a transactional item twice, a single write once and an eventually consistent read half', async () => {
    const w = world();
    const pk = uniquePk('bill');
    await settleAll(w, [w.client.send(new TransactWriteItemsCommand({ TransactItems: [add(db.tables.budgets, pk, 'a'), add(db.tables.budgets, pk, 'b')] }))]);
    await settleAll(w, [w.client.send(new UpdateItemCommand(add(db.tables.budgets, pk, 'c').Update))]);
    await settleAll(w, [w.client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall({ pk, sk: 'c' }) }))]);
    expect(w.physics.totalUnits()).toEqual({ write: 2 * 2 + 1, read: 0.5 });
  });

  it('when updates grow an item past 1 KB, each later write is billed at the larger of its size before and after (the item read back)', async () => {
    const readItem = async (table: string, key: Record<string, AttributeValue>) =>
      (await db.client.send(new GetItemCommand({ TableName: table, Key: key, ConsistentRead: true }))).Item;
    const w = world({ readItem });
    const plain = world();
    const pk = uniquePk('grow');
    // Each write adds a 300-byte attribute: 0.3, 0.6, 0.9, 1.2, 1.5 KB after it.
    const grow = (i: number) =>
      new UpdateItemCommand({
        TableName: db.tables.budgets,
        Key: marshall({ pk, sk: 'g' }),
        UpdateExpression: 'SET #a = :v',
        ExpressionAttributeNames: { '#a': `a${i}` },
        ExpressionAttributeValues: { ':v': { S: 'x'.repeat(300) } },
      });
    for (let i = 0; i < 5; i++) await settleAll(w, [w.client.send(grow(i))]);
    expect(w.physics.totalUnits().write).toBe(1 + 1 + 1 + 2 + 2);
    // A failed conditional write is billed at the item's size too.
    const failed = new UpdateItemCommand({ ...grow(9).input, ConditionExpression: 'attribute_not_exists(pk)' });
    const [refused] = await settleAll(w, [w.client.send(failed)]);
    expect(refused?.status).toBe('rejected');
    expect(w.physics.totalUnits().write).toBe(7 + 2);
    // Without `readItem` an update is sized by its key and values only.
    await settleAll(plain, [plain.client.send(new UpdateItemCommand({ ...grow(5).input }))]);
    expect(plain.physics.totalUnits().write).toBe(1);
  });

  it('when a GSI partition is over its limit, the base-table write that feeds it is throttled', async () => {
    const w = world({ writeUnitsPerSecond: 2, sdkMaxAttempts: 1 });
    const dayPk = uniquePk('day');
    // Three different base partitions (users), one GSI partition (the day shard).
    const puts = [0, 1, 2].map((i) =>
      w.client.send(new PutItemCommand({ TableName: db.tables.usage, Item: marshall({ pk: `user#${dayPk}-${i}`, sk: 's', dayPk }) })),
    );
    const results = await settleAll(w, puts);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(2);
    expect(w.physics.hotPartitions(1)[0]?.partition).toBe(`${db.tables.usage}/byDay:${dayPk}`);
  });

  it('when the ledger reserves on a partition out of capacity, it answers StoreUnavailableError and writes nothing', async () => {
    const w = world({ writeUnitsPerSecond: 3 });
    const ledger = new DynamoDbLedger(w.client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock: w.scheduler, sleep: w.scheduler.sleep });
    const scope = `user:${uniquePk('u')}` as const;
    // Limited, so the reserve writes them (a window without a limit is written at settle only).
    const ref = { scope, window: 'day' as const, windowKey: windowKey('day', T0), windowEnd: windowBounds('day', T0).end, limit: 1_000_000 };
    // The counter and the hold are two transactional items: 4 WCU on two partitions; the counter's partition
    // has 3 WCU, so the reserve can never fit.
    const reserve = ledger.reserve({
      requestId: `r-${scope}`,
      now: T0,
      expiresAt: T0 + 600_000,
      amount: 1_000,
      counters: [ref, { ...ref, window: 'month', windowKey: windowKey('month', T0), windowEnd: windowBounds('month', T0).end }],
      rateCharges: [],
      context: { keyId: 'k', userId: scope.slice(5), model: 'm' },
    });
    const [r] = await settleAll(w, [reserve]);
    expect((r as PromiseRejectedResult).reason).toBeInstanceOf(StoreUnavailableError);
    const [value] = await plainLedger().readCounters([ref]);
    expect(value?.committed).toBe(0);
  });
});
