/**
 * Quiet keys' pools (issue 21, store cost): a key that is not busy itself, of an org whose allowance is pooled,
 * takes its own part (its key's and user's limited counters, rate buckets, velocity) from one pool item of its
 * own, refilled by grants lasting up to half a minute, instead of two transactions a request. The key is not
 * marked busy by it; circuits are still read per request; counters end exactly at the costs after the release,
 * whatever answers are lost. A key's pool is refilled only once the key has come back after a warm-up (or was
 * pooled the epoch before), so a key that sends a request or two pays no grant. On DynamoDB Local.
 */
import { type DynamoDBClient, ScanCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { ManualClock } from '../../lambda/core/clock';
import { CircuitOpenError } from '../../lambda/core/errors';
import type { CounterRef, RateCharge, Reservation, ReserveInput } from '../../lambda/core/stores';
import type { ScopeId, UsageRecord } from '../../lambda/core/types';
import { windowBounds, windowKey, type Window } from '../../lambda/core/windows';
import { DynamoDbGuardrailStore } from '../../lambda/store/dynamodb/guardrails-store';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { DEFAULT_POOLS, type PoolOptions } from '../../lambda/store/dynamodb/pools';
import { DynamoDbUsageStore } from '../../lambda/store/dynamodb/usage-store';
import { markBusy } from '../support/busy-scopes';
import { createTestTables, type TestTables } from '../support/dynamo';
import { losingAnswers } from '../support/lost-answers';
import { reserveInputFor, usageRecordFor } from '../support/usage-records';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write (see test/support/clock.ts).
const T0 = Date.parse('2099-11-23T10:00:00.000Z');
/** The pool mechanics are tested with the warm-up off (its own tests below turn it on). */
const POOLS: PoolOptions = { shards: 4, epochMs: 10_000, graceMs: 5_000, markMs: 600_000, quietEpochMs: 60_000, quietWarmupMs: 0 };
const SHARED: PoolOptions = { shards: 4, epochMs: 10_000, graceMs: 5_000, markMs: 600_000 };
/** Past every quiet pool's close (its epoch, one more, the grace; epochs offset by up to one epoch). */
const AFTER_CLOSE = 4 * 60_000 + 5_000;
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

interface Instance {
  readonly ledger: DynamoDbLedger;
  /** Every command this instance sent, by name; a transaction as `Transact <its items' keys>`. */
  readonly sent: string[];
}

function instance(clock: ManualClock, client: DynamoDBClient = db.client, pools: PoolOptions | false = POOLS): Instance {
  const sent: string[] = [];
  const recording = new Proxy(client, {
    get(target, prop, receiver) {
      if (prop !== 'send') return Reflect.get(target, prop, receiver);
      return (command: { constructor: { name: string }; input: { TransactItems?: Array<Record<string, { Key?: { pk?: { S?: string } } }>> } }, ...rest: unknown[]) => {
        const items = command.input.TransactItems?.map((t) => Object.values(t)[0]?.Key?.pk?.S ?? '') ?? [];
        sent.push(items.length ? `Transact ${items.join(' ')}` : command.constructor.name);
        return (target.send as (...a: unknown[]) => unknown).call(target, command, ...rest);
      };
    },
  });
  const ledger = new DynamoDbLedger(recording, {
    tables: db.tables,
    platformShards: 1,
    usageRetentionDays: 30,
    clock,
    sleep: async (ms) => clock.advance(ms),
    pools,
    sharedPools: SHARED,
  });
  return { ledger, sent };
}

/** Fixed names (the tables are this suite's own): a key's pool epochs are offset by a hash of its name. */
function uniqueUser(): string {
  seq += 1;
  return `qp${seq}`;
}

function counter(scope: ScopeId, window: Window, limit?: number): CounterRef {
  return { scope, window, windowKey: windowKey(window, T0), windowEnd: windowBounds(window, T0).end, ...(limit !== undefined ? { limit } : {}) };
}

/** The org shape: the key's and user's windows (two limited), the org's day (limited, pooled). */
function countersOf(user: string, org: ScopeId): CounterRef[] {
  return [
    counter(`key:key-${user}`, 'day'),
    counter(`key:key-${user}`, 'month', 100_000_000),
    counter(`user:${user}`, 'day', 10_000_000),
    counter(org, 'day', 1_000_000_000),
  ];
}

function requestOf(user: string, org: ScopeId, now: number, amount = 20_000): ReserveInput {
  const rate: RateCharge = { keyId: `key-${user}`, dimension: 'requests', limitPerMinute: 60, amount: 1 };
  const base = reserveInputFor(user, { now, holdTtlMs: 600_000 }, amount, countersOf(user, org), [rate]);
  return { ...base, circuits: [{ scope: `key:key-${user}` }, { scope: `user:${user}` }] };
}

function usageOf(r: Reservation, user: string, cost: number): UsageRecord {
  return usageRecordFor(r.requestId, user, cost, T0);
}

async function quietPoolItems(): Promise<Array<Record<string, unknown>>> {
  const out = await db.client.send(
    new ScanCommand({ TableName: db.tables.budgets, FilterExpression: 'begins_with(pk, :p)', ExpressionAttributeValues: { ':p': { S: 'pool#' } }, ConsistentRead: true }),
  );
  return (out.Items ?? []).map((i) => unmarshall(i)).filter((i) => String(i.pk).endsWith('#q'));
}

async function recordsOf(user: string): Promise<UsageRecord[]> {
  return new DynamoDbUsageStore(db.client, db.tables).query({ by: 'user', id: user, from: '2099-11-23T00:00:00Z', to: '2099-11-24T00:00:00Z' });
}

async function orgBusy(l: DynamoDbLedger, org: ScopeId, now: number): Promise<void> {
  await markBusy(db, l, org, now);
}

/** A new user of a new org on a manual clock and one ledger instance; the org marked busy unless `busy` is false. */
async function quietKey(options: { readonly client?: DynamoDBClient; readonly pools?: PoolOptions | false; readonly busy?: boolean } = {}) {
  const org: ScopeId = `org:o-${uniqueUser()}`;
  const user = uniqueUser();
  const clock = new ManualClock(T0);
  const { ledger: l, sent } = instance(clock, options.client, options.pools);
  if (options.busy !== false) await orgBusy(l, org, clock.now());
  return { org, user, clock, l, sent };
}

/**
 * A quiet key sending 90 requests 2 s apart (3 minutes), each settled before the next: their costs, which ones
 * reserved on their own, and the epochs of the pools the others were taken from.
 */
async function keepSending(l: DynamoDbLedger, clock: ManualClock, user: string, org: ScopeId) {
  const costs: number[] = [];
  const alone: number[] = [];
  const epochs = new Set<string>();
  const pools = new Set<string>();
  for (let i = 0; i < 90; i++) {
    // Fixed ids too (each picks its org allowance item): the same grants in every run.
    const r = await l.reserve({ ...requestOf(user, org, clock.now()), requestId: `${user}-r${i}` });
    if (r.pool === undefined) alone.push(i);
    else {
      epochs.add(r.pool.sk);
      pools.add(r.pool.pk);
    }
    const cost = 3_000 + (i % 7) * 500;
    costs.push(cost);
    await l.settle({ reservation: r, cost, usage: usageOf(r, user, cost) });
    await l.backgroundDone();
    clock.advance(2_000);
  }
  return { costs, alone, epochs, pools };
}

/** After every quiet pool's close, the sweeper releases the grants: each counter holds exactly `total`. */
async function expectReleasedAt(l: DynamoDbLedger, clock: ManualClock, user: string, org: ScopeId, total: number): Promise<void> {
  await l.sweepExpired(clock.now() + AFTER_CLOSE);
  for (const v of await l.readCounters(countersOf(user, org))) expect(v).toMatchObject({ spent: total, committed: total, reserved: 0 });
}

describe("a quiet key of a pooled org takes its own part from one pool item (DynamoDB Local)", () => {
  it("when a quiet key sends 12 requests a couple of seconds apart, the first reserves on its own and has the key's pool refilled beside it, the other 11 are taken from the pool with no transaction; the key is not marked busy; after the release its counters equal the costs, one record each", async () => {
    const { org, user, clock, l, sent } = await quietKey();
    const costs: number[] = [];
    const before = sent.length;
    for (let i = 0; i < 12; i++) {
      const r = await l.reserve(requestOf(user, org, clock.now()));
      // The first never waits for a pool that has no room: it holds on its own.
      expect(r.pool?.pk.endsWith('#q') ?? false).toBe(i > 0);
      expect(r.shared?.length).toBe(1);
      const cost = 3_000 + i * 100;
      costs.push(cost);
      await l.settle({ reservation: r, cost, usage: usageOf(r, user, cost) });
      await l.backgroundDone();
      clock.advance(2_000);
    }
    // Three transactions on the key's counters: the first request's reserve and settle, and the quiet pool's
    // grant (16 requests' worth) made beside it; the others are the org's allowance grants.
    const onKey = sent.slice(before).filter((c) => c.startsWith('Transact') && c.includes(`ctr#key:key-${user}`));
    expect(onKey).toHaveLength(3);
    expect(sent.slice(before).filter((c) => c === 'TransactWriteItemsCommand')).toEqual([]);
    const items = await quietPoolItems();
    expect(items.filter((i) => String(i.pk).includes('#q'))).toHaveLength(1);
    expect(items[0]).toMatchObject({ taken: 11 * 20_000 });

    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const total = costs.reduce((a, b) => a + b, 0);
    const values = await l.readCounters(countersOf(user, org));
    for (const v of values) expect(v).toMatchObject({ spent: total, committed: total, reserved: 0 });
    const records = await recordsOf(user);
    expect(records).toHaveLength(12);
    expect(records.filter((r) => r.outcome === 'abandoned')).toHaveLength(0);
  });

  it("when a quiet key keeps sending across several epochs, a take that leaves its pool low has it refilled beside the request: after the first, no request reserves on its own; counters equal the costs after the release, one record each", async () => {
    const { org, user, clock, l, sent } = await quietKey();
    const before = sent.length;
    const { costs, alone, epochs } = await keepSending(l, clock, user, org);
    expect(alone).toEqual([0]);
    // 180 s of requests: at least three epochs' pools took them.
    expect(epochs.size).toBeGreaterThanOrEqual(3);
    // Only grants wrote the key's counters after the first request's reserve and settle: far fewer than requests.
    const onKey = sent.slice(before).filter((c) => c.startsWith('Transact') && c.includes(`ctr#key:key-${user}`));
    expect(onKey.filter((c) => c.includes('hold#'))).toHaveLength(1);
    // The first request's reserve and settle, then 7 grants in 3 minutes: each lasts to its epoch's end (its units
    // at most half the bucket's burst); they lasted half an epoch before (10 grants).
    expect(onKey.length).toBeLessThanOrEqual(9);

    const total = costs.reduce((a, b) => a + b, 0);
    await expectReleasedAt(l, clock, user, org, total);
    const records = await recordsOf(user);
    expect(records).toHaveLength(90);
    expect(records.filter((r) => r.outcome === 'abandoned')).toHaveLength(0);
  });

  it("when a quiet key keeps sending for 3 minutes with the default 5-minute epoch, its grants last a minute each (the first a few requests' worth): at most 5 grants (one more if its epoch turns meanwhile), 7 with 1-minute epochs; counters equal the costs after the release", async () => {
    const { org, user, clock, l, sent } = await quietKey({ pools: { ...POOLS, quietEpochMs: DEFAULT_POOLS.quietEpochMs } });
    const before = sent.length;
    const { costs, alone } = await keepSending(l, clock, user, org);
    expect(alone).toEqual([0]);
    const onKey = sent.slice(before).filter((c) => c.startsWith('Transact') && c.includes(`ctr#key:key-${user}`));
    // The first request's reserve and settle, then 4 grants, 5 if the epoch turns (the 1-minute epochs: 7).
    expect(onKey.filter((c) => c.includes('hold#'))).toHaveLength(1);
    expect(onKey.length).toBeLessThanOrEqual(7);
    const total = costs.reduce((a, b) => a + b, 0);
    await l.sweepExpired(clock.now() + 4 * DEFAULT_POOLS.quietEpochMs + 5_000);
    for (const v of await l.readCounters(countersOf(user, org))) expect(v).toMatchObject({ spent: total, committed: total, reserved: 0 });
  });

  it("when a quiet key's pool had several grants, the sweeper releases them in one transaction an item (each counter written once), and the counters equal the costs", async () => {
    const { org, user, clock, l, sent } = await quietKey({ pools: { ...POOLS, quietEpochMs: DEFAULT_POOLS.quietEpochMs } });
    const { costs, pools } = await keepSending(l, clock, user, org);
    const grants = (await quietPoolItems()).filter((i) => pools.has(String(i.pk)) && Number(i.granted ?? 0) > 0);
    const grantCount = grants.reduce((n, i) => n + Object.keys(i).filter((k) => k.startsWith('+')).length, 0);
    expect(grantCount).toBeGreaterThan(grants.length); // several grants on an item
    const before = sent.length;
    await l.sweepExpired(clock.now() + 4 * DEFAULT_POOLS.quietEpochMs + 5_000);
    const releases = sent.slice(before).filter((c) => c.startsWith('Transact') && c.includes(`ctr#key:key-${user}`));
    expect(releases).toHaveLength(grants.length);
    for (const release of releases) {
      // Each of the key's two windows once (every grant's release wrote both before).
      expect(release.split(`ctr#key:key-${user} `).length - 1).toBe(2);
    }
    const total = costs.reduce((a, b) => a + b, 0);
    for (const v of await l.readCounters(countersOf(user, org))) expect(v).toMatchObject({ spent: total, committed: total, reserved: 0 });
  });

  it('when the org is not pooled, a quiet key reserves on its own (no pool item), as before', async () => {
    const { org, user, clock, l } = await quietKey({ busy: false });
    const r = await l.reserve(requestOf(user, org, clock.now()));
    expect(r.pool).toBeUndefined();
    expect(r.shared).toBeUndefined();
    await l.backgroundDone();
    await l.settle({ reservation: r, cost: 5_000, usage: usageOf(r, user, 5_000) });
  });

  it('when quiet pools are turned off (quietEpochMs 0), a quiet key of a pooled org reserves its own part on its own', async () => {
    const { org, user, clock, l } = await quietKey({ pools: { ...POOLS, quietEpochMs: 0 } });
    const r = await l.reserve(requestOf(user, org, clock.now()));
    expect(r.shared?.length).toBe(1);
    expect(r.pool).toBeUndefined();
    await l.settle({ reservation: r, cost: 5_000, usage: usageOf(r, user, 5_000) });
  });

  it('when a circuit of the key opens after its pool was granted, the next request is refused at once with circuit_open and its take is given back', async () => {
    const { org, user, clock, l } = await quietKey();
    // The first request reserves on its own and has the pool refilled; the second is taken from it.
    for (let i = 0; i < 2; i++) {
      const r = await l.reserve(requestOf(user, org, clock.now()));
      await l.settle({ reservation: r, cost: 4_000, usage: usageOf(r, user, 4_000) });
      await l.backgroundDone();
    }
    const [pool] = await quietPoolItems().then((items) => items.filter((i) => String(i.pk).includes('#q') && i.taken === 20_000));
    expect(pool).toBeDefined();
    const roomBefore = Number(pool!.room);

    const guards = new DynamoDbGuardrailStore(db.client, { tables: db.tables, platformShards: 1, clock });
    await guards.openCircuit({ scope: `key:key-${user}`, cause: 'breaker', openedAt: clock.now(), closesAt: clock.now() + 60_000, reason: 'spend velocity' });
    clock.advance(1_000);
    const err = await l.reserve(requestOf(user, org, clock.now())).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CircuitOpenError);
    expect((err as CircuitOpenError).code).toBe('circuit_open');
    const after = (await quietPoolItems()).find((i) => i.pk === pool!.pk && i.sk === pool!.sk)!;
    expect(Number(after.room)).toBe(roomBefore);
    expect(Object.keys(after).filter((k) => k.startsWith('*'))).toEqual([]);
  });

  it('when every quiet take, give-back, grant and release loses its answer once (the SDK retries), each is applied once: counters equal the costs', async () => {
    const { client, lost } = losingAnswers((command, input) => {
      const pk = String((input.Key as { pk?: { S?: string } } | undefined)?.pk?.S ?? '');
      if (command === 'UpdateItemCommand') return pk.startsWith('pool#') && pk.endsWith('#q');
      return command === 'TransactWriteItemsCommand';
    });
    const { org, user, clock, l } = await quietKey({ client });
    let total = 0;
    for (let i = 0; i < 6; i++) {
      const r = await l.reserve(requestOf(user, org, clock.now()));
      expect(r.pool?.pk.endsWith('#q') ?? false).toBe(i > 0);
      const cost = 7_000 + i;
      total += cost;
      await l.settle({ reservation: r, cost, usage: usageOf(r, user, cost) });
      await l.backgroundDone();
      clock.advance(3_000);
    }
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    expect(lost.count).toBeGreaterThan(6);
    const values = await instance(clock).ledger.readCounters(countersOf(user, org));
    for (const v of values) expect(v).toMatchObject({ spent: total, committed: total, reserved: 0 });
    expect(await recordsOf(user)).toHaveLength(6);
  });
});

describe("a quiet key's pool gives its idle room back when its user's budget is held (DynamoDB Local)", () => {
  it("when a request needs more than the last epoch's quiet pool holds and the user's day budget is held by that room, the room goes back to the counter and the request is admitted", async () => {
    const { org, user, clock, l } = await quietKey();
    const a = 20_000;
    const userDay = 100 * a; // a grant is at most 5 % of it: 5 requests' worth
    const counters = countersOf(user, org).map((c) => (c.scope === `user:${user}` ? { ...c, limit: userDay } : c));
    // The user has spent all but 7 requests' worth today.
    await db.client.send(
      new UpdateItemCommand({
        TableName: db.tables.budgets,
        Key: marshall({ pk: `ctr#user:${user}`, sk: counters.find((c) => c.scope === `user:${user}`)!.windowKey }),
        UpdateExpression: 'ADD committed :x, spent :x',
        ExpressionAttributeValues: marshall({ ':x': userDay - 7 * a }),
      }),
    );
    const request = (amount: number): ReserveInput => ({ ...requestOf(user, org, clock.now(), amount), counters });
    // The first reserves on its own (and has a grant of 5 requests' worth made beside it), the second is taken
    // from the pool.
    for (let i = 0; i < 2; i++) {
      const r = await l.reserve(request(a));
      expect(r.pool?.pk.endsWith('#q') ?? false).toBe(i > 0);
      await l.settle({ reservation: r, cost: a, usage: usageOf(r, user, a) });
      await l.backgroundDone();
    }
    // Next epoch: the last one's pool holds 4 requests' worth idle; this request needs 5, and the counter has 1 left.
    clock.advance(60_000);
    const third = await l.reserve(request(5 * a));
    expect(third.amount).toBe(5 * a);
    await l.settle({ reservation: third, cost: a, usage: usageOf(third, user, a) });
    await l.backgroundDone();
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [userDayValue] = await l.readCounters(counters.filter((c) => c.scope === `user:${user}`));
    expect(userDayValue).toMatchObject({ spent: userDay - 7 * a + 3 * a, committed: userDay - 7 * a + 3 * a, reserved: 0 });
  });
});

describe("a quiet key's pool is refilled only once the key has come back after the warm-up (DynamoDB Local)", () => {
  const WARM: PoolOptions = { ...POOLS, quietWarmupMs: 10_000 };

  /** The quiet pool items written from now on (the table holds the other tests' too). */
  async function itemsFromNowOn(): Promise<() => Promise<Array<Record<string, unknown>>>> {
    const earlier = new Set((await quietPoolItems()).map((i) => String(i.pk)));
    return async () => (await quietPoolItems()).filter((i) => !earlier.has(String(i.pk)));
  }

  it("when a quiet key sends requests 2 s apart, those of its first 10 s reserve on its own and leave only the first one's mark; the first one 10 s later has the pool granted, and the next is taken from it; counters equal the costs after the release", async () => {
    const { org, user, clock, l, sent } = await quietKey({ pools: WARM });
    const mine = await itemsFromNowOn();
    const before = sent.length;
    const costs: number[] = [];
    const pooled: boolean[] = [];
    let granted: number | undefined;
    for (let i = 0; i < 8; i++) {
      const r = await l.reserve(requestOf(user, org, clock.now()));
      pooled.push(r.pool?.pk.endsWith('#q') ?? false);
      const cost = 4_000 + i * 10;
      costs.push(cost);
      await l.settle({ reservation: r, cost, usage: usageOf(r, user, cost) });
      await l.backgroundDone();
      const items = await mine();
      if (i === 0) expect(items).toEqual([expect.objectContaining({ seen: T0 })]);
      if (items.some((item) => item.granted !== undefined)) granted ??= i;
      clock.advance(2_000);
    }
    // Requests at 0, 2, 4, 6, 8 s reserve on their own with no grant; the one at 10 s too, with the grant beside
    // it; from 12 s on they are taken from the pool.
    expect(granted).toBe(5);
    expect(pooled).toEqual([false, false, false, false, false, false, true, true]);
    // Six settles of requests held on their own (on both of the key's windows); the reserves (six, and any a rate
    // bucket's branch made try again) and the grant on its limited window only: its day window, without a limit,
    // gets the cost at a settle or the grant's release (a grant wrote both before).
    const onKey = sent.slice(before).filter((c) => c.startsWith('Transact') && c.includes(`ctr#key:key-${user}`));
    const settles = onKey.filter((c) => c.includes('hold#'));
    expect(settles).toHaveLength(6);
    expect(settles.filter((c) => c.split(`ctr#key:key-${user}`).length !== 3)).toEqual([]);
    const admissions = onKey.filter((c) => !c.includes('hold#'));
    expect(admissions.length).toBeGreaterThanOrEqual(7);
    expect(admissions.filter((c) => c.split(`ctr#key:key-${user}`).length !== 2)).toEqual([]);

    const total = costs.reduce((a, b) => a + b, 0);
    await expectReleasedAt(l, clock, user, org, total);
    expect(await recordsOf(user)).toHaveLength(8);
  });

  it('when a key sends a burst of requests and stops, no grant is ever made: counters equal the costs, one record each, no pool room held', async () => {
    const { org, user, clock, l, sent } = await quietKey({ pools: WARM });
    const mine = await itemsFromNowOn();
    const before = sent.length;
    const reservations = await Promise.all([0, 1, 2, 3].map(() => l.reserve(requestOf(user, org, clock.now()))));
    await l.backgroundDone();
    for (const r of reservations) await l.settle({ reservation: r, cost: 5_000, usage: usageOf(r, user, 5_000) });
    expect(reservations.every((r) => r.pool === undefined)).toBe(true);
    const items = await mine();
    expect(items).toHaveLength(1);
    expect(items[0]!.granted).toBeUndefined();
    expect(items[0]!.room).toBeUndefined();
    expect(sent.slice(before).filter((c) => c.startsWith('Transact') && c.includes(`ctr#key:key-${user}`))).toHaveLength(8);
    await expectReleasedAt(l, clock, user, org, 20_000);
  });

  it("when a key's pool had a grant last epoch, its first request of the new epoch that finds no room has the pool refilled at once", async () => {
    const { org, user, clock, l } = await quietKey({ pools: WARM });
    const mine = await itemsFromNowOn();
    const costs: number[] = [];
    // Warm the key up in one epoch (a request every 2 s for 20 s), then go on into the next epochs.
    const epochsGranted = new Set<string>();
    let firstOfNextEpoch: { pooledNext: boolean } | undefined;
    for (let i = 0; i < 80 && firstOfNextEpoch === undefined; i++) {
      const before = new Set((await mine()).filter((x) => x.granted !== undefined).map((x) => String(x.sk)));
      const r = await l.reserve(requestOf(user, org, clock.now()));
      costs.push(4_000);
      await l.settle({ reservation: r, cost: 4_000, usage: usageOf(r, user, 4_000) });
      await l.backgroundDone();
      const after = (await mine()).filter((x) => x.granted !== undefined).map((x) => String(x.sk));
      const fresh = after.filter((sk) => !before.has(sk));
      // A grant made on an item of a later epoch than a granted one: the key was pooled the epoch before.
      if (fresh.length && epochsGranted.size) {
        const item = (await mine()).find((x) => x.sk === fresh[0]);
        // Refilled at its first miss (no warm-up wait): granted with no `seen` mark on the item.
        expect(item?.seen).toBeUndefined();
        const next = await l.reserve(requestOf(user, org, clock.now() + 100));
        costs.push(4_000);
        await l.settle({ reservation: next, cost: 4_000, usage: usageOf(next, user, 4_000) });
        firstOfNextEpoch = { pooledNext: next.pool?.sk === fresh[0] };
      }
      for (const sk of after) epochsGranted.add(sk);
      clock.advance(2_000);
    }
    expect(firstOfNextEpoch).toEqual({ pooledNext: true });
    const total = costs.reduce((a, b) => a + b, 0);
    await expectReleasedAt(l, clock, user, org, total);
  });
});
