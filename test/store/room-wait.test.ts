import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { ManualClock } from '../../lambda/core/clock';
import { BudgetExceededError } from '../../lambda/core/errors';
import type { CounterRef, Reservation, ReserveInput } from '../../lambda/core/stores';
import type { ScopeId } from '../../lambda/core/types';
import { errorResponse } from '../../lambda/http/dialects';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { shardOf } from '../../lambda/store/dynamodb/hash';
import type { PoolOptions } from '../../lambda/store/dynamodb/pools';
import { createTestTables, type TestTables } from '../support/dynamo';
import { recordingClient } from '../support/recording-client';
import { dayCounterAt, reserveInputFor, usageRecordFor } from '../support/usage-records';
import { markBusy as markBusyIn } from '../support/busy-scopes';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write (see test/support/clock.ts).
const T0 = Date.parse('2099-11-23T10:30:00.000Z');
const HOLD_TTL = 15 * 60_000;
const POOLS: PoolOptions = { shards: 4, epochMs: 10_000, graceMs: 5_000, markMs: 600_000 };
/** Past every pool's close (its epoch, one more for leases, the grace; epochs are offset by up to one epoch). */
const AFTER_CLOSE = 4 * 10_000 + 5_000;
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

/**
 * A ledger on a manual clock whose waits advance it; `onSleep` runs at each wait first (what other requests do
 * meanwhile). `sleeps` records every wait.
 */
function ledger(clock: ManualClock, options: { onSleep?: (n: number) => Promise<void>; sharedPools?: PoolOptions | false; client?: DynamoDBClient } = {}) {
  const sleeps: number[] = [];
  const l = new DynamoDbLedger(options.client ?? db.client, {
    tables: db.tables,
    platformShards: 1,
    usageRetentionDays: 30,
    clock,
    sleep: async (ms) => {
      sleeps.push(ms);
      await options.onSleep?.(sleeps.length);
      clock.advance(ms);
    },
    pools: false,
    sharedPools: options.sharedPools ?? false,
  });
  return { l, sleeps };
}

function uniqueUser(): string {
  seq += 1;
  return `rw${seq}-${Math.random().toString(36).slice(2, 8)}`;
}

function request(user: string, now: number, amount: number, counters: CounterRef[]): ReserveInput {
  return reserveInputFor(user, { now, holdTtlMs: HOLD_TTL }, amount, counters);
}

async function settle(l: DynamoDbLedger, r: Reservation, user: string, cost: number): Promise<void> {
  await l.settle({ reservation: r, cost, usage: usageRecordFor(r.requestId, user, cost, T0) });
}

/** The request with its id changed so that it falls in pool shard `shard` (pools pick it by id). */
function inShard(shard: number, input: ReserveInput): ReserveInput {
  for (let n = 0; ; n++) {
    const requestId = `${input.requestId}-${n}`;
    if (shardOf(requestId, POOLS.shards!) === shard) return { ...input, requestId };
  }
}

function markBusy(l: DynamoDbLedger, scope: ScopeId, now: number): Promise<void> {
  return markBusyIn(db, l, scope, now);
}

describe('a reserve refused only for held room waits for it (DynamoDB Local)', () => {
  it('when requests in flight hold the rest of a budget, the next one waits and is admitted as soon as one settles below its reservation', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const amount = 100_000;
    const ref = dayCounterAt(`user:${user}`, T0, 3 * amount + amount / 2);
    let first: Reservation | undefined;
    // While the fourth request waits, the first one finishes, having cost a tenth of what it held.
    const { l, sleeps } = ledger(clock, { onSleep: async (n) => (n === 2 && first ? settle(l, first, user, amount / 10) : undefined) });
    first = await l.reserve(request(user, clock.now(), amount, [ref]));
    await l.reserve(request(user, clock.now(), amount, [ref]));
    await l.reserve(request(user, clock.now(), amount, [ref]));
    const arrival = clock.now();
    const fourth = await l.reserve(request(user, arrival, amount, [ref]));
    expect(fourth.amount).toBe(amount);
    expect(sleeps.length).toBeGreaterThanOrEqual(2);
    expect(clock.now() - arrival).toBeLessThanOrEqual(2_000);
    const [day] = await l.readCounters([ref]);
    expect(day).toMatchObject({ spent: amount / 10, reserved: 3 * amount, committed: 3 * amount + amount / 10 });
  });

  it('when nothing settles within the wait, the refusal says the budget is held by requests in flight and that a retry can pass, and changes nothing', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const amount = 100_000;
    const ref = dayCounterAt(`user:${user}`, T0, 2 * amount);
    const { l, sleeps } = ledger(clock);
    await l.reserve(request(user, clock.now(), amount, [ref]));
    await l.reserve(request(user, clock.now(), amount, [ref]));
    const arrival = clock.now();
    const err = await l.reserve(request(user, arrival, amount, [ref])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BudgetExceededError);
    const refusal = err as BudgetExceededError;
    expect(refusal.message).toMatch(/held by requests in flight.*waited 2\.0 s/);
    expect(refusal.headers).toMatchObject({ 'Retry-After': '2', 'x-should-retry': 'true', 'x-tollgate-budget-scope': `user:${user}` });
    expect(errorResponse('openai', refusal).headers['x-should-retry']).toBe('true');
    expect(sleeps.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(2_000);
    expect(clock.now() - arrival).toBe(sleeps.reduce((a, b) => a + b, 0));
    const [day] = await l.readCounters([ref]);
    expect(day).toMatchObject({ spent: 0, reserved: 2 * amount, committed: 2 * amount });
  });

  it('when spend itself leaves no room, the refusal comes at once (no wait) and says retrying cannot help', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const amount = 100_000;
    const ref = dayCounterAt(`user:${user}`, T0, 2 * amount);
    const { l, sleeps } = ledger(clock);
    const a = await l.reserve(request(user, clock.now(), amount, [ref]));
    await settle(l, a, user, amount + amount / 2); // spent 150k of 200k
    await l.reserve(request(user, clock.now(), amount / 4, [ref])); // 25k in flight
    const err = await l.reserve(request(user, clock.now(), amount, [ref])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BudgetExceededError);
    expect(sleeps).toEqual([]);
    expect(errorResponse('openai', err as BudgetExceededError).headers['x-should-retry']).toBe('false');
    expect((err as BudgetExceededError).message).toMatch(/has spent \$0\.15 \(\+\$0\.025 held by requests in flight\)/);
  });

  it('when a budget is spent out, this instance refuses its next requests for 2 s without a store call; a smaller one that fits, a raised limit and a later one ask again', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const amount = 100_000;
    const { client, calls } = recordingClient(db.client);
    const { l } = ledger(clock, { client });
    const ref = dayCounterAt(`user:${user}`, T0, 2 * amount);
    await settle(l, await l.reserve(request(user, clock.now(), amount, [ref])), user, amount + amount / 2); // spent 150k of 200k
    const first = await l.reserve(request(user, clock.now(), amount, [ref])).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(BudgetExceededError);
    // The same refusal, its values as the store gave them, and not a call.
    calls.length = 0;
    clock.advance(1_000);
    const again = await l.reserve(request(user, clock.now(), amount, [ref])).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(BudgetExceededError);
    expect((again as BudgetExceededError).message).toBe((first as BudgetExceededError).message);
    expect(calls).toEqual([]);
    // A request its spend still admits is asked for; so is one under a raised limit.
    const small = await l.reserve(request(user, clock.now(), amount / 4, [ref]));
    expect(calls).toContain('TransactWriteItemsCommand');
    await settle(l, small, user, amount / 4); // spent 175k of 200k
    await settle(l, await l.reserve(request(user, clock.now(), amount, [{ ...ref, limit: 3 * amount }])), user, amount);
    // 2 s after the refusal the counter is asked again: still spent out, refused by the store.
    clock.advance(1_500);
    calls.length = 0;
    expect(await l.reserve(request(user, clock.now(), amount, [ref])).catch((e: unknown) => e)).toBeInstanceOf(BudgetExceededError);
    expect(calls).toContain('TransactWriteItemsCommand');
  });
});

describe('a refused request of a busy org reclaims its allowance pools\' idle room (DynamoDB Local)', () => {
  it('when the org\'s limit is held by other shards\' idle room, the room goes back to the counter and the request is admitted; after the release the counter equals the costs', async () => {
    const org: ScopeId = `org:o-${uniqueUser()}`;
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { l } = ledger(clock, { sharedPools: POOLS });
    await markBusy(l, org, clock.now());
    const amount = 40_000;
    const limit = 100_000; // grants are one request's worth here (5 % of the limit is less than one)
    const refs = [dayCounterAt(`user:${user}`, T0), dayCounterAt(org, T0, limit)];
    const a = await l.reserve(inShard(0, request(user, clock.now(), amount, refs)));
    const b = await l.reserve(inShard(1, request(user, clock.now(), amount, refs)));
    expect([a.shared?.length, b.shared?.length]).toEqual([1, 1]);
    // Each settles at a quarter: shards 0 and 1 now hold 30k idle each, and the org counter 80k committed.
    await settle(l, a, user, 10_000);
    await settle(l, b, user, 10_000);
    // Shard 2's grant cannot fit (80k + 40k > 100k); before reclaim this request was refused.
    const c = await l.reserve(inShard(2, request(user, clock.now(), amount, refs)));
    expect(c.amount).toBe(amount);
    const [mid] = await new DynamoDbLedger(db.client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock }).readCounters([refs[1]!]);
    // Reclaimed: 2 × 30k of room back, and the 2 × 10k the pools spent shown as spent; c's 40k held.
    expect(mid).toMatchObject({ spent: 20_000, committed: 60_000 });
    await settle(l, c, user, 15_000);
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await new DynamoDbLedger(db.client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock }).readCounters([refs[1]!]);
    expect(day).toMatchObject({ committed: 35_000, spent: 35_000, reserved: 0 });
  });

  it('when a reclaim transaction is delivered twice (the SDK retried after a lost answer), it is applied once', async () => {
    const org: ScopeId = `org:o-${uniqueUser()}`;
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    let duplicated = 0;
    const client = {
      send: async (command: { constructor: { name: string }; input: { TransactItems?: Array<{ Update?: { UpdateExpression?: string } }> } }) => {
        const out = await db.client.send(command as never);
        if (command.constructor.name === 'TransactWriteItemsCommand' && command.input.TransactItems?.some((t) => t.Update?.UpdateExpression?.includes('reclaimed'))) {
          duplicated++;
          // The same request again, as the SDK sends it when the first answer was lost.
          await db.client.send(command as never).catch(() => undefined);
        }
        return out;
      },
    } as unknown as DynamoDBClient;
    const { l } = ledger(clock, { sharedPools: POOLS, client });
    await markBusy(l, org, clock.now());
    const amount = 40_000;
    const limit = 100_000;
    const refs = [dayCounterAt(`user:${user}`, T0), dayCounterAt(org, T0, limit)];
    const a = await l.reserve(inShard(0, request(user, clock.now(), amount, refs)));
    const b = await l.reserve(inShard(1, request(user, clock.now(), amount, refs)));
    await settle(l, a, user, 10_000);
    await settle(l, b, user, 10_000);
    const c = await l.reserve(inShard(2, request(user, clock.now(), amount, refs)));
    expect(duplicated).toBeGreaterThan(0);
    await settle(l, c, user, 15_000);
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await new DynamoDbLedger(db.client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock }).readCounters([refs[1]!]);
    expect(day).toMatchObject({ committed: 35_000, spent: 35_000, reserved: 0 });
  });
});
