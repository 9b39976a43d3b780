import { GetItemCommand, ScanCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { ManualClock } from '../../lambda/core/clock';
import { BudgetExceededError } from '../../lambda/core/errors';
import { LeasingLedger, type LeaseOptions } from '../../lambda/core/lease/leasing-ledger';
import type { CounterRef, RateCharge, Reservation, ReserveInput } from '../../lambda/core/stores';
import type { ScopeId, UsageRecord } from '../../lambda/core/types';
import { DynamoDbLedger, loopKey } from '../../lambda/store/dynamodb/ledger';
import { DynamoDbUsageStore } from '../../lambda/store/dynamodb/usage-store';
import { loopCheckFor } from '../../lambda/core/guardrails/loop-guard';
import { DEFAULT_GUARDRAILS } from '../../lambda/core/guardrails/settings';
import { createTestTables, type TestTables } from '../support/dynamo';
import { losingLoopAnswers } from '../support/lost-answers';
import { dayCounterAt, reserveInputFor, usageRecordFor } from '../support/usage-records';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write (see test/support/clock.ts).
const T0 = Date.parse('2099-11-23T10:30:00.000Z');
const HOLD_TTL = 15 * 60_000;
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

/** The commands a ledger sends, by name (the store itself is DynamoDB Local); `refuse` names commands that fail. */
function counting(): { client: DynamoDBClient; sent: Map<string, number>; refuse: Set<string> } {
  const sent = new Map<string, number>();
  const refuse = new Set<string>();
  const client = {
    send: (command: { constructor: { name: string } }) => {
      const name = command.constructor.name.replace(/Command$/, '');
      sent.set(name, (sent.get(name) ?? 0) + 1);
      if (refuse.has(name)) return Promise.reject(Object.assign(new Error('Throughput exceeds the current capacity'), { name: 'ProvisionedThroughputExceededException' }));
      return db.client.send(command as never);
    },
  } as unknown as DynamoDBClient;
  return { client, sent, refuse };
}

function instance(clock: ManualClock, options: LeaseOptions & { client?: DynamoDBClient; onError?: (what: string) => void; exactLoopCounts?: boolean } = {}): { leases: LeasingLedger; inner: DynamoDbLedger } {
  const inner = new DynamoDbLedger(options.client ?? db.client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock });
  seq += 1;
  return { inner, leases: new LeasingLedger(inner, { clock, instanceId: `i${seq}`, holdTtlMs: HOLD_TTL, platformShards: 1, ...options }) };
}

function uniqueUser(): string {
  seq += 1;
  return `lu${seq}-${Math.random().toString(36).slice(2, 8)}`;
}

function dayCounter(scope: ScopeId, limit?: number): CounterRef {
  return dayCounterAt(scope, T0, limit);
}

function request(user: string, now: number, amount: number, counters: CounterRef[], rateCharges: RateCharge[] = []): ReserveInput {
  return reserveInputFor(user, { now, holdTtlMs: HOLD_TTL }, amount, counters, rateCharges);
}

function usageOf(r: Reservation, user: string, cost: number): UsageRecord {
  return usageRecordFor(r.requestId, user, cost, T0);
}

async function usageOfUser(user: string): Promise<UsageRecord[]> {
  return new DynamoDbUsageStore(db.client, db.tables).query({ by: 'user', id: user, from: '2099-11-23T00:00:00Z', to: '2099-11-24T00:00:00Z' });
}

async function leaseHolds(user: string): Promise<Array<Record<string, unknown>>> {
  const out = await db.client.send(
    new ScanCommand({ TableName: db.tables.budgets, FilterExpression: 'begins_with(pk, :h)', ExpressionAttributeValues: { ':h': { S: 'hold#' } }, ConsistentRead: true }),
  );
  return (out.Items ?? []).map((i) => unmarshall(i)).filter((h) => (h.context as { userId?: string })?.userId === user);
}

describe('LeasingLedger (budget leases on DynamoDB Local)', () => {
  it('when a key is busy on an instance, its requests are admitted against leases instead of a transaction each, and the counters end at exactly their cost', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, sent } = counting();
    const { leases } = instance(clock, { client });
    const refs = [dayCounter(`user:${user}`, 100_000_000), dayCounter(`key:key-${user}`)];
    const rates: RateCharge[] = [{ keyId: `key-${user}`, dimension: 'requests', limitPerMinute: 6_000, amount: 1 }];
    let leased = 0;
    for (let i = 0; i < 100; i++) {
      const r = await leases.reserve(request(user, clock.now(), 10_000, refs, rates));
      if (r.leaseId) leased++;
      await leases.settle({ reservation: r, cost: 4_000, usage: usageOf(r, user, 4_000) });
      clock.advance(10);
    }
    await leases.close();

    // Without leases: 100 reserves + 100 settles = 200 transactions.
    expect(leased).toBeGreaterThanOrEqual(80);
    expect(sent.get('TransactWriteItems') ?? 0).toBeLessThan(40);
    const values = await leases.readCounters(refs);
    for (const v of values) expect(v).toMatchObject({ committed: 400_000, spent: 400_000, reserved: 0, requests: 100 });
    const records = await usageOfUser(user);
    expect(records).toHaveLength(100);
    expect(records.reduce((a, r) => a + r.costMicros, 0)).toBe(400_000);
    expect(await leaseHolds(user)).toEqual([]);
    expect(leases.openLeases).toBe(0);
  });

  it('when three instances race for the last of a budget, admitted amounts never pass the limit and returned leases free what they held', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const limit = 2_000_000;
    const refs = [dayCounter(`user:${user}`, limit)];
    const instances = [0, 1, 2].map(() => instance(clock, { minBusy: 2, minHeadroom: 5, maxShare: 0.3 }).leases);
    let admitted = 0;
    let refused = 0;
    let leased = 0;
    // Every request costs exactly what it held (the worst case for a budget).
    for (let wave = 0; wave < 20; wave++) {
      await Promise.all(
        instances.flatMap((l) =>
          Array.from({ length: 5 }, async () => {
            try {
              const r = await l.reserve(request(user, clock.now(), 20_000, refs));
              admitted += r.amount;
              if (r.leaseId) leased++;
              await l.settle({ reservation: r, cost: r.amount, usage: usageOf(r, user, r.amount) });
            } catch (err) {
              if (!(err instanceof BudgetExceededError)) throw err;
              refused++;
            }
          }),
        ),
      );
      clock.advance(100);
    }
    expect(admitted).toBeLessThanOrEqual(limit);
    expect(refused).toBeGreaterThan(0);
    expect(leased).toBeGreaterThan(0);
    for (const l of instances) await l.close();
    const [held] = await instances[0]!.readCounters(refs);
    expect(held).toMatchObject({ spent: admitted, committed: admitted, reserved: 0 });

    // With every lease returned, what is left is admitted request by request to exactly the limit.
    const plain = new DynamoDbLedger(db.client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock });
    for (let i = 0; admitted + 20_000 <= limit; i++) {
      const r = await plain.reserve(request(user, clock.now(), 20_000, refs));
      admitted += r.amount;
      await plain.settle({ reservation: r, cost: r.amount, usage: usageOf(r, user, r.amount) });
    }
    await expect(plain.reserve(request(user, clock.now(), 20_000, refs))).rejects.toBeInstanceOf(BudgetExceededError);
    expect(admitted).toBe(limit);
  });

  it('when an instance dies holding a lease, the sweeper charges the whole slice, and a late return replaces it with the real cost exactly once', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    const { leases, inner } = instance(clock, { minBusy: 2 });
    let cost = 0;
    for (let i = 0; i < 12; i++) {
      const r = await leases.reserve(request(user, clock.now(), 10_000, refs));
      await leases.settle({ reservation: r, cost: 3_000, usage: usageOf(r, user, 3_000) });
      cost += 3_000;
      clock.advance(10);
    }
    const [hold] = await leaseHolds(user);
    expect(hold).toBeDefined();
    const slice = hold!.amount as number;

    // The holder is frozen; its lease expires and the sweeper reclaims it in full.
    clock.set((hold!.expiresAt as number) + 1);
    expect(await inner.sweepExpired(clock.now())).toBeGreaterThanOrEqual(1);
    const [swept] = await inner.readCounters(refs);
    const beforeLease = swept!.spent - slice;
    expect(swept).toMatchObject({ reserved: 0 });
    expect(beforeLease).toBeLessThanOrEqual(cost);
    const abandoned = (await usageOfUser(user)).filter((u) => u.outcome === 'abandoned');
    expect(abandoned.map((u) => u.costMicros)).toEqual([slice]);

    // It wakes and returns the lease: the full charge becomes what its requests cost, once.
    await leases.close();
    await leases.close();
    const [after] = await inner.readCounters(refs);
    expect(after).toMatchObject({ spent: cost, committed: cost, reserved: 0 });
    const records = await usageOfUser(user);
    expect(records.filter((u) => u.outcome === 'abandoned')).toEqual([]);
    expect(records.reduce((a, r) => a + r.costMicros, 0)).toBe(cost);
  });

  it('when the budget left is below the headroom, requests reserve one by one and a request that fits is never refused', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const refs = [dayCounter(`user:${user}`, 300_000)];
    const { leases } = instance(clock, { minBusy: 1, minHeadroom: 50 });
    let admitted = 0;
    for (let i = 0; i < 30; i++) {
      const r = await leases.reserve(request(user, clock.now(), 10_000, refs));
      expect(r.leaseId).toBeUndefined();
      admitted += r.amount;
      await leases.settle({ reservation: r, cost: r.amount, usage: usageOf(r, user, r.amount) });
    }
    expect(admitted).toBe(300_000);
    await expect(leases.reserve(request(user, clock.now(), 10_000, refs))).rejects.toBeInstanceOf(BudgetExceededError);
  });

  it('when the store refuses leased requests\' usage records, they are kept and written later, and the lease is returned only after them', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, refuse } = counting();
    const errors: string[] = [];
    const { leases } = instance(clock, { client, minBusy: 2, onError: (what) => errors.push(what) });
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    let cost = 0;
    for (let i = 0; i < 10; i++) {
      if (i === 5) refuse.add('PutItem');
      const r = await leases.reserve(request(user, clock.now(), 10_000, refs));
      await leases.settle({ reservation: r, cost: 2_000, usage: usageOf(r, user, 2_000) });
      cost += 2_000;
      clock.advance(10);
    }
    expect(errors.length).toBeGreaterThan(0);
    await leases.close();
    // Records missing: the lease stays held (charged in full if this instance died now).
    expect((await usageOfUser(user)).length).toBeLessThan(10);
    expect((await leaseHolds(user)).length).toBeGreaterThan(0);

    refuse.clear();
    await leases.close();
    expect((await usageOfUser(user)).map((u) => u.costMicros)).toEqual(Array(10).fill(2_000));
    expect(await leaseHolds(user)).toEqual([]);
    const [after] = await leases.readCounters(refs);
    expect(after).toMatchObject({ spent: cost, committed: cost, reserved: 0 });
  });

  it('when a lease\'s window ends before the key\'s next request is due, the settle of its last request gives it back', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { leases } = instance(clock, { minBusy: 2, ttlMs: 10_000 });
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    let returnedBySettle = false;
    // One request every 2 s: a lease taken at t lasts to t + 10 s; the settle that finds the window ending
    // within one gap returns it, before the instance would sit idle holding it.
    for (let i = 0; i < 12; i++) {
      const r = await leases.reserve(request(user, clock.now(), 10_000, refs));
      await leases.settle({ reservation: r, cost: 1_000, usage: usageOf(r, user, 1_000) });
      if (r.leaseId && leases.openLeases === 0 && (await leaseHolds(user)).length === 0) returnedBySettle = true;
      clock.advance(2_000);
    }
    expect(returnedBySettle).toBe(true);
    await leases.close();
    const [after] = await leases.readCounters(refs);
    expect(after).toMatchObject({ spent: 12_000, committed: 12_000, reserved: 0 });
  });

  it('when a leased request\'s body is new to the instance, it is counted with its outcome at settle; a body seen here before is counted first, the earlier copy with it', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const gate: { open?: () => void; held: number } = { held: 0 };
    let released = new Promise<void>((r) => (gate.open = r));
    const client = {
      send: async (command: { constructor: { name: string } }) => {
        if (command.constructor.name === 'UpdateItemCommand') {
          gate.held++;
          await released;
        }
        return db.client.send(command as never);
      },
    } as unknown as DynamoDBClient;
    const { leases } = instance(clock, { client, minBusy: 1 });
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    const loopFor = (body: string) =>
      loopCheckFor({ keyId: `key-${user}`, userId: user, model: 'gpt-4o-mini', bodyFingerprint: body }, clock.now(), DEFAULT_GUARDRAILS.loop);
    const withLoop = (body: string) => ({ ...request(user, clock.now(), 10_000, refs), loop: loopFor(body) });
    // Warm-up until requests are leased (every count let through at once).
    gate.open!();
    let leasedOnce = false;
    for (let i = 0; i < 6 && !leasedOnce; i++) {
      const r = await leases.reserve(withLoop(`warm-${i}`));
      leasedOnce = r.leaseId !== undefined;
      await leases.settle({ reservation: r, cost: 1_000, usage: usageOf(r, user, 1_000) });
    }
    expect(leasedOnce).toBe(true);

    released = new Promise<void>((r) => (gate.open = r));
    gate.held = 0;
    const fresh = await leases.reserve(withLoop('a new question'));
    expect(fresh.leaseId).toBeDefined();
    expect(gate.held).toBe(0); // admitted with no store write: its count goes out with its outcome

    let repeatedAdmitted = false;
    const repeated = leases.reserve(withLoop('a new question')).then((r) => {
      repeatedAdmitted = true;
      return r;
    });
    await new Promise((r) => setImmediate(r));
    // Seen here before: the first copy is counted now, then this one, and only then is it admitted.
    expect(gate.held).toBe(1);
    expect(repeatedAdmitted).toBe(false);
    gate.open!();
    const second = await repeated;
    expect(repeatedAdmitted).toBe(true);
    for (const r of [fresh, second]) await leases.settle({ reservation: r, cost: 1_000, usage: usageOf(r, user, 1_000), loopOutcome: 'succeeded' });
    await leases.close();
    // Both copies counted exactly once, and both successes cleared the presumed failures.
    const loop = loopFor('a new question');
    const { Item } = await db.client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall(loopKey(loop)), ConsistentRead: true }));
    const item = unmarshall(Item!);
    expect(item[`n${loop.window}`]).toBe(2);
    expect(item.fails).toBeUndefined();
  });

  it('when DynamoDB applies a leased copy\'s loop count and its answer is lost, the SDK retry counts it once, and its failure is added once', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, lost } = losingLoopAnswers();
    // exactLoopCounts: every leased copy is counted at admission (the per-request count under test).
    const { leases } = instance(clock, { client, minBusy: 1, exactLoopCounts: true });
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    let leased: Reservation | undefined;
    for (let i = 0; i < 6 && !leased; i++) {
      const r = await leases.reserve(request(user, clock.now(), 10_000, refs));
      if (r.leaseId !== undefined) leased = r;
      else await leases.settle({ reservation: r, cost: 1_000, usage: usageOf(r, user, 1_000) });
    }
    expect(leased).toBeDefined(); // a lease is live: the copies below are admitted against it
    await leases.settle({ reservation: leased!, cost: 1_000, usage: usageOf(leased!, user, 1_000) });

    const loop = loopCheckFor({ keyId: `key-${user}`, userId: user, model: 'gpt-4o-mini', bodyFingerprint: 'a flaky network' }, clock.now(), DEFAULT_GUARDRAILS.loop);
    const a = await leases.reserve({ ...request(user, clock.now(), 10_000, refs), loop });
    const b = await leases.reserve({ ...request(user, clock.now(), 10_000, refs), loop });
    expect([a.leaseId, b.leaseId]).toEqual([expect.any(String), expect.any(String)]);
    const itemNow = async () => {
      const { Item } = await db.client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall(loopKey(loop)), ConsistentRead: true }));
      return unmarshall(Item!);
    };
    expect((await itemNow())[`n${loop.window}`]).toBe(2); // two copies, not four
    for (const r of [a, b]) await leases.settle({ reservation: r, cost: 1_000, usage: usageOf(r, user, 1_000), loopOutcome: 'failed', loopStatus: 500 });
    await leases.close();
    const item = await itemNow();
    expect(item[`n${loop.window}`]).toBe(2);
    // Each copy's failure is added once. The second copy's count presumed it failed, but that answer was lost and
    // the retry cannot tell, so its failure is added on top of the presumption: a lost answer can only lengthen a
    // streak by one, never shorten it (lambda/store/dynamodb/loop-counts.ts). A count without the copy's marker
    // added 2 for each copy and refused the second one as a loop.
    expect(item.fails).toBe(3);
    expect(lost.count).toBe(4); // two counts and two failures each lost an answer once
  });

  it('when a leased copy counted at its settle has its write applied and the answer lost, it is counted once with its outcome', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, lost } = losingLoopAnswers();
    const { leases } = instance(clock, { client, minBusy: 1 });
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    let leased: Reservation | undefined;
    for (let i = 0; i < 6 && !leased; i++) {
      const r = await leases.reserve(request(user, clock.now(), 10_000, refs));
      if (r.leaseId !== undefined) leased = r;
      else await leases.settle({ reservation: r, cost: 1_000, usage: usageOf(r, user, 1_000) });
    }
    expect(leased).toBeDefined();
    await leases.settle({ reservation: leased!, cost: 1_000, usage: usageOf(leased!, user, 1_000) });

    const loop = loopCheckFor({ keyId: `key-${user}`, userId: user, model: 'gpt-4o-mini', bodyFingerprint: 'new to this instance' }, clock.now(), DEFAULT_GUARDRAILS.loop);
    const r = await leases.reserve({ ...request(user, clock.now(), 10_000, refs), loop });
    expect(r.leaseId).toBeDefined();
    expect(lost.count).toBe(0); // a body new here: counted only at its settle
    await leases.settle({ reservation: r, cost: 1_000, usage: usageOf(r, user, 1_000), loopOutcome: 'failed', loopStatus: 500 });
    await leases.close();
    expect(lost.count).toBe(1);
    const { Item } = await db.client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall(loopKey(loop)), ConsistentRead: true }));
    const item = unmarshall(Item!);
    expect(item[`n${loop.window}`]).toBe(1); // not 2
    expect(item.fails).toBe(1);
    expect(item.lastStatus).toBe(500);
  });
});
