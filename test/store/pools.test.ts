import { GetItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { ManualClock } from '../../lambda/core/clock';
import { BudgetExceededError, StoreUnavailableError } from '../../lambda/core/errors';
import { LeasingLedger } from '../../lambda/core/lease/leasing-ledger';
import type { CounterRef, RateCharge, Reservation, ReserveInput } from '../../lambda/core/stores';
import type { ScopeId, UsageRecord } from '../../lambda/core/types';
import { loopCheckFor } from '../../lambda/core/guardrails/loop-guard';
import { DEFAULT_GUARDRAILS } from '../../lambda/core/guardrails/settings';
import { DynamoDbLedger, loopKey } from '../../lambda/store/dynamodb/ledger';
import { shardOf } from '../../lambda/store/dynamodb/hash';
import type { PoolOptions } from '../../lambda/store/dynamodb/pools';
import { DynamoDbUsageStore } from '../../lambda/store/dynamodb/usage-store';
import { createTestTables, type TestTables } from '../support/dynamo';
import { dayCounterAt, reserveInputFor, usageRecordFor } from '../support/usage-records';
import { markPooled as markPooledIn } from '../support/busy-scopes';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write (see test/support/clock.ts).
const T0 = Date.parse('2099-11-23T10:30:00.000Z');
const HOLD_TTL = 15 * 60_000;
const POOLS: PoolOptions = { shards: 2, epochMs: 10_000, graceMs: 5_000, markMs: 600_000 };
/** Past every pool's close (its epoch, one more for leases, the grace; epochs are offset by up to one epoch). */
const AFTER_CLOSE = 4 * 10_000 + 5_000;
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

/** DynamoDB Local behind a client that counts commands by name and can cancel the next transactions as conflicts. */
function counting(): { client: DynamoDBClient; sent: Map<string, number>; conflicts: { next: number } } {
  const sent = new Map<string, number>();
  const conflicts = { next: 0 };
  const client = {
    send: (command: { constructor: { name: string }; input: { TransactItems?: unknown[] } }) => {
      const name = command.constructor.name.replace(/Command$/, '');
      sent.set(name, (sent.get(name) ?? 0) + 1);
      if (name === 'TransactWriteItems' && conflicts.next > 0) {
        conflicts.next--;
        // As DynamoDB cancels a transaction that met another one on the same item.
        const reasons = (command.input.TransactItems ?? []).map((_, i) => ({ Code: i === 0 ? 'TransactionConflict' : 'None' }));
        return Promise.reject(Object.assign(new Error('Transaction cancelled'), { name: 'TransactionCanceledException', CancellationReasons: reasons }));
      }
      return db.client.send(command as never);
    },
  } as unknown as DynamoDBClient;
  return { client, sent, conflicts };
}

/** DynamoDB Local behind a client that can fail the next write that puts a grant into a pool's room. */
function dying(): { client: DynamoDBClient; failRoomUpdate: { next: boolean } } {
  const failRoomUpdate = { next: false };
  const client = {
    send: (command: { constructor: { name: string }; input: { UpdateExpression?: string } }) => {
      if (failRoomUpdate.next && command.constructor.name === 'UpdateItemCommand' && command.input.UpdateExpression?.includes('granted :g')) {
        failRoomUpdate.next = false;
        return Promise.reject(Object.assign(new Error('connection reset'), { name: 'TimeoutError' }));
      }
      return db.client.send(command as never);
    },
  } as unknown as DynamoDBClient;
  return { client, failRoomUpdate };
}

function ledger(clock: ManualClock, client: DynamoDBClient = db.client, pools: PoolOptions | false = POOLS): DynamoDbLedger {
  return new DynamoDbLedger(client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock, sleep: async (ms) => clock.advance(ms), pools });
}

function uniqueUser(): string {
  seq += 1;
  return `pu${seq}-${Math.random().toString(36).slice(2, 8)}`;
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

/** The request with its id changed so that it falls in the same pool shard as `pool` (pools pick it by id). */
function inPool(pool: { pk: string }, input: ReserveInput): ReserveInput {
  const shard = Number(pool.pk.slice(pool.pk.lastIndexOf('#') + 1));
  for (let n = 0; ; n++) {
    const requestId = `${input.requestId}-${n}`;
    if (shardOf(requestId, POOLS.shards!) === shard) return { ...input, requestId };
  }
}

function markPooled(l: DynamoDbLedger, user: string, now: number): Promise<void> {
  return markPooledIn(db, l, user, now);
}

describe('scope pools (DynamoDB Local)', () => {
  it('when a key is pooled, its requests take from pools with single-item writes, and once the sweeper releases the grants the counters equal the costs and the usage records', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, sent } = counting();
    const l = ledger(clock, client);
    await markPooled(l, user, clock.now());
    const refs = [dayCounter(`user:${user}`, 100_000_000), dayCounter(`key:key-${user}`)];
    const rates: RateCharge[] = [{ keyId: `key-${user}`, dimension: 'requests', limitPerMinute: 60_000, amount: 1 }];
    let pooled = 0;
    for (let i = 0; i < 60; i++) {
      const r = await l.reserve(request(user, clock.now(), 10_000, refs, rates));
      if (r.pool) pooled++;
      await l.settle({ reservation: r, cost: 4_000, usage: usageOf(r, user, 4_000) });
      clock.advance(50);
    }
    expect(pooled).toBe(60);
    // Per request that would be 60 reserves and 60 settles; here only the grants are transactions.
    expect(sent.get('TransactWriteItems') ?? 0).toBeLessThan(15);
    // Before the release the counters hold the grants (at least what was spent), never less.
    const [held] = await l.readCounters([refs[0]!]);
    expect(held!.committed).toBeGreaterThanOrEqual(240_000);

    const released = await l.sweepExpired(clock.now() + AFTER_CLOSE);
    expect(released).toBeGreaterThan(0);
    for (const v of await l.readCounters(refs)) expect(v).toMatchObject({ committed: 240_000, spent: 240_000, reserved: 0, requests: 60 });
    const records = await usageOfUser(user);
    expect(records).toHaveLength(60);
    expect(records.reduce((a, r) => a + r.costMicros, 0)).toBe(240_000);
  });

  it('when a taker dies before it settles, the release charges its whole amount and records it as abandoned', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    await markPooled(l, user, clock.now());
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    const r1 = await l.reserve(request(user, clock.now(), 10_000, refs));
    const r2 = await l.reserve(request(user, clock.now(), 10_000, refs));
    const lost = await l.reserve(request(user, clock.now(), 10_000, refs));
    expect([r1.pool, r2.pool, lost.pool].every(Boolean)).toBe(true);
    await l.settle({ reservation: r1, cost: 3_000, usage: usageOf(r1, user, 3_000) });
    await l.settle({ reservation: r2, cost: 5_000, usage: usageOf(r2, user, 5_000) });

    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: 18_000, spent: 18_000, reserved: 0, requests: 2 });
    const records = await usageOfUser(user);
    expect(records.reduce((a, r) => a + r.costMicros, 0)).toBe(18_000);
    expect(records.filter((r) => r.outcome === 'abandoned').map((r) => r.costMicros)).toEqual([10_000]);
  });

  it('when a request settles after its pool was released, its unspent part goes back to the counters directly', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    await markPooled(l, user, clock.now());
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    const slow = await l.reserve(request(user, clock.now(), 10_000, refs));
    expect(slow.pool).toBeDefined();
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [swept] = await l.readCounters(refs);
    // The pool gave back its unused room; the slow request's whole amount stays charged for now.
    expect(swept).toMatchObject({ reserved: 0 });
    expect(swept!.spent).toBe(swept!.committed);
    expect(swept!.committed).toBeGreaterThanOrEqual(10_000);

    await l.settle({ reservation: slow, cost: 2_500, usage: usageOf(slow, user, 2_500) });
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: 2_500, spent: 2_500, reserved: 0, requests: 1 });
  });

  it('when the instance refilling a pool dies between its grant and the room update, the release gives that grant back in full (nothing could be taken from it)', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, failRoomUpdate } = dying();
    const l = ledger(clock, client);
    await markPooled(l, user, clock.now());
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    failRoomUpdate.next = true;
    await expect(l.reserve(request(user, clock.now(), 10_000, refs))).rejects.toThrow();
    const [held] = await l.readCounters(refs);
    expect(held!.reserved).toBeGreaterThan(0);

    expect(await l.sweepExpired(clock.now() + AFTER_CLOSE)).toBe(1);
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: 0, spent: 0, reserved: 0 });
    expect(await usageOfUser(user)).toEqual([]);
  });

  it('when a grant is reserved, only the limited window is written; the unlimited one gets what was spent at the release, on every path (overshoot, a dead taker, a late settle, a grant that never reached the room)', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    await markPooled(l, user, clock.now());
    const refs = [dayCounter(`user:${user}`, 100_000_000), dayCounter(`key:key-${user}`)];
    const over = await l.reserve(request(user, clock.now(), 10_000, refs));
    expect(over.pool).toBeDefined();
    const [limited, unlimited] = await l.readCounters(refs);
    expect(limited!.committed).toBeGreaterThanOrEqual(10_000);
    // A grant wrote both windows before (4 of a quiet key's 6 counters a grant had no limit).
    expect(unlimited).toMatchObject({ committed: 0, reserved: 0, spent: 0 });

    await l.settle({ reservation: over, cost: 15_000, usage: usageOf(over, user, 15_000) }); // past its reservation
    const dead = await l.reserve(inPool(over.pool!, request(user, clock.now(), 10_000, refs))); // never settles
    const slow = await l.reserve(inPool(over.pool!, request(user, clock.now(), 10_000, refs))); // settles after the release
    expect([dead.pool?.pk, slow.pool?.pk]).toEqual([over.pool!.pk, over.pool!.pk]);
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    for (const v of await l.readCounters(refs)) expect(v).toMatchObject({ committed: 35_000, spent: 35_000, reserved: 0 });
    await l.settle({ reservation: slow, cost: 2_500, usage: usageOf(slow, user, 2_500) });
    const after = await l.readCounters(refs);
    for (const v of after) expect(v).toMatchObject({ committed: 27_500, spent: 27_500, reserved: 0 });
    expect(after[1]!.requests).toBe(after[0]!.requests);

    // An instance that died between its grant and the room update: the release gives it back, nothing spent.
    const other = uniqueUser();
    const { client, failRoomUpdate } = dying();
    const l2 = ledger(clock, client);
    await markPooled(l2, other, clock.now());
    const otherRefs = [dayCounter(`user:${other}`, 100_000_000), dayCounter(`key:key-${other}`)];
    failRoomUpdate.next = true;
    await expect(l2.reserve(request(other, clock.now(), 10_000, otherRefs))).rejects.toThrow();
    expect(await l2.sweepExpired(clock.now() + AFTER_CLOSE)).toBe(1);
    for (const v of await l2.readCounters(otherRefs)) expect(v).toMatchObject({ committed: 0, spent: 0, reserved: 0 });
  });

  it('when three instances race for the last of a budget through pools, what they admit never passes the limit and the last of it is still shared', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const limit = 2_000_000;
    const amount = 50_000;
    const refs = [dayCounter(`user:${user}`, limit)];
    const instances = [0, 1, 2].map(() => ledger(clock));
    for (const l of instances) await markPooled(l, user, clock.now());
    let admitted = 0;
    let refused = 0;
    let pooled = 0;
    await Promise.all(
      instances.map(async (l) => {
        for (let i = 0; i < 40; i++) {
          try {
            const r = await l.reserve(request(user, clock.now(), amount, refs));
            admitted += amount;
            if (r.pool) pooled++;
            // Every admitted request costs its whole reservation: nothing comes back to share.
            await l.settle({ reservation: r, cost: amount, usage: usageOf(r, user, amount) });
          } catch (err) {
            if (!(err instanceof BudgetExceededError)) throw err;
            refused++;
          }
        }
      }),
    );
    expect(admitted).toBeLessThanOrEqual(limit);
    expect(refused).toBeGreaterThan(0);
    expect(pooled).toBeGreaterThan(0);
    // Early refusal is bounded by the room left in the key's pools (less than one request each).
    expect(admitted).toBeGreaterThanOrEqual(limit - 2 * amount);
    await instances[0]!.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await instances[0]!.readCounters(refs);
    expect(day!.committed).toBeLessThanOrEqual(limit);
    expect(day).toMatchObject({ committed: admitted, spent: admitted, reserved: 0 });
  });

  it('when a reserve meets a transaction conflict, the key is marked pooled on its limits item and other instances take from pools after their next limits read', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, conflicts } = counting();
    const first = ledger(clock, client);
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    conflicts.next = 1;
    const r = await first.reserve(request(user, clock.now(), 10_000, refs));
    expect(r.pool).toBeUndefined(); // retried and admitted on its own
    await first.settle({ reservation: r, cost: 1_000, usage: usageOf(r, user, 1_000) });
    // The mark is written in the background.
    let mark: Record<string, unknown> | undefined;
    for (let i = 0; i < 50 && mark?.poolUntil === undefined; i++) {
      const out = await db.client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall({ pk: `limit#key:key-${user}`, sk: 'limits' }), ConsistentRead: true }));
      mark = out.Item ? unmarshall(out.Item) : undefined;
      if (mark?.poolUntil === undefined) await new Promise((done) => setTimeout(done, 20));
    }
    expect(mark?.poolUntil).toBeGreaterThan(clock.now());
    // A limits item carrying only a mark still reads as "no limits set".
    expect((await first.getLimitSettings([`key:key-${user}`])).get(`key:key-${user}`)).toEqual({});

    const other = ledger(clock);
    expect((await other.reserve(request(user, clock.now(), 10_000, refs))).pool).toBeUndefined();
    await other.getLimitSettings([`key:key-${user}`]);
    expect((await other.reserve(request(user, clock.now(), 10_000, refs))).pool).toBeDefined();
    const off = ledger(clock, db.client, false);
    await off.getLimitSettings([`key:key-${user}`]);
    expect((await off.reserve(request(user, clock.now(), 10_000, refs))).pool).toBeUndefined();
  });

  it('when a budget lease is taken from a pool, its return gives the pool back what its requests did not spend', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const inner = ledger(clock);
    await markPooled(inner, user, clock.now());
    const leases = new LeasingLedger(inner, { clock, instanceId: `i-${user}`, holdTtlMs: HOLD_TTL, platformShards: 1, minBusy: 2 });
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    let leased = 0;
    for (let i = 0; i < 30; i++) {
      const r = await leases.reserve(request(user, clock.now(), 10_000, refs));
      if (r.leaseId) leased++;
      await leases.settle({ reservation: r, cost: 1_000, usage: usageOf(r, user, 1_000) });
      clock.advance(20);
    }
    await leases.close();
    expect(leased).toBeGreaterThan(20);
    await inner.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await inner.readCounters(refs);
    expect(day).toMatchObject({ committed: 30_000, spent: 30_000, reserved: 0, requests: 30 });
  });
});

describe('scope pools at the end of a budget (DynamoDB Local)', () => {
  it('when spend leaves no room for even one request, the pool is dry for a moment: its takers get the budget answer without a transaction each', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, sent } = counting();
    const l = ledger(clock, client);
    await markPooled(l, user, clock.now());
    const limit = 100_000;
    const refs = [dayCounter(`user:${user}`, limit)];
    // Two requests fit the limit; their grants take what is left, and they spend all they held.
    const a = await l.reserve(request(user, clock.now(), 40_000, refs));
    const b = await l.reserve(request(user, clock.now(), 40_000, refs));
    expect([a.pool, b.pool].every(Boolean)).toBe(true);
    await l.settle({ reservation: a, cost: 40_000, usage: usageOf(a, user, 40_000) });
    await l.settle({ reservation: b, cost: 40_000, usage: usageOf(b, user, 40_000) });
    const before = sent.get('TransactWriteItems') ?? 0;
    const started = clock.now();
    const refusals: unknown[] = [];
    const total = (): number => [...sent.values()].reduce((sum, n) => sum + n, 0);
    let afterFirst = 0;
    for (let i = 0; i < 5; i++) {
      refusals.push(await l.reserve(request(user, clock.now(), 40_000, refs)).catch((err: unknown) => err));
      if (i === 0) afterFirst = total();
    }
    expect(refusals.every((e) => e instanceof BudgetExceededError)).toBe(true);
    // This instance remembers the budget spent out: the next four asked nothing (denials.ts SpentOutRefusals).
    expect(total()).toBe(afterFirst);
    expect((refusals[4] as BudgetExceededError).message).toBe((refusals[0] as BudgetExceededError).message);
    expect((refusals[0] as BudgetExceededError).headers['x-tollgate-budget-scope']).toBe(`user:${user}`);
    // The first refusal asked the counters (a grant refused, its own reserve refused, the pools' spend moved to
    // the counter, which then shows no room for it): no wait for room that spend has taken.
    expect(clock.now() - started).toBeLessThan(1_000);
    // The rest were told by the dry pools.
    expect((sent.get('TransactWriteItems') ?? 0) - before).toBeLessThanOrEqual(2 * POOLS.shards! + 2);
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: 80_000, spent: 80_000, reserved: 0 });
  });

  it('when money given back in a pool is there, a request of that pool is admitted from its room without a transaction, even while the counters have no room for a grant', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, sent } = counting();
    const l = ledger(clock, client);
    await markPooled(l, user, clock.now());
    const limit = 100_000;
    const refs = [dayCounter(`user:${user}`, limit)];
    const a = await l.reserve(request(user, clock.now(), 40_000, refs));
    const b = await l.reserve(request(user, clock.now(), 40_000, refs));
    await l.settle({ reservation: a, cost: 5_000, usage: usageOf(a, user, 5_000) });
    await l.settle({ reservation: b, cost: 5_000, usage: usageOf(b, user, 5_000) });
    const txBefore = sent.get('TransactWriteItems') ?? 0;
    const again = await l.reserve(inPool(a.pool!, request(user, clock.now(), 30_000, refs)));
    expect(again.pool).toEqual(a.pool);
    expect(sent.get('TransactWriteItems') ?? 0).toBe(txBefore);
    await l.settle({ reservation: again, cost: 30_000, usage: usageOf(again, user, 30_000) });
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: 40_000, spent: 40_000, reserved: 0 });
    expect(day!.committed).toBeLessThanOrEqual(limit);
  });

  it('when a pooled request with a loop check is refused, the loop guard takes its count back, as a refused reserve never counted it', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    await markPooled(l, user, clock.now());
    const refs = [dayCounter(`user:${user}`, 50_000)];
    const loop = loopCheckFor({ keyId: `key-${user}`, userId: user, model: 'gpt-4o-mini', bodyFingerprint: 'same body' }, clock.now(), DEFAULT_GUARDRAILS.loop);
    const first = await l.reserve({ ...request(user, clock.now(), 40_000, refs), loop });
    expect(first.pool).toBeDefined();
    for (let i = 0; i < 3; i++) {
      await expect(l.reserve({ ...request(user, clock.now(), 40_000, refs), loop })).rejects.toBeInstanceOf(BudgetExceededError);
    }
    const out = await db.client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall(loopKey(loop)), ConsistentRead: true }));
    const item = unmarshall(out.Item!);
    // One copy admitted; the three refused ones left no trace (neither a count nor a presumed failure). The
    // admitted copy is its fingerprint's first, so it is not presumed failed (loop-counts.ts): no streak.
    expect(item[`n${loop.window}`]).toBe(1);
    expect(item.fails).toBe(0);
  });
});

describe('scope pools under contention (DynamoDB Local)', () => {
  it('when every take on a pool item meets a transaction writing that item, the request is refused with a retryable 503 store_contention (nothing taken), not a raw DynamoDB error', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    await markPooled(l, user, clock.now());
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    // A first request fills a pool; then every single-item write that takes from a pool is refused as DynamoDB
    // refuses one on an item a transaction (a reclaim, a release) is writing, applying nothing.
    const first = await l.reserve(request(user, clock.now(), 10_000, refs));
    expect(first.pool).toBeDefined();
    const busy = {
      send: (command: { constructor: { name: string }; input: { UpdateExpression?: string } }) => {
        if (command.constructor.name === 'UpdateItemCommand' && command.input.UpdateExpression?.includes('taken :a')) {
          return Promise.reject(Object.assign(new Error('Transaction is ongoing for the item'), { name: 'TransactionConflictException', $metadata: { httpStatusCode: 400 } }));
        }
        return db.client.send(command as never);
      },
    } as unknown as DynamoDBClient;
    const contended = ledger(clock, busy);
    await markPooled(contended, user, clock.now());
    const err = await contended.reserve(inPool(first.pool!, request(user, clock.now(), 10_000, refs))).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect(err).toMatchObject({ status: 503, code: 'store_contention', headers: { 'Retry-After': '1' } });
    expect((err as Error).message).not.toContain('Transaction is ongoing');
    const out = await db.client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall(first.pool!), ConsistentRead: true }));
    expect(unmarshall(out.Item!).taken).toBe(10_000);
  });
});

describe('scope pools\' grant size (DynamoDB Local)', () => {
  it('when a key was pooled only in the last 2 s of an epoch, the next epoch\'s first grant is sized to its rate over those 2 s, not over the whole epoch', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const pools: PoolOptions = { ...POOLS, shards: 1 };
    const l = ledger(clock, db.client, pools);
    await markPooled(l, user, clock.now());
    const refs = [dayCounter(`user:${user}`, 100_000_000)];
    const rates: RateCharge[] = [{ keyId: `key-${user}`, dimension: 'requests', limitPerMinute: 60_000, amount: 1 }];
    const send = async (): Promise<Reservation> => {
      const r = await l.reserve(request(user, clock.now(), 10_000, refs, rates));
      await l.settle({ reservation: r, cost: 4_000, usage: usageOf(r, user, 4_000) });
      return r;
    };
    // The pool's item names its epoch; epochs are offset by a hash of the item's key (pools.ts epochOf).
    const first = await send();
    const epoch = Number(first.pool!.sk.slice(1));
    const start = (e: number): number => e * 10_000 - shardOf(first.pool!.pk, 10_000);
    // Nothing for an epoch, then 10 requests a second over the last 2 s of the next one.
    clock.set(start(epoch + 2) + 8_000);
    for (let i = 0; i < 20; i++) {
      await send();
      clock.advance(100);
    }
    // The epoch after: its first grant is sized to ~10 requests a second for 3 s, ×1.25 (was ~2 a second: 20 over 10 s).
    clock.set(start(epoch + 3) + 100);
    let next: Reservation;
    do {
      next = await send();
      clock.advance(100);
    } while (next.pool!.sk !== `e${epoch + 3}`);
    const out = await db.client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall(next.pool!), ConsistentRead: true }));
    expect(unmarshall(out.Item!).grantedur).toBeGreaterThanOrEqual(30);
  });
});
