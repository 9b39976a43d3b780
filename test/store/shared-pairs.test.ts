/**
 * An org and the platform both busy are one allowance pools' group (issue 21, store cost): a request takes both
 * parts from one item with one conditional write and gives them back with one, instead of two and two. The
 * counters of both end exactly at the costs after the release, whatever answers are lost; an org budget is
 * never passed and its refusal names the org; near either's limit the two are taken apart again. On
 * DynamoDB Local.
 */
import { type DynamoDBClient, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { ManualClock } from '../../lambda/core/clock';
import { BudgetExceededError } from '../../lambda/core/errors';
import type { CounterRef, Reservation, ReserveInput } from '../../lambda/core/stores';
import type { ScopeId } from '../../lambda/core/types';
import { windowBounds, windowKey } from '../../lambda/core/windows';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import type { PoolOptions } from '../../lambda/store/dynamodb/pools';
import { markBusy } from '../support/busy-scopes';
import { createTestTables, type TestTables } from '../support/dynamo';
import { losingAnswers } from '../support/lost-answers';
import { reserveInputFor, usageRecordFor } from '../support/usage-records';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write (see test/support/clock.ts).
const T0 = Date.parse('2099-11-23T10:00:00.000Z');
const SHARED: PoolOptions = { shards: 4, epochMs: 10_000, graceMs: 5_000, markMs: 600_000 };
/** Past every allowance pool's close (its epoch, one more, the grace; epochs offset by up to one epoch). */
const AFTER_CLOSE = 4 * 10_000 + 5_000;
let db: TestTables;
let seq = 0;

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

function unique(): string {
  seq += 1;
  return `sp${seq}-${Math.random().toString(36).slice(2, 8)}`;
}

function day(scope: ScopeId, limit?: number): CounterRef {
  return { scope, window: 'day', windowKey: windowKey('day', T0), windowEnd: windowBounds('day', T0).end, ...(limit !== undefined ? { limit } : {}), ...(scope === 'platform' ? { shard: 0 } : {}) };
}

/**
 * A user's request in an org: the user's day, the org's day and the platform's day (a window key of the test's
 * own, so each test's platform counter starts at zero: the platform is one scope for the whole table).
 */
function countersOf(user: string, org: ScopeId, limits: { org?: number } = {}): CounterRef[] {
  return [day(`user:${user}` as ScopeId), day(org, limits.org), { ...day('platform', 1_000_000_000), windowKey: `d-${unique()}` }];
}

function requestOf(user: string, counters: CounterRef[], now: number, amount = 10_000): ReserveInput {
  return reserveInputFor(user, { now, holdTtlMs: 600_000 }, amount, counters);
}

async function bothBusy(l: DynamoDbLedger, org: ScopeId, now: number): Promise<void> {
  await markBusy(db, l, org, now);
  await markBusy(db, l, 'platform', now);
}

async function settle(l: DynamoDbLedger, r: Reservation, user: string, cost: number): Promise<void> {
  await l.settle({ reservation: r, cost, usage: usageRecordFor(r.requestId, user, cost, T0) });
}

/** A new org and user on a manual clock, the org and the platform marked busy unless `platformBusy` is false. */
async function orgUser(client: DynamoDBClient = db.client, platformBusy = true) {
  const org: ScopeId = `org:o-${unique()}`;
  const user = unique();
  const clock = new ManualClock(T0);
  const l = ledger(clock, client);
  if (platformBusy) await bothBusy(l, org, clock.now());
  else await markBusy(db, l, org, clock.now());
  return { org, user, clock, l };
}

/**
 * `n` requests one after the other, `stepMs` apart, each settled at `base + i`, each checked by `check`; then the
 * sweep past every pool's close. Returns what they cost.
 */
async function sequence(
  s: { readonly l: DynamoDbLedger; readonly user: string; readonly clock: ManualClock },
  counters: CounterRef[],
  n: number,
  stepMs: number,
  base: number,
  check: (r: Reservation) => void,
): Promise<number> {
  let total = 0;
  for (let i = 0; i < n; i++) {
    const r = await s.l.reserve(requestOf(s.user, counters, s.clock.now()));
    check(r);
    total += base + i;
    await settle(s.l, r, s.user, base + i);
    s.clock.advance(stepMs);
  }
  await s.l.sweepExpired(s.clock.now() + AFTER_CLOSE);
  return total;
}

/** Every counter, read by a fresh instance, equals `total` spent with nothing reserved. */
async function expectExact(clock: ManualClock, counters: CounterRef[], total: number): Promise<void> {
  const values = await ledger(clock).readCounters(counters);
  for (const v of values) expect(v).toMatchObject({ spent: total, committed: total, reserved: 0 });
}

describe('an org and the platform both busy share one allowance item per request (DynamoDB Local)', () => {
  it('when both are busy, each request takes both parts with one take from one item; after the release both counters equal the costs', async () => {
    const s = await orgUser();
    const counters = countersOf(s.user, s.org);
    const total = await sequence(s, counters, 10, 500, 2_000, (r) => {
      expect(r.shared).toHaveLength(1);
      expect(r.shared![0]!.counters.map((c) => c.scope).sort()).toEqual([s.org, 'platform'].sort());
    });
    await expectExact(s.clock, counters, total);
  });

  it('when the platform is not busy, the org is taken from its own pools as before', async () => {
    const { org, user, clock, l } = await orgUser(db.client, false);
    const r = await l.reserve(requestOf(user, countersOf(user, org), clock.now()));
    expect(r.shared).toHaveLength(1);
    expect(r.shared![0]!.counters.map((c) => c.scope)).toEqual([org]);
    await settle(l, r, user, 1_000);
  });

  it('when every take, give-back, grant and release of the pair loses its answer once (the SDK retries), each is applied once', async () => {
    const { client, lost } = losingAnswers((command, input) => {
      const pk = String((input.Key as { pk?: { S?: string } } | undefined)?.pk?.S ?? '');
      return (command === 'UpdateItemCommand' && pk.startsWith('pool#')) || command === 'TransactWriteItemsCommand';
    });
    const s = await orgUser(client);
    const counters = countersOf(s.user, s.org);
    const total = await sequence(s, counters, 6, 1_000, 3_000, (r) => expect(r.shared).toHaveLength(1));
    expect(lost.count).toBeGreaterThan(6);
    await expectExact(s.clock, counters, total);
  });

  it("when 12 requests race an org budget that fits 5 through the pair's pools, at most 5 are admitted, the refusals name the org's budget, and the counters never pass it", async () => {
    const { org, user, clock, l } = await orgUser();
    const amount = 10_000;
    const counters = countersOf(user, org, { org: 5 * amount });
    const outcomes = await Promise.allSettled(Array.from({ length: 12 }, () => l.reserve(requestOf(user, counters, clock.now(), amount))));
    const admitted = outcomes.filter((o): o is PromiseFulfilledResult<Reservation> => o.status === 'fulfilled').map((o) => o.value);
    const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected').map((o) => o.reason as Error);
    expect(admitted.length).toBeLessThanOrEqual(5);
    expect(admitted.length).toBeGreaterThan(0);
    for (const err of refused) {
      expect(err).toBeInstanceOf(BudgetExceededError);
      expect(err.message).toContain(`org ${org.slice('org:'.length)}`);
    }
    const [orgDay] = await ledger(clock).readCounters([counters[1]!]);
    expect(orgDay!.committed).toBeLessThanOrEqual(5 * amount);
    for (const r of admitted) await settle(l, r, user, amount);
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    await expectExact(clock, [counters[1]!], admitted.length * amount);
  });

  it("when the platform is near its limit, the org and the platform are taken apart again (the platform's little left is not held in every org's pools)", async () => {
    const { org, user, clock, l } = await orgUser();
    const counters = countersOf(user, org);
    const paired = await l.reserve(requestOf(user, counters, clock.now()));
    expect(paired.shared).toHaveLength(1);
    // Another instance's grant was refused by the platform's budget: the mark every instance's limits read finds.
    await db.client.send(
      new UpdateItemCommand({
        TableName: db.tables.budgets,
        Key: marshall({ pk: 'limit#platform', sk: 'limits' }),
        UpdateExpression: 'SET nearUntil = :u',
        ExpressionAttributeValues: marshall({ ':u': clock.now() + 60_000 }),
      }),
    );
    await l.getLimitSettings(['platform']);
    const apart = await l.reserve(requestOf(user, counters, clock.now()));
    expect(apart.shared!.map((t) => t.counters.map((c) => c.scope))).toEqual([[org], ['platform']]);
    await settle(l, paired, user, 1_000);
    await settle(l, apart, user, 2_000);
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    await expectExact(clock, counters, 3_000);
  });
});
