/**
 * A busy org's allowance pools hold the platform's part of its requests too (issue 21, store cost): an org's
 * request is one take and one give-back on one allowance item, not one on the org's and one on the platform's
 * (or, with the platform not busy, a transaction on the platform's counter each). Near the platform's limit its
 * part is taken on its own again, from its few items, exactly. On DynamoDB Local.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { ManualClock } from '../../lambda/core/clock';
import { BudgetExceededError } from '../../lambda/core/errors';
import type { CounterRef, Reservation, ReserveInput } from '../../lambda/core/stores';
import type { ScopeId } from '../../lambda/core/types';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { shardOf } from '../../lambda/store/dynamodb/hash';
import type { PoolOptions } from '../../lambda/store/dynamodb/pools';
import { markBusy } from '../support/busy-scopes';
import { createTestTables, type TestTables } from '../support/dynamo';
import { recordingClient } from '../support/recording-client';
import { dayCounterAt, reserveInputFor, usageRecordFor } from '../support/usage-records';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write (see test/support/clock.ts).
const T0 = Date.parse('2099-11-24T10:00:00.000Z');
const SHARED: PoolOptions = { shards: 64, epochMs: 10_000, graceMs: 5_000, markMs: 600_000 };
/** Past every allowance pool's close (its epoch, the grace; epochs offset by up to one epoch). */
const AFTER_CLOSE = 3 * 10_000 + 5_000;
const COST = 400;
let db: TestTables;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

function ledger(clock: ManualClock, client: DynamoDBClient = db.client): DynamoDbLedger {
  return new DynamoDbLedger(client, {
    tables: db.tables,
    platformShards: 1,
    usageRetentionDays: 30,
    clock,
    sleep: async (ms) => clock.advance(ms),
    pools: false,
    sharedPools: SHARED,
  });
}

function requestOf(user: string, counters: CounterRef[], now: number, n: number): ReserveInput {
  return { ...reserveInputFor(user, { now, holdTtlMs: 600_000 }, 1_000, counters), requestId: `${user}-${n}` };
}

/**
 * Requests that each spend what they reserve (1,000) until refused, 30 in all; after a refusal the clock moves past
 * the instance's 2-s memory of a spent budget, so the near-limit items are asked again. The last refusal.
 */
async function spendUntilRefused(l: DynamoDbLedger, clock: ManualClock, user: string, counters: CounterRef[]): Promise<{ id: string; err: unknown } | undefined> {
  let last: { id: string; err: unknown } | undefined;
  for (let n = 0; n < 30; n++) {
    if (last) clock.advance(2_500);
    const input = requestOf(user, counters, clock.now(), n);
    try {
      const r = await l.reserve(input);
      await l.settle({ reservation: r, cost: 1_000, usage: usageRecordFor(r.requestId, user, 1_000, clock.now()) });
    } catch (err) {
      last = { id: input.requestId, err };
    }
  }
  return last;
}

/** The request with its id changed so that it falls in the same near-limit item (of 4) as request `id`. */
function inItemOf(id: string, input: ReserveInput): ReserveInput {
  let requestId = `${input.requestId}-b`;
  for (let n = 0; shardOf(requestId, 4) !== shardOf(id, 4); n++) requestId = `${input.requestId}-b${n}`;
  return { ...input, requestId };
}

/** The scopes each of a reservation's shared takes holds. */
function takes(r: Reservation): string[][] {
  return (r.shared ?? []).map((t) => [...new Set(t.counters.map((c) => c.scope))].sort());
}

describe('a busy org\'s allowance pools hold the platform\'s part too (DynamoDB Local)', () => {
  it('takes an org\'s request once, for the org and the platform, whether the platform is busy or not; both counters end at the costs', async () => {
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    const org: ScopeId = 'org:o-nest1';
    await markBusy(db, l, org, clock.now());
    const user = 'np1';
    const counters = [dayCounterAt(`user:${user}`, T0), dayCounterAt(org, T0), dayCounterAt('platform', T0, 1_000_000_000)];
    const seen: string[][][] = [];
    for (let n = 0; n < 40; n++) {
      if (n === 20) await markBusy(db, l, 'platform', clock.now());
      const r = await l.reserve(requestOf(user, counters, clock.now(), n));
      seen.push(takes(r));
      await l.settle({ reservation: r, cost: COST, usage: usageRecordFor(r.requestId, user, COST, clock.now()) });
      clock.advance(100);
    }
    // One take a request, holding both scopes (before: the org's alone, the platform's on its own or in a transaction).
    expect(seen.every((t) => t.length === 1 && t[0]!.join(',') === `${org},platform`)).toBe(true);
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [orgDay, platformDay] = await ledger(clock).readCounters([counters[1]!, counters[2]!]);
    expect(orgDay).toMatchObject({ committed: 40 * COST, spent: 40 * COST, reserved: 0, requests: 40 });
    expect(platformDay).toMatchObject({ committed: 40 * COST, spent: 40 * COST, reserved: 0, requests: 40 });
  });

  it("reads the platform's counter (all its shards) at most every 2 s while a busy org's items hold its part, as for a busy platform: only grants write it", async () => {
    const clock = new ManualClock(T0 + 2 * 86_400_000);
    let reads = 0;
    const counting = new Proxy(db.client, {
      get(target, prop, receiver) {
        if (prop !== 'send') return Reflect.get(target, prop, receiver);
        return (command: { input: { RequestItems?: Record<string, { Keys: Array<{ pk?: { S?: string } }> }> } }, ...rest: unknown[]) => {
          const keys = Object.values(command.input.RequestItems ?? {}).flatMap((r) => r.Keys);
          reads += keys.filter((k) => k.pk?.S?.startsWith('ctr#platform')).length;
          return (target.send as (...a: unknown[]) => unknown).call(target, command, ...rest);
        };
      },
    });
    const l = ledger(clock, counting);
    const org: ScopeId = 'org:o-nest3';
    await markBusy(db, l, org, clock.now());
    const refs = [dayCounterAt(org, clock.now()), dayCounterAt('platform', clock.now(), 1_000_000_000)];
    await l.readCounters(refs);
    const first = reads;
    expect(first).toBeGreaterThan(0);
    clock.advance(500);
    await l.readCounters(refs);
    expect(reads).toBe(first);
    clock.advance(2_000);
    await l.readCounters(refs);
    expect(reads).toBe(2 * first);
  });

  it('near the platform\'s limit, takes the platform\'s part on its own again: refused only by the platform\'s budget, never past it', async () => {
    // The next day: the platform's counter is the first test's otherwise.
    const day2 = T0 + 86_400_000;
    const clock = new ManualClock(day2);
    const l = ledger(clock);
    const org: ScopeId = 'org:o-nest2';
    await markBusy(db, l, org, clock.now());
    const user = 'np2';
    // The platform has room for 50 requests' costs (each reserves 1,000 and costs 400).
    const limit = 50 * COST;
    const platform = dayCounterAt('platform', day2, limit);
    const counters = [dayCounterAt(`user:${user}`, day2), dayCounterAt(org, day2), platform];
    let admitted = 0;
    const refusals = new Set<string>();
    const apart: string[][][] = [];
    let first: string[][] | undefined;
    for (let n = 0; n < 120; n++) {
      try {
        const r = await l.reserve(requestOf(user, counters, clock.now(), n));
        admitted++;
        first ??= takes(r);
        if (!takes(r).some((t) => t.includes('platform') && t.includes(org))) apart.push(takes(r));
        await l.settle({ reservation: r, cost: COST, usage: usageRecordFor(r.requestId, user, COST, clock.now()) });
      } catch (err) {
        if (!(err instanceof BudgetExceededError)) throw err;
        refusals.add(err.headers['x-tollgate-budget-scope'] ?? 'unknown');
      }
      clock.advance(100);
    }
    // The platform's part was taken apart from the org's once a grant was refused by its budget (near its limit):
    // on its own counter in the request's reserve here (the platform is not busy).
    expect(first).toEqual([[org, 'platform'].sort()]);
    expect(apart.length).toBeGreaterThan(0);
    expect(apart.every((t) => t.length === 1 && t[0]!.join(',') === org)).toBe(true);
    expect([...refusals]).toEqual(['platform']);
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [platformDay] = await ledger(clock).readCounters([platform]);
    expect(platformDay!.committed).toBeLessThanOrEqual(limit);
    expect(platformDay).toMatchObject({ spent: admitted * COST, reserved: 0 });
    // Early refusal bounded: most of the limit was spent before requests were refused.
    expect(admitted * COST).toBeGreaterThanOrEqual(0.9 * limit);
  });

  it('near a spent org\'s limit, an instance that meets a dry allowance item is refused from one read, writing nothing', async () => {
    const day3 = T0 + 3 * 86_400_000;
    const clock = new ManualClock(day3);
    const a = ledger(clock);
    const org: ScopeId = 'org:o-spent1';
    await markBusy(db, a, org, clock.now());
    const user = 'np4';
    const counters = [dayCounterAt(`user:${user}`, day3), dayCounterAt(org, day3, 20 * 1_000), dayCounterAt('platform', day3, 1_000_000_000)];
    // Each request spends what it reserved: twenty fill the org's limit, the next ones are refused by it.
    const last = await spendUntilRefused(a, clock, user, counters);
    expect(last?.err).toBeInstanceOf(BudgetExceededError);
    expect((last!.err as BudgetExceededError).headers['x-tollgate-budget-scope']).toBe(org);
    // Another instance (nothing remembered), with a request that falls in the item the last refusal dried.
    const { client: counted, calls } = recordingClient(db.client);
    const b = ledger(clock, counted);
    await markBusy(db, b, org, clock.now());
    calls.length = 0;
    const err = await b.reserve(inItemOf(last!.id, requestOf(user, counters, clock.now(), 0))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BudgetExceededError);
    expect((err as BudgetExceededError).headers['x-tollgate-budget-scope']).toBe(org);
    expect((err as BudgetExceededError).message).toMatch(/has spent \$0\.02 of its \$0\.02 daily budget/);
    expect(calls).toEqual(['BatchGetItemCommand']);
  });

  it('near a spent platform\'s limit, a busy org\'s request asks the platform\'s part first: refused from one read, nothing taken from the org to give back', async () => {
    const day5 = T0 + 5 * 86_400_000;
    const clock = new ManualClock(day5);
    const a = ledger(clock);
    const org: ScopeId = 'org:o-spent2';
    await markBusy(db, a, org, clock.now());
    await markBusy(db, a, 'platform', clock.now());
    const user = 'np5';
    const counters = [dayCounterAt(`user:${user}`, day5), dayCounterAt(org, day5), dayCounterAt('platform', day5, 20 * 1_000)];
    const last = await spendUntilRefused(a, clock, user, counters);
    expect((last?.err as BudgetExceededError).headers['x-tollgate-budget-scope']).toBe('platform');
    const { client: counted, calls } = recordingClient(db.client);
    const b = ledger(clock, counted);
    await markBusy(db, b, org, clock.now());
    await markBusy(db, b, 'platform', clock.now());
    calls.length = 0;
    const err = await b.reserve(inItemOf(last!.id, requestOf(user, counters, clock.now(), 0))).catch((e: unknown) => e);
    expect((err as BudgetExceededError).headers['x-tollgate-budget-scope']).toBe('platform');
    expect(calls).toEqual(['BatchGetItemCommand']);
  });
});
