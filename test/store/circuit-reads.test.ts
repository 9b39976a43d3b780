/**
 * Circuits are decided from a strongly consistent read of their items before the reserve transaction, not by
 * ConditionChecks in it (2 write units per item per request): an open circuit still refuses with 429
 * `circuit_open` and its headers, writing nothing; a circuit another instance opens is seen by the next reserve
 * of every instance; a closed or expired one admits. On DynamoDB Local.
 */
import { GetItemCommand, ScanCommand, type TransactWriteItem } from '@aws-sdk/client-dynamodb';
import { ManualClock } from '../../lambda/core/clock';
import { CircuitOpenError } from '../../lambda/core/errors';
import type { CounterRef, RateCharge, ReserveInput } from '../../lambda/core/stores';
import { windowBounds, windowKey } from '../../lambda/core/windows';
import { DynamoDbGuardrailStore } from '../../lambda/store/dynamodb/guardrails-store';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { createTestTables, type TestTables } from '../support/dynamo';

const T0 = Date.parse('2099-11-23T10:00:00.000Z');
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

/** A ledger (one "instance") whose transactions are recorded. */
function instance(clock: ManualClock): { ledger: DynamoDbLedger; transactions: TransactWriteItem[][] } {
  const transactions: TransactWriteItem[][] = [];
  const client = db.client;
  const ledger = new DynamoDbLedger(
    new Proxy(client, {
      get(target, prop, receiver) {
        if (prop !== 'send') return Reflect.get(target, prop, receiver);
        return (command: { constructor: { name: string }; input: { TransactItems?: TransactWriteItem[] } }, ...rest: unknown[]) => {
          if (command.constructor.name === 'TransactWriteItemsCommand') transactions.push(command.input.TransactItems ?? []);
          return (target.send as (...a: unknown[]) => unknown).call(target, command, ...rest);
        };
      },
    }),
    { tables: db.tables, platformShards: 2, usageRetentionDays: 30, clock },
  );
  return { ledger, transactions };
}

function requestOf(user: string, now: number): ReserveInput {
  seq += 1;
  const counter: CounterRef = { scope: `user:${user}`, window: 'day', windowKey: windowKey('day', T0), windowEnd: windowBounds('day', T0).end, limit: 5_000_000 };
  const rate: RateCharge = { keyId: `key-${user}`, dimension: 'requests', limitPerMinute: 600, amount: 1 };
  return {
    requestId: `cr-${seq}-${Math.random().toString(36).slice(2, 8)}`,
    now,
    expiresAt: now + 600_000,
    amount: 1_000,
    counters: [counter],
    rateCharges: [rate],
    circuits: [{ scope: `key:key-${user}` }, { scope: `user:${user}` }, { scope: 'platform', shard: 1 }],
    context: { keyId: `key-${user}`, userId: user, model: 'gpt-4o-mini' },
  };
}

async function itemsOf(user: string): Promise<string[]> {
  const out = await db.client.send(new ScanCommand({ TableName: db.tables.budgets, ConsistentRead: true }));
  return (out.Items ?? []).map((i) => String(i.pk?.S)).filter((pk) => pk.includes(user) && !pk.startsWith('circuit'));
}

describe('circuits are read, not checked in the reserve transaction (DynamoDB Local)', () => {
  it('when circuits are closed, the reserve transaction carries no circuit item and the request is admitted', async () => {
    const user = `c${Date.now().toString(36)}a`;
    const { ledger, transactions } = instance(new ManualClock(T0));
    await ledger.reserve(requestOf(user, T0));
    expect(transactions).toHaveLength(1);
    const keys = transactions[0]!.map((item) => String((item.Update?.Key ?? item.Put?.Item ?? item.ConditionCheck?.Key ?? item.Delete?.Key)?.pk?.S));
    expect(keys).toContain(`ctr#user:${user}`);
    expect(keys.some((pk) => pk.startsWith('circuit#'))).toBe(false);
    expect(transactions[0]!.some((item) => item.ConditionCheck)).toBe(false);
  });

  it('when another instance opens a circuit, the next reserve of this one is refused with circuit_open and its headers, and what its reserve wrote beside the read is taken back whole', async () => {
    const user = `c${Date.now().toString(36)}b`;
    const clock = new ManualClock(T0);
    const { ledger, transactions } = instance(clock);
    await ledger.reserve(requestOf(user, T0));
    const before = await itemsOf(user);

    const guards = new DynamoDbGuardrailStore(db.client, { tables: db.tables, platformShards: 2, clock });
    await guards.openCircuit({ scope: `user:${user}`, cause: 'breaker', openedAt: T0 + 1, closesAt: T0 + 60_000, reason: 'hourly limit reached' });

    const err = (await ledger.reserve(requestOf(user, T0 + 2)).catch((e: unknown) => e)) as CircuitOpenError;
    expect(err).toBeInstanceOf(CircuitOpenError);
    expect(err.code).toBe('circuit_open');
    expect(err.message).toContain(`user:${user} is open (hourly limit reached)`);
    expect(err.headers['x-tollgate-circuit-scope']).toBe(`user:${user}`);
    expect(err.headers['x-tollgate-circuit-closes-at']).toBe(new Date(T0 + 60_000).toISOString());
    expect(err.headers['Retry-After']).toBe('60');
    expect(err.headers['x-should-retry']).toBe('false');
    // The read runs beside the reserve transaction (one round trip for both), so a reserve that committed is taken
    // back whole in one more transaction: its hold deleted, its counter and bucket given back what it added.
    expect(transactions).toHaveLength(3);
    expect(transactions[2]![0]!.Delete?.Key?.pk?.S).toMatch(/^hold#/);
    expect(await itemsOf(user)).toEqual(before);
    const counter = await db.client.send(
      new GetItemCommand({ TableName: db.tables.budgets, Key: { pk: { S: `ctr#user:${user}` }, sk: { S: windowKey('day', T0) } }, ConsistentRead: true }),
    );
    expect([Number(counter.Item?.committed?.N), Number(counter.Item?.reserved?.N)]).toEqual([1_000, 1_000]);
    // Having read it open, this instance reads the circuit first for a few seconds: refused again, no transaction.
    await expect(ledger.reserve(requestOf(user, T0 + 3))).rejects.toBeInstanceOf(CircuitOpenError);
    expect(transactions).toHaveLength(3);

    // Once it closes by itself, requests pass again.
    clock.set(T0 + 60_001);
    await expect(ledger.reserve(requestOf(user, T0 + 60_001))).resolves.toMatchObject({ amount: 1_000 });
  });

  it('when the platform circuit is open until acknowledged, a request on that shard is refused naming the acknowledgement', async () => {
    const user = `c${Date.now().toString(36)}c`;
    const clock = new ManualClock(T0 + 5_000_000);
    const { ledger } = instance(clock);
    const guards = new DynamoDbGuardrailStore(db.client, { tables: db.tables, platformShards: 2, clock });
    await guards.openCircuit({ scope: 'platform', cause: 'kill-switch', openedAt: clock.now(), reason: 'kill switch' });
    try {
      const err = (await ledger.reserve(requestOf(user, clock.now())).catch((e: unknown) => e)) as CircuitOpenError;
      expect(err).toBeInstanceOf(CircuitOpenError);
      expect(err.headers['x-tollgate-circuit-closes-at']).toBe('on-acknowledgement');
      expect(err.headers['Retry-After']).toBeUndefined();
    } finally {
      await guards.resetCircuit('platform', { by: 'test', reason: 'done', at: clock.now() });
    }
    await expect(ledger.reserve(requestOf(user, clock.now()))).resolves.toBeDefined();
  });
});
