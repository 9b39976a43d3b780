/**
 * The ledger's money writes under faults, on DynamoDB Local: a write DynamoDB applied whose answer was lost (the
 * SDK retries it, as it does in AWS after a reset connection or its 3 s timeout), a take whose request costs more
 * than it reserved (overshoot), a settle after its pool was released, a release that fails halfway, and the
 * allowance pools of a shared scope (an org). After the sweeper releases the pools, every counter equals the
 * usage records, and no limit is ever passed.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { ManualClock } from '../../lambda/core/clock';
import { BudgetExceededError } from '../../lambda/core/errors';
import type { CounterRef, Reservation, ReserveInput } from '../../lambda/core/stores';
import type { ScopeId, UsageRecord } from '../../lambda/core/types';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import type { PoolOptions } from '../../lambda/store/dynamodb/pools';
import { DynamoDbUsageStore } from '../../lambda/store/dynamodb/usage-store';
import { createTestTables, type TestTables } from '../support/dynamo';
import { losingAnswers } from '../support/lost-answers';
import { dayCounterAt, reserveInputFor, usageRecordFor } from '../support/usage-records';
import { markBusy as markBusyIn } from '../support/busy-scopes';

const T0 = Date.parse('2099-11-23T10:30:00.000Z');
const HOLD_TTL = 15 * 60_000;
const POOLS: PoolOptions = { shards: 2, epochMs: 10_000, graceMs: 5_000, markMs: 600_000 };
const AFTER_CLOSE = 4 * 10_000 + 5_000;
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

function ledger(clock: ManualClock, client: DynamoDBClient = db.client, options: { pools?: PoolOptions | false; sharedPools?: PoolOptions | false } = {}): DynamoDbLedger {
  return new DynamoDbLedger(client, {
    tables: db.tables,
    platformShards: 1,
    usageRetentionDays: 30,
    clock,
    sleep: async (ms) => clock.advance(ms),
    pools: options.pools ?? POOLS,
    sharedPools: options.sharedPools ?? POOLS,
  });
}

function uniqueUser(): string {
  seq += 1;
  return `fu${seq}-${Math.random().toString(36).slice(2, 8)}`;
}

function usageOf(r: Reservation, user: string, cost: number): UsageRecord {
  return usageRecordFor(r.requestId, user, cost, T0);
}

async function usageOfUser(user: string): Promise<UsageRecord[]> {
  return new DynamoDbUsageStore(db.client, db.tables).query({ by: 'user', id: user, from: '2099-11-23T00:00:00Z', to: '2099-11-24T00:00:00Z' });
}

function markBusy(l: DynamoDbLedger, scope: ScopeId, now: number): Promise<void> {
  return markBusyIn(db, l, scope, now);
}

function request(user: string, now: number, amount: number, counters: CounterRef[]): ReserveInput {
  return reserveInputFor(user, { now, holdTtlMs: HOLD_TTL }, amount, counters);
}

/** Admits and settles requests one after another until one is refused; returns what the admitted ones cost. */
async function spendUntilRefused(l: DynamoDbLedger, clock: ManualClock, user: string, refs: CounterRef[], each: { amount: number; cost: number }, max = 400): Promise<{ delivered: number; admitted: Reservation[] }> {
  let delivered = 0;
  const admitted: Reservation[] = [];
  for (let i = 0; i < max; i++) {
    let r: Reservation;
    try {
      r = await l.reserve(request(user, clock.now(), each.amount, refs));
    } catch (err) {
      if (err instanceof BudgetExceededError) return { delivered, admitted };
      throw err;
    }
    admitted.push(r);
    delivered += each.cost;
    await l.settle({ reservation: r, cost: each.cost, usage: usageOf(r, user, each.cost) });
    clock.advance(20);
  }
  throw new Error(`never refused after ${max} requests`);
}

describe('ledger money writes under faults (DynamoDB Local)', () => {
  it('when every pool write loses its answer once and the SDK retries it, each is applied once: spend stays within the limit and the counters equal the records', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    // Takes, give-backs and grant room updates: every UpdateItem on a pool item.
    const { client, lost } = losingAnswers((command, input) => command === 'UpdateItemCommand' && String((input.Key as { pk?: { S?: string } })?.pk?.S).startsWith('pool#'));
    const l = ledger(clock, client);
    await markBusy(l, `key:key-${user}`, clock.now());
    const limit = 1_000_000;
    const refs = [dayCounterAt(`user:${user}`, T0, limit)];

    const { delivered, admitted } = await spendUntilRefused(l, clock, user, refs, { amount: 50_000, cost: 10_000 });
    expect(lost.count).toBe(40);
    expect(admitted.every((r) => r.pool)).toBe(true);
    expect(delivered).toBeLessThanOrEqual(limit);
    // Early refusal is bounded by what the pool items hold: at most a grant (5 % of the limit) each, in this
    // epoch and (until the sweeper releases it) the last one, whose room a waiting retry may have left behind.
    expect(delivered).toBeGreaterThanOrEqual(limit - 2 * POOLS.shards! * 0.05 * limit);

    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: delivered, spent: delivered, reserved: 0, requests: admitted.length });
    const records = await usageOfUser(user);
    expect(records).toHaveLength(admitted.length);
    expect(records.reduce((a, r) => a + r.costMicros, 0)).toBe(delivered);
    client.destroy();
  });

  it('when pooled requests cost three times what they reserved, the overshoot is charged at settle: the counters show what was spent and refuse at the limit', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    await markBusy(l, `key:key-${user}`, clock.now());
    const limit = 3_200_000;
    const refs = [dayCounterAt(`user:${user}`, T0, limit)];

    const { delivered, admitted } = await spendUntilRefused(l, clock, user, refs, { amount: 10_000, cost: 30_000 });
    expect(admitted.every((r) => r.pool)).toBe(true);
    // Before the release the counters hold at least what was spent (the grants and the overshoots).
    const [before] = await l.readCounters(refs);
    expect(before!.committed).toBeGreaterThanOrEqual(delivered);
    // A request's overshoot cannot be known before it ends: the last request each pool shard admitted may pass
    // the limit by its own overshoot (its room is then empty, and a refill checks the counters), never by more.
    expect(delivered).toBeLessThanOrEqual(limit + POOLS.shards! * 20_000);

    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: delivered, spent: delivered, reserved: 0, requests: admitted.length });
    expect((await usageOfUser(user)).reduce((a, r) => a + r.costMicros, 0)).toBe(delivered);
  });

  it('when long requests settle after their pool was released, each has one usage record (the sweeper\'s estimate replaced) and the counters equal the records', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    await markBusy(l, `key:key-${user}`, clock.now());
    const refs = [dayCounterAt(`user:${user}`, T0, 100_000_000)];
    const slow: Reservation[] = [];
    for (let i = 0; i < 10; i++) slow.push(await l.reserve(request(user, clock.now(), 10_000, refs)));
    expect(slow.every((r) => r.pool)).toBe(true);

    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const swept = await usageOfUser(user);
    expect(swept.map((r) => r.outcome)).toEqual(Array(10).fill('abandoned'));

    for (const r of slow) await l.settle({ reservation: r, cost: 2_500, usage: usageOf(r, user, 2_500) });
    // A settle retried after its answer was lost changes nothing.
    await l.settle({ reservation: slow[0]!, cost: 2_500, usage: usageOf(slow[0]!, user, 2_500) });
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: 25_000, spent: 25_000, reserved: 0, requests: 10 });
    const records = await usageOfUser(user);
    expect(records.map((r) => [r.outcome, r.costMicros])).toEqual(Array(10).fill(['ok', 2_500]));
  });

  it('when a pool release fails halfway (its transaction lost), nothing is charged blind: the next sweep releases exactly', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const failing = { next: 0 };
    const client = {
      send: (command: { constructor: { name: string }; input: { TransactItems?: Array<{ Delete?: { Key?: { pk?: { S?: string } } } }> } }) => {
        const isRelease = command.constructor.name === 'TransactWriteItemsCommand' && command.input.TransactItems?.[0]?.Delete?.Key?.pk?.S?.startsWith('hold#');
        if (isRelease && failing.next > 0) {
          failing.next--;
          return Promise.reject(Object.assign(new Error('connection reset'), { name: 'TimeoutError' }));
        }
        return db.client.send(command as never);
      },
    } as unknown as DynamoDBClient;
    const l = ledger(clock, client);
    await markBusy(l, `key:key-${user}`, clock.now());
    const refs = [dayCounterAt(`user:${user}`, T0, 100_000_000)];
    const r = await l.reserve(request(user, clock.now(), 10_000, refs));
    expect(r.pool).toBeDefined();
    await l.settle({ reservation: r, cost: 1_000, usage: usageOf(r, user, 1_000) });

    failing.next = 100;
    expect(await l.sweepExpired(clock.now() + AFTER_CLOSE)).toBe(0); // left for the next sweep
    const [stuck] = await l.readCounters(refs);
    expect(stuck!.spent).toBe(0); // nothing half-done
    failing.next = 0;
    expect(await l.sweepExpired(clock.now() + AFTER_CLOSE)).toBeGreaterThan(0);
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: 1_000, spent: 1_000, reserved: 0, requests: 1 });
    expect((await usageOfUser(user)).map((x) => [x.outcome, x.costMicros])).toEqual([['ok', 1_000]]);
  });
});

describe('allowance pools of a shared scope (DynamoDB Local)', () => {
  it('when an org is busy, its members\' requests take their org part from its allowance pools; after the release the org counter equals every member\'s records', async () => {
    const org: ScopeId = `org:o-${uniqueUser()}`;
    const clock = new ManualClock(T0);
    const l = ledger(clock, db.client, { pools: false });
    await markBusy(l, org, clock.now());
    const users = [uniqueUser(), uniqueUser(), uniqueUser()];
    const orgRef = dayCounterAt(org, T0, 100_000_000);
    let total = 0;
    for (let i = 0; i < 30; i++) {
      const user = users[i % users.length]!;
      const refs = [dayCounterAt(`user:${user}`, T0, 100_000_000), orgRef];
      const r = await l.reserve(request(user, clock.now(), 10_000, refs));
      expect(r.shared?.map((s) => s.scope)).toEqual([org]);
      const cost = i === 7 ? 25_000 : 3_000; // one overshoot
      total += cost;
      await l.settle({ reservation: r, cost, usage: usageOf(r, user, cost) });
      clock.advance(50);
    }
    // The members' own counters are exact at once; the org's hold at least what was spent until the release.
    const [first] = await l.readCounters([dayCounterAt(`user:${users[0]}`, T0)]);
    expect(first).toMatchObject({ reserved: 0, requests: 10 });
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const fresh = ledger(clock, db.client, { pools: false, sharedPools: false });
    const [day] = await fresh.readCounters([orgRef]);
    expect(day).toMatchObject({ committed: total, spent: total, reserved: 0, requests: 30 });
    let recorded = 0;
    for (const user of users) recorded += (await usageOfUser(user)).reduce((a, r) => a + r.costMicros, 0);
    expect(recorded).toBe(total);
  });

  it('when a busy org reaches its limit, requests are refused by budget and the org never passes it', async () => {
    const org: ScopeId = `org:o-${uniqueUser()}`;
    const clock = new ManualClock(T0);
    const l = ledger(clock, db.client, { pools: false });
    await markBusy(l, org, clock.now());
    const user = uniqueUser();
    const limit = 500_000;
    const refs = [dayCounterAt(`user:${user}`, T0), dayCounterAt(org, T0, limit)];
    const { delivered, admitted } = await spendUntilRefused(l, clock, user, refs, { amount: 20_000, cost: 20_000 });
    expect(admitted.every((r) => r.shared?.length === 1)).toBe(true);
    expect(delivered).toBeLessThanOrEqual(limit);
    expect(delivered).toBeGreaterThanOrEqual(limit - 20_000);
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await ledger(clock, db.client, { pools: false, sharedPools: false }).readCounters([refs[1]!]);
    expect(day).toMatchObject({ committed: delivered, spent: delivered, reserved: 0 });
  });
});
