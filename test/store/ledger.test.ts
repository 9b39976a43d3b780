import { GetItemCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { ManualClock } from '../../lambda/core/clock';
import { BudgetExceededError, RateLimitError } from '../../lambda/core/errors';
import type { CounterRef, RateCharge, Reservation, ReserveInput } from '../../lambda/core/stores';
import type { ScopeId, UsageRecord } from '../../lambda/core/types';
import { windowBounds, windowKey, type Window } from '../../lambda/core/windows';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { DynamoDbUsageStore } from '../../lambda/store/dynamodb/usage-store';
import { createTestTables, type TestTables } from '../support/dynamo';
import { usageRecordFor } from '../support/usage-records';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write (see test/support/clock.ts).
const T0 = Date.parse('2099-11-23T10:00:00.000Z');
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

function ledger(clock = new ManualClock(T0), platformShards = 4): DynamoDbLedger {
  return new DynamoDbLedger(db.client, { tables: db.tables, platformShards, usageRetentionDays: 30, clock });
}

/** A unique scope per test so tests sharing the tables never share counters. */
function uniqueUser(): string {
  seq += 1;
  return `u${seq}-${Math.random().toString(36).slice(2, 8)}`;
}

function counter(scope: ScopeId, options: { window?: Window; limit?: number; shard?: number; at?: number } = {}): CounterRef {
  const window = options.window ?? 'day';
  const at = options.at ?? T0;
  return {
    scope,
    window,
    windowKey: windowKey(window, at),
    windowEnd: windowBounds(window, at).end,
    ...(options.limit !== undefined ? { limit: options.limit } : {}),
    ...(options.shard !== undefined ? { shard: options.shard } : {}),
  };
}

function reserveInput(
  userId: string,
  options: { amount: number; counters: CounterRef[]; rateCharges?: RateCharge[]; now?: number; ttlMs?: number },
): ReserveInput {
  seq += 1;
  const now = options.now ?? T0;
  return {
    requestId: `req-${seq}-${Math.random().toString(36).slice(2, 8)}`,
    now,
    expiresAt: now + (options.ttlMs ?? 15 * 60_000),
    amount: options.amount,
    counters: options.counters,
    rateCharges: options.rateCharges ?? [],
    context: { keyId: `key-${userId}`, userId, model: 'gpt-4o-mini' },
  };
}

function usageFor(reservation: Reservation, userId: string, cost: number, at = T0): UsageRecord {
  return usageRecordFor(reservation.requestId, userId, cost, at);
}

async function holds(): Promise<Array<Record<string, unknown>>> {
  const out = await db.client.send(
    new ScanCommand({
      TableName: db.tables.budgets,
      FilterExpression: 'begins_with(pk, :h)',
      ExpressionAttributeValues: { ':h': { S: 'hold#' } },
      ConsistentRead: true,
    }),
  );
  return (out.Items ?? []).map((i) => unmarshall(i));
}

async function holdsOf(requestId: string): Promise<number> {
  return (await holds()).filter((h) => h.requestId === requestId).length;
}

async function bucketTat(keyId: string, dimension: 'requests' | 'tokens'): Promise<number | undefined> {
  const { Item } = await db.client.send(
    new GetItemCommand({ TableName: db.tables.budgets, Key: marshall({ pk: `rl#${keyId}`, sk: dimension }), ConsistentRead: true }),
  );
  return Item?.tat?.N !== undefined ? Number(Item.tat.N) : undefined;
}

describe('DynamoDbLedger reserve and settle', () => {
  it('when a request is reserved then settled, the hold moves from reserved to spent and the hold item is gone', async () => {
    const user = uniqueUser();
    const l = ledger();
    const refs = [counter(`user:${user}`, { limit: 5_000_000 }), counter(`key:key-${user}`, { window: 'month' })];
    const r = await l.reserve(reserveInput(user, { amount: 30_000, counters: refs }));

    const [userDay, keyMonth] = await l.readCounters(refs);
    expect(userDay).toMatchObject({ committed: 30_000, reserved: 30_000, spent: 0, requests: 0 });
    // A window without a limit is not reserved on: settle adds the cost to it (reads show spent only).
    expect(keyMonth).toMatchObject({ committed: 0, reserved: 0, spent: 0 });
    expect(await holdsOf(r.requestId)).toBe(1);

    await l.settle({ reservation: r, cost: 12_345, usage: usageFor(r, user, 12_345) });
    const after = await l.readCounters(refs);
    for (const value of after) expect(value).toMatchObject({ committed: 12_345, reserved: 0, spent: 12_345, requests: 1 });
    expect(await holdsOf(r.requestId)).toBe(0);
    const usage = await new DynamoDbUsageStore(db.client, db.tables).query({
      by: 'user',
      id: user,
      from: '2099-11-23T00:00:00Z',
      to: '2099-11-24T00:00:00Z',
    });
    expect(usage).toEqual([usageFor(r, user, 12_345)]);
  });

  it('when a request would cross a budget, it is denied naming scope and window, and nothing changes', async () => {
    const user = uniqueUser();
    const l = ledger();
    const limited = counter(`user:${user}`, { limit: 5_000_000 });
    const other = counter(`key:key-${user}`);
    const first = await l.reserve(reserveInput(user, { amount: 5_000_000, counters: [limited, other] }));
    await l.settle({ reservation: first, cost: 4_990_000, usage: usageFor(first, user, 4_990_000) });
    const before = await l.readCounters([limited, other]);

    const input = reserveInput(user, {
      amount: 30_000,
      counters: [other, limited],
      rateCharges: [{ keyId: `key-${user}`, dimension: 'requests', limitPerMinute: 100, amount: 1 }],
    });
    const err = await l.reserve(input).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BudgetExceededError);
    const denial = err as BudgetExceededError;
    expect(denial.code).toBe('insufficient_quota');
    expect(denial.message).toBe(
      `Budget exceeded: user ${user} has spent $4.99 of its $5.00 daily budget and this request needs up to $0.03; ` +
        `it resets at ${new Date(limited.windowEnd).toISOString().slice(0, 10)} 00:00 UTC, or ask an admin to raise it (budgets set user:${user} day USD).`,
    );
    expect(denial.headers['x-tollgate-budget-window']).toBe('day');

    expect(await l.readCounters([limited, other])).toEqual(before);
    expect(await holdsOf(input.requestId)).toBe(0);
    expect(await bucketTat(`key-${user}`, 'requests')).toBeUndefined();
  });

  it('when a request needs more than the whole limit, it is denied without touching the store', async () => {
    const user = uniqueUser();
    const l = ledger();
    const limited = counter(`user:${user}`, { limit: 1_000 });
    await expect(l.reserve(reserveInput(user, { amount: 1_001, counters: [limited] }))).rejects.toThrow(/more than the whole limit/);
    expect(await l.readCounters([limited])).toEqual([{ ref: limited, committed: 0, spent: 0, reserved: 0, requests: 0 }]);
  });

  it('when 20 requests race for a budget that fits 7, exactly 7 are admitted and committed never exceeds the limit', async () => {
    const user = uniqueUser();
    const l = ledger();
    const amount = 100_000;
    const limit = 7 * amount + amount - 1;
    const ref = counter(`user:${user}`, { limit });
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, () => l.reserve(reserveInput(user, { amount, counters: [ref] }))),
    );
    const admitted = results.filter((r) => r.status === 'fulfilled');
    const denied = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(admitted).toHaveLength(7);
    for (const d of denied) expect(d.reason).toBeInstanceOf(BudgetExceededError);
    const [value] = await l.readCounters([ref]);
    expect(value?.committed).toBe(7 * amount);
    expect(value?.committed).toBeLessThanOrEqual(limit);
  });

  it('when many requests settle, the counters equal the sum of the usage records and no hold is left', async () => {
    const user = uniqueUser();
    const l = ledger();
    const refs = [counter(`user:${user}`, { limit: 10_000_000 }), counter(`user:${user}`, { window: 'hour', limit: 10_000_000 })];
    const costs = [0, 1, 999, 250_000, 73_210, 5];
    const reservations = await Promise.all(costs.map(() => l.reserve(reserveInput(user, { amount: 300_000, counters: refs }))));
    await Promise.all(reservations.map((r, i) => l.settle({ reservation: r, cost: costs[i] as number, usage: usageFor(r, user, costs[i] as number, T0 + i) })));

    const records = await new DynamoDbUsageStore(db.client, db.tables).query({
      by: 'user',
      id: user,
      from: '2099-11-23T00:00:00Z',
      to: '2099-11-24T00:00:00Z',
    });
    const total = records.reduce((sum, r) => sum + r.costMicros, 0);
    expect(records).toHaveLength(costs.length);
    expect(total).toBe(costs.reduce((a, b) => a + b, 0));
    for (const value of await l.readCounters(refs)) {
      expect(value).toMatchObject({ spent: total, committed: total, reserved: 0, requests: costs.length });
    }
    for (const r of reservations) expect(await holdsOf(r.requestId)).toBe(0);
  });

  it('when the sweeper reclaims an expired hold, it charges the full reservation as an estimated abandoned record', async () => {
    const user = uniqueUser();
    const l = ledger();
    const ref = counter(`user:${user}`, { limit: 1_000_000 });
    const r = await l.reserve(reserveInput(user, { amount: 400_000, counters: [ref], ttlMs: 60_000 }));

    expect(await l.sweepExpired(T0 + 30_000)).toBe(0);
    expect(await l.sweepExpired(T0 + 61_000)).toBeGreaterThanOrEqual(1);
    expect(await holdsOf(r.requestId)).toBe(0);
    expect((await l.readCounters([ref]))[0]).toMatchObject({ committed: 400_000, reserved: 0, spent: 400_000, requests: 1 });
    const store = new DynamoDbUsageStore(db.client, db.tables);
    const range = { by: 'user' as const, id: user, from: '2099-11-23T00:00:00Z', to: '2099-11-24T00:00:00Z' };
    expect((await store.query(range)).map((u) => [u.outcome, u.costMicros, u.costEstimated])).toEqual([['abandoned', 400_000, true]]);
    // Swept money is still spent: the next reservation finds only 600_000 left.
    await expect(l.reserve(reserveInput(user, { amount: 600_001, counters: [ref] }))).rejects.toBeInstanceOf(BudgetExceededError);
  });

  it('when a settle arrives after the sweep, its actual cost replaces the estimate exactly once', async () => {
    const user = uniqueUser();
    const l = ledger();
    const ref = counter(`user:${user}`, { limit: 1_000_000 });
    const r = await l.reserve(reserveInput(user, { amount: 400_000, counters: [ref], ttlMs: 60_000 }));
    await l.sweepExpired(T0 + 61_000);

    const late = usageFor(r, user, 150_000);
    await l.settle({ reservation: r, cost: 150_000, usage: late });
    await l.settle({ reservation: r, cost: 150_000, usage: late }); // a retry of the same settle
    expect((await l.readCounters([ref]))[0]).toMatchObject({ committed: 150_000, reserved: 0, spent: 150_000, requests: 1 });
    const store = new DynamoDbUsageStore(db.client, db.tables);
    const range = { by: 'user' as const, id: user, from: '2099-11-23T00:00:00Z', to: '2099-11-24T00:00:00Z' };
    expect((await store.query(range)).map((u) => [u.outcome, u.costMicros, u.costEstimated])).toEqual([['ok', 150_000, false]]);
  });

  it('when a late settle costs more than the swept reservation, the difference is charged on top', async () => {
    const user = uniqueUser();
    const l = ledger();
    const ref = counter(`user:${user}`);
    const r = await l.reserve(reserveInput(user, { amount: 100_000, counters: [ref], ttlMs: 60_000 }));
    await l.sweepExpired(T0 + 61_000);
    await l.settle({ reservation: r, cost: 130_000, usage: usageFor(r, user, 130_000) });
    expect((await l.readCounters([ref]))[0]).toMatchObject({ committed: 130_000, reserved: 0, spent: 130_000, requests: 1 });
  });

  it('when a hold is gone and no record of it exists, a late settle charges its whole cost once', async () => {
    const user = uniqueUser();
    const l = ledger();
    const ref = counter(`user:${user}`);
    const r = await l.reserve(reserveInput(user, { amount: 100_000, counters: [ref], ttlMs: 60_000 }));
    await l.sweepExpired(T0 + 61_000);
    // A record under another key (an older writer's timestamp): the abandoned one stays, the settle adds its own.
    const elsewhere = usageFor(r, user, 20_000, T0 + 1);
    await l.settle({ reservation: r, cost: 20_000, usage: elsewhere });
    await l.settle({ reservation: r, cost: 20_000, usage: elsewhere });
    expect((await l.readCounters([ref]))[0]).toMatchObject({ committed: 120_000, spent: 120_000, requests: 2 });
  });

  it('when the same reservation is settled twice, the second settle changes nothing', async () => {
    const user = uniqueUser();
    const l = ledger();
    const ref = counter(`user:${user}`);
    const r = await l.reserve(reserveInput(user, { amount: 10_000, counters: [ref] }));
    await l.settle({ reservation: r, cost: 7_000, usage: usageFor(r, user, 7_000) });
    await l.settle({ reservation: r, cost: 7_000, usage: usageFor(r, user, 7_000) });
    expect((await l.readCounters([ref]))[0]).toMatchObject({ committed: 7_000, reserved: 0, spent: 7_000, requests: 1 });
  });
});

describe('DynamoDbLedger rate limits', () => {
  it('when a key exceeds its requests per minute, it gets a RateLimitError with Retry-After and nothing is written', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    const ref = counter(`user:${user}`, { limit: 5_000_000 });
    const rpm: RateCharge = { keyId: `key-${user}`, dimension: 'requests', limitPerMinute: 3, amount: 1 };
    const states = [];
    for (let i = 0; i < 3; i++) states.push((await l.reserve(reserveInput(user, { amount: 10, counters: [ref], rateCharges: [rpm] }))).rateStates[0]);
    expect(states.map((s) => s?.remaining)).toEqual([2, 1, 0]);
    const tatBefore = await bucketTat(rpm.keyId, 'requests');

    const input = reserveInput(user, { amount: 10, counters: [ref], rateCharges: [rpm] });
    const err = (await l.reserve(input).catch((e: unknown) => e)) as RateLimitError;
    expect(err).toBeInstanceOf(RateLimitError);
    expect(err.code).toBe('rate_limit_exceeded');
    expect(err.headers['Retry-After']).toBe('20');
    expect(err.headers['x-ratelimit-limit-requests']).toBe('3');
    expect(err.headers['x-ratelimit-remaining-requests']).toBe('0');
    expect(err.headers['x-ratelimit-reset-requests']).toBe('1m0s');
    expect(await bucketTat(rpm.keyId, 'requests')).toBe(tatBefore);
    expect((await l.readCounters([ref]))[0]?.committed).toBe(30);
    expect(await holdsOf(input.requestId)).toBe(0);

    clock.advance(20_000);
    await expect(l.reserve(reserveInput(user, { amount: 10, counters: [ref], rateCharges: [rpm], now: clock.now() }))).resolves.toBeDefined();
  });

  it('when a key keeps sending past its rate limit, the instance that was refused refuses its next requests without a store call until the retry time it gave, with the same headers; another instance asks the store', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    let calls = 0;
    const counting = new Proxy(db.client, {
      get(target, prop, receiver) {
        if (prop !== 'send') return Reflect.get(target, prop, receiver);
        return (...args: unknown[]) => {
          calls++;
          return (target.send as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const l = new DynamoDbLedger(counting, { tables: db.tables, platformShards: 4, usageRetentionDays: 30, clock });
    const ref = counter(`user:${user}`, { limit: 5_000_000 });
    const rpm: RateCharge = { keyId: `key-${user}`, dimension: 'requests', limitPerMinute: 3, amount: 1 };
    const next = () => reserveInput(user, { amount: 10, counters: [ref], rateCharges: [rpm], now: clock.now() });
    for (let i = 0; i < 3; i++) await l.reserve(next());
    const first = (await l.reserve(next()).catch((e: unknown) => e)) as RateLimitError;
    expect(first).toBeInstanceOf(RateLimitError);
    expect(first.headers['Retry-After']).toBe('20');

    // 5 s later, the same instance: refused from what the store said, with no call, and a shorter Retry-After.
    clock.advance(5_000);
    const before = calls;
    const again = (await l.reserve(next()).catch((e: unknown) => e)) as RateLimitError;
    expect(again).toBeInstanceOf(RateLimitError);
    expect(again.code).toBe('rate_limit_exceeded');
    expect(again.headers['Retry-After']).toBe('15');
    expect(again.headers['x-ratelimit-remaining-requests']).toBe('0');
    expect(calls).toBe(before);
    // A cache hit's rate charge too.
    await expect(l.chargeRate({ now: clock.now(), rateCharges: [rpm] })).rejects.toThrow(RateLimitError);
    expect(calls).toBe(before);
    expect((await l.readCounters([ref]))[0]?.committed).toBe(30);

    // Another instance has not seen the refusal: it asks the store, which refuses it too.
    await expect(ledger(clock).reserve(next())).rejects.toThrow(RateLimitError);

    // At the retry time the bucket admits again, and the instance asks the store again.
    clock.advance(15_000);
    await expect(l.reserve(next())).resolves.toBeDefined();
    expect(calls).toBeGreaterThan(before);
  });

  it('when a request needs more tokens than the bucket holds, it is refused without a write', async () => {
    const user = uniqueUser();
    const l = ledger();
    const charge: RateCharge = { keyId: `key-${user}`, dimension: 'tokens', limitPerMinute: 1_000, amount: 1_001 };
    await expect(l.reserve(reserveInput(user, { amount: 1, counters: [], rateCharges: [charge] }))).rejects.toThrow(/Request too large/);
    expect(await bucketTat(charge.keyId, 'tokens')).toBeUndefined();
  });

  it('when settle reports fewer tokens than estimated, the token bucket is refunded the difference', async () => {
    const user = uniqueUser();
    const l = ledger();
    const charge: RateCharge = { keyId: `key-${user}`, dimension: 'tokens', limitPerMinute: 1_000, amount: 800 };
    const first = await l.reserve(reserveInput(user, { amount: 1, counters: [], rateCharges: [charge] }));
    // Without a refund the next 800 cannot fit (800 + 800 > 1000).
    await expect(l.reserve(reserveInput(user, { amount: 1, counters: [], rateCharges: [charge] }))).rejects.toThrow(RateLimitError);

    await l.settle({ reservation: first, cost: 1, actualTokens: 150, usage: usageFor(first, user, 1) });
    expect(await bucketTat(charge.keyId, 'tokens')).toBe(T0 * 1000 + 150 * 60_000);
    const second = await l.reserve(reserveInput(user, { amount: 1, counters: [], rateCharges: [charge] }));
    expect(second.rateStates[0]?.remaining).toBe(50);
  });

  it('when another instance has moved the bucket, a fresh instance charges it exactly, from where the other left it', async () => {
    const user = uniqueUser();
    const a = ledger();
    const b = ledger(); // a second Lambda: no hint for this bucket
    const rpm: RateCharge = { keyId: `key-${user}`, dimension: 'requests', limitPerMinute: 10, amount: 1 };
    await a.reserve(reserveInput(user, { amount: 1, counters: [], rateCharges: [rpm] }));
    await b.reserve(reserveInput(user, { amount: 1, counters: [], rateCharges: [rpm] }));
    expect(await bucketTat(rpm.keyId, 'requests')).toBe(T0 * 1000 + 12_000_000);
    const fromA = await a.reserve(reserveInput(user, { amount: 1, counters: [], rateCharges: [rpm] }));
    expect(fromA.rateStates[0]?.remaining).toBeLessThanOrEqual(8);
    expect(await bucketTat(rpm.keyId, 'requests')).toBe(T0 * 1000 + 18_000_000);
  });

  it('when a key was quiet for longer than the lag, its bucket restarts from now, also from an instance that did not know', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const a = ledger(clock);
    const rpm: RateCharge = { keyId: `key-${user}`, dimension: 'requests', limitPerMinute: 10, amount: 1 };
    await a.reserve(reserveInput(user, { amount: 1, counters: [], rateCharges: [rpm], now: clock.now() }));
    clock.advance(30_000);
    // a knows the bucket went idle 24 s ago: it resets (tat = now + 6 s), not old tat + 6 s.
    await a.reserve(reserveInput(user, { amount: 1, counters: [], rateCharges: [rpm], now: clock.now() }));
    expect(await bucketTat(rpm.keyId, 'requests')).toBe((T0 + 36_000) * 1000);
    clock.advance(60_000);
    // b knows nothing and tries "advance"; the old tat is 54 s behind, so one retry resets it.
    const b = ledger(clock);
    const fromB = await b.reserve(reserveInput(user, { amount: 1, counters: [], rateCharges: [rpm], now: clock.now() }));
    expect(await bucketTat(rpm.keyId, 'requests')).toBe((T0 + 96_000) * 1000);
    expect(fromB.rateStates[0]?.remaining).toBe(9);
  });

  it('when 30 requests from several instances race for a 10 rpm bucket, exactly 10 are admitted', async () => {
    const user = uniqueUser();
    const instances = [ledger(), ledger(), ledger()];
    const rpm: RateCharge = { keyId: `key-${user}`, dimension: 'requests', limitPerMinute: 10, amount: 1 };
    const results = await Promise.allSettled(
      Array.from({ length: 30 }, (_, i) => instances[i % 3]!.reserve(reserveInput(user, { amount: 1, counters: [], rateCharges: [rpm] }))),
    );
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(10);
    expect(results.filter((r) => r.status === 'rejected').every((r) => (r as PromiseRejectedResult).reason instanceof RateLimitError)).toBe(true);
  });
});

describe('DynamoDbLedger counters and limits', () => {
  it('when platform spend lands on several shards, readCounters returns one summed value', async () => {
    const l = ledger(new ManualClock(T0), 4);
    const at = Date.parse('2101-01-01T00:00:00Z'); // a window no other test touches
    const refs = [0, 3, 3, 1].map((shard) => counter('platform', { shard, at }));
    for (const [i, ref] of refs.entries()) {
      await l.reserve(reserveInput('platform-user', { amount: (i + 1) * 100, counters: [ref], now: at }));
    }
    const values = await l.readCounters(refs);
    expect(values).toHaveLength(1);
    expect(values[0]).toMatchObject({ committed: 1_000, reserved: 1_000 });
    expect(values[0]?.ref.shard).toBeUndefined();
  });

  it('when limits are set and removed, getLimits reads them back per scope and window', async () => {
    const l = ledger();
    const user = uniqueUser();
    const scope = `user:${user}` as const;
    await l.setLimit(scope, 'day', 5_000_000);
    await l.setLimit(scope, 'month', 50_000_000);
    await l.setLimit('platform', 'hour', 1_000_000);
    await l.setLimit(scope, 'month', null);
    const limits = await l.getLimits([scope, 'platform', 'org:nobody']);
    expect(limits.get(scope)).toEqual({ day: 5_000_000 });
    expect(limits.get('platform')).toEqual({ hour: 1_000_000 });
    expect(limits.get('org:nobody')).toEqual({});
  });

  it('when a reservation would need more than 100 transaction items, it is refused before any write', async () => {
    const l = ledger();
    const refs = Array.from({ length: 100 }, (_, i) => counter(`user:many-${i}`));
    await expect(l.reserve(reserveInput('many', { amount: 1, counters: refs }))).rejects.toThrow(/100/);
  });
});
