/**
 * Counters without a limit are written only at settle (issue 21, org shape): a request held on its own reserves
 * on its limited counters and on the shared scopes' (org, platform); a key's or a user's window without a limit
 * gets the cost once, from the settle, the sweeper's full charge or a late settle after a sweep, whatever answers
 * are lost on the way. On DynamoDB Local.
 */
import { ScanCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { ManualClock } from '../../lambda/core/clock';
import type { CounterRef, Reservation } from '../../lambda/core/stores';
import type { ScopeId, UsageRecord } from '../../lambda/core/types';
import { windowBounds, windowKey, type Window } from '../../lambda/core/windows';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { DynamoDbUsageStore } from '../../lambda/store/dynamodb/usage-store';
import { createTestTables, type TestTables } from '../support/dynamo';
import { losingAnswers } from '../support/lost-answers';
import { reserveInputFor, usageRecordFor } from '../support/usage-records';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write (see test/support/clock.ts).
const T0 = Date.parse('2099-11-23T10:00:00.000Z');
const HOLD_TTL = 60_000;
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

function ledger(client: DynamoDBClient = db.client, clock = new ManualClock(T0)): DynamoDbLedger {
  return new DynamoDbLedger(client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock, sleep: async (ms) => clock.advance(ms) });
}

function uniqueUser(): string {
  seq += 1;
  return `uc${seq}-${Math.random().toString(36).slice(2, 8)}`;
}

function counter(scope: ScopeId, window: Window, limit?: number): CounterRef {
  return { scope, window, windowKey: windowKey(window, T0), windowEnd: windowBounds(window, T0).end, ...(limit !== undefined ? { limit } : {}) };
}

/** The org shape's counters: key and user × hour/day/month, the user's day and the key's month limited, an org's day. */
function countersOf(user: string, limits: { userDay?: number; keyMonth?: number } = {}): CounterRef[] {
  return [
    counter(`key:key-${user}`, 'hour'),
    counter(`key:key-${user}`, 'day'),
    counter(`key:key-${user}`, 'month', limits.keyMonth ?? 100_000_000),
    counter(`user:${user}`, 'hour'),
    counter(`user:${user}`, 'day', limits.userDay ?? 10_000_000),
    counter(`user:${user}`, 'month'),
    counter(`org:o-${user}`, 'day'),
  ];
}

function usageOf(r: Reservation, user: string, cost: number): UsageRecord {
  return usageRecordFor(r.requestId, user, cost, T0);
}

async function holdOf(requestId: string): Promise<Record<string, unknown> | undefined> {
  const out = await db.client.send(
    new ScanCommand({ TableName: db.tables.budgets, FilterExpression: 'requestId = :r', ExpressionAttributeValues: { ':r': { S: requestId } }, ConsistentRead: true }),
  );
  return out.Items?.[0] ? unmarshall(out.Items[0]) : undefined;
}

async function recordsOf(user: string): Promise<UsageRecord[]> {
  return new DynamoDbUsageStore(db.client, db.tables).query({ by: 'user', id: user, from: '2099-11-23T00:00:00Z', to: '2099-11-24T00:00:00Z' });
}

describe('counters without a limit are written at settle only (DynamoDB Local)', () => {
  it('when a request is reserved, only the limited and the shared counters hold it; the hold lists every counter, the others marked; settle gives each the cost once', async () => {
    const user = uniqueUser();
    const l = ledger();
    const refs = countersOf(user);
    const r = await l.reserve(reserveInputFor(user, { now: T0, holdTtlMs: HOLD_TTL }, 40_000, refs));
    expect(r.limitedOnly).toBe(true);

    const held = await l.readCounters(refs);
    expect(held.map((v) => v.reserved)).toEqual([0, 0, 40_000, 0, 40_000, 0, 40_000]);
    expect(held.map((v) => v.committed)).toEqual([0, 0, 40_000, 0, 40_000, 0, 40_000]);
    const hold = await holdOf(r.requestId);
    expect((hold?.counters as Array<{ sk: string; u?: number }>).map((c) => c.u ?? 0)).toEqual([1, 1, 0, 1, 0, 1, 0]);

    await l.settle({ reservation: r, cost: 12_345, usage: usageOf(r, user, 12_345) });
    await l.settle({ reservation: r, cost: 12_345, usage: usageOf(r, user, 12_345) }); // a retried settle
    for (const v of await l.readCounters(refs)) expect(v).toMatchObject({ committed: 12_345, reserved: 0, spent: 12_345, requests: 1 });
    expect(await holdOf(r.requestId)).toBeUndefined();
  });

  it('when such a hold is swept, every counter is charged the full amount once; a late settle then replaces it with the cost once', async () => {
    const user = uniqueUser();
    const l = ledger();
    const refs = countersOf(user);
    const r = await l.reserve(reserveInputFor(user, { now: T0, holdTtlMs: HOLD_TTL }, 40_000, refs));

    expect(await l.sweepExpired(T0 + HOLD_TTL + 1_000)).toBeGreaterThanOrEqual(1);
    expect(await l.sweepExpired(T0 + HOLD_TTL + 2_000)).toBe(0);
    for (const v of await l.readCounters(refs)) expect(v).toMatchObject({ committed: 40_000, reserved: 0, spent: 40_000, requests: 1 });
    expect((await recordsOf(user)).map((u) => [u.outcome, u.costMicros])).toEqual([['abandoned', 40_000]]);

    await l.settle({ reservation: r, cost: 9_000, usage: usageOf(r, user, 9_000) });
    await l.settle({ reservation: r, cost: 9_000, usage: usageOf(r, user, 9_000) });
    for (const v of await l.readCounters(refs)) expect(v).toMatchObject({ committed: 9_000, reserved: 0, spent: 9_000, requests: 1 });
    expect((await recordsOf(user)).map((u) => [u.outcome, u.costMicros])).toEqual([['ok', 9_000]]);
  });

  it('when every reserve, settle and sweep transaction loses its answer once and the SDK retries it, each counter gets each cost exactly once', async () => {
    const user = uniqueUser();
    const { client, lost } = losingAnswers((command) => command === 'TransactWriteItemsCommand');
    const l = ledger(client);
    const refs = countersOf(user);
    const settled = [];
    for (let i = 0; i < 3; i++) {
      const r = await l.reserve(reserveInputFor(user, { now: T0 + i, holdTtlMs: HOLD_TTL }, 40_000, refs));
      await l.settle({ reservation: r, cost: 10_000 + i, usage: usageRecordFor(r.requestId, user, 10_000 + i, T0 + i) });
      settled.push(10_000 + i);
    }
    const swept = await l.reserve(reserveInputFor(user, { now: T0 + 10, holdTtlMs: HOLD_TTL }, 40_000, refs));
    await l.sweepExpired(T0 + HOLD_TTL + 1_000);
    expect(lost.count).toBeGreaterThanOrEqual(8);
    expect(await holdOf(swept.requestId)).toBeUndefined();

    const total = settled.reduce((a, b) => a + b, 0) + 40_000;
    for (const v of await l.readCounters(refs)) expect(v).toMatchObject({ committed: total, reserved: 0, spent: total, requests: 4 });
    const records = await recordsOf(user);
    expect(records.reduce((a, u) => a + u.costMicros, 0)).toBe(total);
    expect(records).toHaveLength(4);
    client.destroy();
  });

  it('when a limit is set on a window while requests are in flight, those requests are not in it until they settle: spend may pass the new limit by at most their cost (docs/money.md)', async () => {
    const user = uniqueUser();
    const l = ledger();
    const before = counter(`user:${user}`, 'hour');
    const inFlight = await l.reserve(reserveInputFor(user, { now: T0, holdTtlMs: HOLD_TTL }, 60_000, [before]));
    expect((await l.readCounters([before]))[0]).toMatchObject({ committed: 0, reserved: 0 });

    // The hour gets a $0.10 limit: a request reserved under it does not see the one in flight.
    const limited = counter(`user:${user}`, 'hour', 100_000);
    const after = await l.reserve(reserveInputFor(user, { now: T0 + 1, holdTtlMs: HOLD_TTL }, 60_000, [limited]));
    await l.settle({ reservation: inFlight, cost: 60_000, usage: usageOf(inFlight, user, 60_000) });
    await l.settle({ reservation: after, cost: 60_000, usage: usageRecordFor(after.requestId, user, 60_000, T0 + 1) });
    const [value] = await l.readCounters([limited]);
    expect(value).toMatchObject({ committed: 120_000, spent: 120_000 });
    // Passed by no more than what was in flight when the limit came, and refused from then on.
    expect(value!.spent - 100_000).toBeLessThanOrEqual(inFlight.amount);
    await expect(l.reserve(reserveInputFor(user, { now: T0 + 2, holdTtlMs: HOLD_TTL }, 1, [limited]))).rejects.toThrow(/budget/i);
  });
});
