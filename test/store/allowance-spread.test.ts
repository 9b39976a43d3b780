/**
 * How many allowance items a busy org's requests are spread over (issue 21, store cost): as many as its rate
 * needs (about 50 requests a second an item, at least 4), learnt by each instance from the items it takes from,
 * instead of always all 64. An org of a few requests a second then refills 4 items with grants of many requests
 * each, not 64 items with grants of 4 requests (every grant is a transaction and a release on the org's counter).
 * Counters stay exact whatever the spread. On DynamoDB Local.
 */
import { ManualClock } from '../../lambda/core/clock';
import type { CounterRef, Reservation, ReserveInput } from '../../lambda/core/stores';
import type { ScopeId } from '../../lambda/core/types';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import type { PoolOptions } from '../../lambda/store/dynamodb/pools';
import { markBusy } from '../support/busy-scopes';
import { createTestTables, type TestTables } from '../support/dynamo';
import { dayCounterAt, reserveInputFor, usageRecordFor } from '../support/usage-records';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write (see test/support/clock.ts).
const T0 = Date.parse('2099-11-23T10:00:00.000Z');
const SHARED: PoolOptions = { shards: 64, epochMs: 10_000, graceMs: 5_000, markMs: 600_000 };
/** Past every allowance pool's close (its epoch, the grace; epochs offset by up to one epoch). */
const AFTER_CLOSE = 3 * 10_000 + 5_000;
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

function ledger(clock: ManualClock, platformShards = 1): DynamoDbLedger {
  return new DynamoDbLedger(db.client, {
    tables: db.tables,
    platformShards,
    usageRetentionDays: 30,
    clock,
    sleep: async (ms) => clock.advance(ms),
    pools: false,
    sharedPools: SHARED,
  });
}

/** Fixed names (the tables are this suite's own), so each request's item is the same in every run. */
function unique(): string {
  seq += 1;
  return `as${seq}`;
}

function requestOf(user: string, counters: CounterRef[], now: number, n: number): ReserveInput {
  return { ...reserveInputFor(user, { now, holdTtlMs: 600_000 }, 1_000, counters), requestId: `${user}-${n}` };
}

/** The allowance item a request's org part was taken from: its shard number. */
function shardOf(r: Reservation): number {
  const pk = r.shared?.[0]?.pool.pk ?? '';
  return Number(pk.slice(pk.lastIndexOf('#') + 1));
}

/** Sends `count` requests `everyMs` apart (each settled at 400 µ$ before the next), returns their shards. */
async function send(l: DynamoDbLedger, clock: ManualClock, user: string, counters: CounterRef[], count: number, everyMs: number, from = 0): Promise<number[]> {
  const shards: number[] = [];
  for (let n = from; n < from + count; n++) {
    const r = await l.reserve(requestOf(user, counters, clock.now(), n));
    shards.push(shardOf(r));
    await l.settle({ reservation: r, cost: 400, usage: usageRecordFor(r.requestId, user, 400, clock.now()) });
    clock.advance(everyMs);
  }
  return shards;
}

describe('a busy org\'s requests are spread over as many allowance items as its rate needs (DynamoDB Local)', () => {
  it('when an org sends 5 requests a second its instance soon takes them from 4 items of 64; when it then sends 250 a second, from more again; the counter ends at the costs', async () => {
    const org: ScopeId = `org:o-${unique()}`;
    const user = unique();
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    await markBusy(db, l, org, clock.now());
    const counters = [dayCounterAt(`user:${user}`, T0), dayCounterAt(org, T0, 1_000_000_000)];
    const slow = await send(l, clock, user, counters, 100, 200);
    // Every request was taken from an allowance item (none reserved on the org's counter alone).
    expect(slow.every((k) => Number.isInteger(k) && k >= 0 && k < 64)).toBe(true);
    // At first anywhere in 64; as takes find items granted a second ago, fewer (halved at most a take): shards 0–3.
    expect(new Set(slow.slice(0, 10)).size).toBeGreaterThan(4);
    expect(slow.slice(-20).every((k) => k < 4)).toBe(true);
    // The next epoch of every item, then 4 ms apart for 1.2 s: each of the 4 items takes ~60 a second.
    clock.advance(20_000);
    const fast = await send(l, clock, user, counters, 300, 4, 100);
    expect(Math.max(...fast.slice(-40))).toBeGreaterThanOrEqual(4);
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await ledger(clock).readCounters([counters[1]!]);
    expect(day).toMatchObject({ committed: 400 * 400, spent: 400 * 400, reserved: 0, requests: 400 });
  });

  it('when the platform sends 5 requests a second, its requests still use one item per shard of its counter (8), each holding that shard\'s share of the limit', async () => {
    const user = unique();
    const clock = new ManualClock(T0);
    const l = ledger(clock, 8);
    await markBusy(db, l, 'platform', clock.now());
    const counters = [dayCounterAt(`user:${user}`, T0), dayCounterAt('platform', T0, 8_000_000_000)];
    const shards = await send(l, clock, user, counters, 100, 200);
    const last = shards.slice(-40);
    // Narrowed from 64 to 8, not 4: shards 4–7 of the platform's counter (a share each) are still reached.
    expect(last.every((k) => k < 8)).toBe(true);
    expect(new Set(last).size).toBeGreaterThan(4);
  });
});
