/**
 * A key pool item's size (pool-markers.ts, "Layout"): DynamoDB bills each write of an item at the larger of its
 * size before and after, per started KB, and a pool item carries a marker per take in flight. With as many takes
 * in flight as one busy key's pool item sees (1,000 req/s of one user over 8 keys × 4 shards, ~0.6–0.85 s calls),
 * every take and give-back must write an item under 1 KB (one write unit), while the markers still make takes
 * and give-backs exactly once and carry what the sweeper's `abandoned` record needs. Sizes are computed from the
 * item read back from DynamoDB Local (test/support/item-size.ts).
 */
import { GetItemCommand, ScanCommand, UpdateItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { randomBytes, randomUUID } from 'node:crypto';
import { ManualClock } from '../../lambda/core/clock';
import type { CounterRef, RateCharge, Reservation, ReserveInput } from '../../lambda/core/stores';
import type { ScopeId, UsageRecord } from '../../lambda/core/types';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { shardOf } from '../../lambda/store/dynamodb/hash';
import { grantName, groupId, markerName, markerValue, modelName, parseMarker, requestIdOf } from '../../lambda/store/dynamodb/pool-markers';
import type { PoolOptions, PoolRef } from '../../lambda/store/dynamodb/pools';
import { DynamoDbUsageStore } from '../../lambda/store/dynamodb/usage-store';
import { createTestTables, type TestTables } from '../support/dynamo';
import { dynamoItemSize, writeUnits } from '../support/item-size';
import { losingAnswers } from '../support/lost-answers';
import { dayCounterAt, reserveInputFor, usageRecordFor } from '../support/usage-records';
import { markBusy as markBusyIn, markPooled as markPooledIn } from '../support/busy-scopes';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write (see test/support/clock.ts).
const T0 = Date.parse('2099-11-23T10:30:00.000Z');
const HOLD_TTL = 15 * 60_000;
/** As shipped (lambda/store/dynamodb/pools.ts DEFAULT_POOLS), with a short grace. */
const POOLS: PoolOptions = { shards: 4, epochMs: 10_000, graceMs: 5_000, markMs: 600_000 };
const AFTER_CLOSE = 4 * 10_000 + 5_000;
/** Takes in flight on one pool item at the busiest (the layout's figure: 20–27). */
const IN_FLIGHT = 24;
const MODELS = ['gpt-4o-mini', 'claude-3-5-sonnet-20241022'];
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

function ledger(clock: ManualClock, client = db.client): DynamoDbLedger {
  return new DynamoDbLedger(client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock, sleep: async (ms) => clock.advance(ms), pools: POOLS });
}

function uniqueUser(): string {
  seq += 1;
  return `pz${seq}-${Math.random().toString(36).slice(2, 8)}`;
}

/** A request id as the gateway makes them (lambda/http/app.ts), falling in pool shard `shard`. */
function gatewayId(shard: number): string {
  for (;;) {
    const id = `req_${randomBytes(16).toString('hex')}`;
    if (shardOf(id, POOLS.shards!) === shard) return id;
  }
}

/** A request as the gateway reserves it: both rate dimensions, a model, a gateway request id. */
function request(user: string, now: number, amount: number, refs: CounterRef[], model: string, shard = 0): ReserveInput {
  const rates: RateCharge[] = [
    { keyId: `key-${user}`, dimension: 'requests', limitPerMinute: 1_000_000, amount: 1 },
    { keyId: `key-${user}`, dimension: 'tokens', limitPerMinute: 10_000_000_000, amount: 2_048 },
  ];
  const input = reserveInputFor(user, { now, holdTtlMs: HOLD_TTL }, amount, refs, rates);
  return { ...input, requestId: gatewayId(shard), context: { ...input.context, model } };
}

function usageOf(r: Reservation, user: string, cost: number, at: number, model: string): UsageRecord {
  return { ...usageRecordFor(r.requestId, user, cost, at), model };
}

async function usageOfUser(user: string): Promise<UsageRecord[]> {
  return new DynamoDbUsageStore(db.client, db.tables).query({ by: 'user', id: user, from: '2099-11-23T00:00:00Z', to: '2099-11-24T00:00:00Z' });
}

function markPooled(l: DynamoDbLedger, user: string, now: number): Promise<void> {
  return markPooledIn(db, l, user, now);
}

async function readItem(pool: PoolRef): Promise<Record<string, AttributeValue>> {
  const out = await db.client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall({ pk: pool.pk, sk: pool.sk }), ConsistentRead: true }));
  return out.Item ?? {};
}

/** The same item as the layout before this one wrote it (`t:<request id>` = `r;amount;at;model`, `g:<grant id>`). */
function legacySize(item: Record<string, AttributeValue>, takes: ReadonlyArray<{ r: Reservation; now: number; model: string }>, grantIds: readonly string[]): number {
  const plain = unmarshall(item);
  const legacy: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(plain)) if (!/^[*+~]/.test(name)) legacy[name] = value;
  for (const t of takes) legacy[`t:${t.r.requestId}`] = `r;${t.r.amount};${t.now};${t.model}`;
  for (const g of grantIds) legacy[`g:${g}`] = 100_000;
  return dynamoItemSize(marshall(legacy));
}

describe('key pool item size (DynamoDB Local)', () => {
  it(`with ${IN_FLIGHT} takes in flight on one pool item, every take and give-back writes an item under 1 KB (one write unit); the layout before needed 3`, async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    await markPooled(l, user, clock.now());
    const refs = [dayCounterAt(`user:${user}` as ScopeId, T0, 100_000_000), dayCounterAt(`key:key-${user}` as ScopeId, T0)];

    // Start early in the pool's epoch (epochs are offset by a hash of the pool's key), so one item takes them all.
    const pk = `pool#${groupId(request(user, clock.now(), 1, refs, MODELS[0]!))}#0`;
    const offset = shardOf(pk, POOLS.epochMs!);
    clock.set((Math.floor((T0 + offset) / POOLS.epochMs!) + 1) * POOLS.epochMs! - offset + 50);

    const takes: Array<{ r: Reservation; now: number; model: string }> = [];
    let pool: PoolRef | undefined;
    let before = 0;
    const units: number[] = [];
    for (let i = 0; i < IN_FLIGHT; i++) {
      clock.advance(37); // arrivals spread over the epoch, as in a busy pool
      const model = MODELS[i % MODELS.length]!;
      // µUSD a request reserves: a few hundred to a few tens of thousands (1,024 output tokens of a small or large model).
      const amount = i % 2 === 0 ? 1_987 + i : 31_456 + i;
      const r = await l.reserve(request(user, clock.now(), amount, refs, model));
      expect(r.pool).toBeDefined();
      pool ??= r.pool!;
      expect(r.pool).toEqual(pool); // one item takes them all
      takes.push({ r, now: clock.now(), model });
      const after = dynamoItemSize(await readItem(pool));
      units.push(writeUnits(before, after));
      before = after;
    }
    const item = await readItem(pool!);
    const markers = Object.keys(item).filter((name) => name.startsWith('*'));
    expect(markers).toHaveLength(IN_FLIGHT);
    const grants = Object.keys(item).filter((name) => name.startsWith('+'));
    expect(grants.length).toBeGreaterThanOrEqual(2);
    const peak = dynamoItemSize(item);
    expect(peak).toBeLessThan(1024);
    // What the same takes and grants cost in the layout before: three write units a write at this load.
    const grantIds = grants.map((g) => `pool.${pool!.pk.slice('pool#'.length)}.${pool!.sk}.${g.slice(1)}`);
    expect(writeUnits(0, legacySize(item, takes, grantIds))).toBe(3);

    for (const t of takes) {
      await l.settle({ reservation: t.r, cost: Math.floor(t.r.amount / 3), usage: usageOf(t.r, user, Math.floor(t.r.amount / 3), t.now, t.model) });
      const after = dynamoItemSize(await readItem(pool!));
      units.push(writeUnits(before, after));
      before = after;
    }
    expect(units).toEqual(Array(2 * IN_FLIGHT).fill(1));
    expect(Object.keys(await readItem(pool!)).filter((name) => name.startsWith('*'))).toEqual([]);

    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const spent = takes.reduce((a, t) => a + Math.floor(t.r.amount / 3), 0);
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: spent, spent, reserved: 0, requests: IN_FLIGHT });
  });

  it("when a take is never settled, the sweeper's record has its request id, amount, arrival and model from the compact marker, and its late settle replaces it", async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    await markPooled(l, user, clock.now());
    const refs = [dayCounterAt(`user:${user}` as ScopeId, T0, 100_000_000)];
    const settled = await l.reserve(request(user, clock.now(), 20_000, refs, MODELS[0]!));
    await l.settle({ reservation: settled, cost: 4_000, usage: usageOf(settled, user, 4_000, clock.now(), MODELS[0]!) });
    clock.advance(4_321);
    const arrival = clock.now();
    const lost = await l.reserve(request(user, arrival, 31_456, refs, MODELS[1]!));

    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const swept = (await usageOfUser(user)).find((r) => r.requestId === lost.requestId);
    expect(swept).toMatchObject({ requestId: lost.requestId, outcome: 'abandoned', costMicros: 31_456, model: MODELS[1], timestamp: new Date(arrival).toISOString() });
    const [charged] = await l.readCounters(refs);
    expect(charged).toMatchObject({ committed: 4_000 + 31_456, spent: 4_000 + 31_456, reserved: 0 });

    await l.settle({ reservation: lost, cost: 7_000, usage: usageOf(lost, user, 7_000, arrival, MODELS[1]!) });
    const records = await usageOfUser(user);
    expect(records.map((r) => [r.requestId, r.outcome, r.costMicros]).sort()).toEqual(
      [
        [settled.requestId, 'ok', 4_000],
        [lost.requestId, 'ok', 7_000],
      ].sort(),
    );
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: 11_000, spent: 11_000, reserved: 0, requests: 2 });
  });

  it('when every take and give-back with a gateway request id loses its answer once, each is applied once (a retried take finds its compact marker)', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, lost } = losingAnswers((command, input) => command === 'UpdateItemCommand' && String((input.Key as { pk?: { S?: string } })?.pk?.S).startsWith('pool#'));
    const l = ledger(clock, client);
    await markPooled(l, user, clock.now());
    const refs = [dayCounterAt(`user:${user}` as ScopeId, T0, 100_000_000)];
    let spent = 0;
    for (let i = 0; i < 12; i++) {
      clock.advance(50);
      const r = await l.reserve(request(user, clock.now(), 10_000, refs, MODELS[i % 2]!, i % POOLS.shards!));
      expect(r.pool).toBeDefined();
      await l.settle({ reservation: r, cost: 1_000 + i, usage: usageOf(r, user, 1_000 + i, clock.now(), MODELS[i % 2]!) });
      spent += 1_000 + i;
    }
    expect(lost.count).toBeGreaterThanOrEqual(24);
    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: spent, spent, reserved: 0, requests: 12 });
    const records = await usageOfUser(user);
    expect(records).toHaveLength(12);
    expect(records.every((r) => r.outcome === 'ok')).toBe(true);
    client.destroy();
  });
  it('when a pool item was written in the layout before (`t:<id>`, `g:<grant id>`), its release still finds its grants and charges its unsettled takes with their records', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const l = ledger(clock);
    await markPooled(l, user, clock.now());
    const refs = [dayCounterAt(`user:${user}` as ScopeId, T0, 100_000_000)];
    const done = await l.reserve(request(user, clock.now(), 20_000, refs, MODELS[0]!));
    await l.settle({ reservation: done, cost: 4_000, usage: usageOf(done, user, 4_000, clock.now(), MODELS[0]!) });
    const open = await l.reserve(request(user, clock.now(), 30_000, refs, MODELS[1]!));
    // Rewrite the item's markers as an instance of the deploy before would have written them.
    const pool = open.pool!;
    const item = unmarshall(await readItem(pool));
    const names: Record<string, string> = {};
    const values: Record<string, unknown> = {};
    const removes: string[] = [];
    const sets: string[] = [];
    let n = 0;
    for (const [name, value] of Object.entries(item)) {
      if (!/^[*+~]/.test(name)) continue;
      names[`#o${n}`] = name;
      removes.push(`#o${n}`);
      if (name.startsWith('*')) {
        names[`#n${n}`] = `t:${open.requestId}`;
        values[`:v${n}`] = `r;${open.amount};${clock.now()};${MODELS[1]}`;
        sets.push(`#n${n} = :v${n}`);
      } else if (name.startsWith('+')) {
        names[`#n${n}`] = `g:pool.${pool.pk.slice('pool#'.length)}.${pool.sk}.${name.slice(1)}`;
        values[`:v${n}`] = value;
        sets.push(`#n${n} = :v${n}`);
      }
      n++;
    }
    expect(sets.length).toBeGreaterThanOrEqual(2);
    await db.client.send(
      new UpdateItemCommand({
        TableName: db.tables.budgets,
        Key: marshall({ pk: pool.pk, sk: pool.sk }),
        UpdateExpression: `SET ${sets.join(', ')} REMOVE ${removes.join(', ')}`,
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: marshall(values),
      }),
    );

    await l.sweepExpired(clock.now() + AFTER_CLOSE);
    const [day] = await l.readCounters(refs);
    expect(day).toMatchObject({ committed: 34_000, spent: 34_000, reserved: 0 });
    const swept = (await usageOfUser(user)).find((r) => r.requestId === open.requestId);
    expect(swept).toMatchObject({ outcome: 'abandoned', costMicros: 30_000, model: MODELS[1], timestamp: new Date(clock.now()).toISOString() });
  });
});

describe('key pool markers', () => {
  it("when a quiet key of a busy org is granted its pool, with real ids (UUIDs) and the shipped windows, velocity and rate limits, the grant's hold is under 1 KB (2 write units to put and 2 to delete, in a transaction); it was 1.2 KB with a second copy of its counters", async () => {
    const clock = new ManualClock(T0);
    const l = new DynamoDbLedger(db.client, {
      tables: db.tables,
      platformShards: 8,
      usageRetentionDays: 30,
      clock,
      sleep: async (ms) => clock.advance(ms),
      pools: { ...POOLS, quietEpochMs: 300_000, quietWarmupMs: 0 },
      sharedPools: { shards: 64, epochMs: 10_000, graceMs: 5_000, markMs: 600_000 },
    });
    const user = randomUUID();
    const keyId = randomUUID();
    const org: ScopeId = `org:${randomUUID()}`;
    await markBusyIn(db, l, org, clock.now());
    const at = (scope: ScopeId, window: 'day' | 'month', limit?: number): CounterRef => ({ ...dayCounterAt(scope, T0, limit), window, ...(window === 'month' ? { windowKey: '2099-11', windowEnd: Date.parse('2099-12-01T00:00:00.000Z') } : {}) });
    const counters = [at(`key:${keyId}`, 'day'), at(`key:${keyId}`, 'month', 100_000_000), at(`user:${user}`, 'day', 10_000_000), at(org, 'day'), at('platform', 'day', 1_000_000_000)];
    const window = Math.floor(T0 / 60_000);
    const input: ReserveInput = {
      requestId: gatewayId(0),
      now: T0,
      expiresAt: T0 + HOLD_TTL,
      amount: 20_000,
      counters,
      rateCharges: [
        { keyId, dimension: 'requests', limitPerMinute: 60, amount: 1 },
        { keyId, dimension: 'tokens', limitPerMinute: 100_000, amount: 2_048 },
      ],
      velocity: [`key:${keyId}`, `user:${user}`].map((scope) => ({ scope: scope as ScopeId, window, windowEnd: (window + 1) * 60_000, ceilingMicros: 5_000_000, admittedMicros: 20_000 })),
      circuits: [{ scope: `key:${keyId}` }, { scope: `user:${user}` }],
      context: { keyId, userId: user, orgId: org.slice('org:'.length), model: 'gpt-4o-mini', endpoint: '/v1/chat/completions', requestType: 'chat', stream: true, provider: 'openai' },
    };
    const r = await l.reserve(input);
    await l.backgroundDone();
    const scanned = await db.client.send(new ScanCommand({ TableName: db.tables.budgets, ConsistentRead: true }));
    const grantHolds = (scanned.Items ?? []).filter((i) => i.pk?.S?.startsWith('hold#') && i.requestId?.S?.startsWith('pool.') && i.context?.M?.keyId?.S === keyId);
    expect(grantHolds).toHaveLength(1);
    expect(dynamoItemSize(grantHolds[0]!)).toBeLessThan(1024);
    await l.settle({ reservation: r, cost: 10_000, usage: usageRecordFor(r.requestId, user, 10_000, T0) });
  });

  it('when a marker is read back, it gives the request id, amount, kind, exact arrival and model it was written with', () => {
    const start = 4_099_113_000_000;
    const cases = [
      { id: `req_${'0f'.repeat(16)}`, kind: 'r' as const, amount: 0, arrival: start },
      { id: `req_${randomBytes(16).toString('hex')}`, kind: 'l' as const, amount: 1_234_567_891, arrival: start + 29_999 },
      { id: 'lease.k-1.i7.42', kind: 'l' as const, amount: 31_456, arrival: start - 4_321 }, // not the gateway's shape: spelled out
      { id: `req_${randomBytes(16).toString('hex')}`, kind: 'r' as const, amount: 7, arrival: start - 1_234.75 }, // a clock with fractions
    ];
    for (const c of cases) {
      const name = markerName(c.id);
      const value = markerValue(c.kind, c.amount, c.arrival, start, 'claude-3-5-sonnet-20241022');
      expect(requestIdOf(name)).toBe(c.id);
      const item = { [modelName('claude-3-5-sonnet-20241022')]: 'claude-3-5-sonnet-20241022' };
      expect(parseMarker(name, value, item, start)).toEqual({ requestId: c.id, amount: c.amount, reservedAt: Math.floor(c.arrival), model: 'claude-3-5-sonnet-20241022', lease: c.kind === 'l' });
    }
    expect(markerName(`req_${'ab'.repeat(16)}`)).toHaveLength(23);
    // The layout before: still read.
    expect(parseMarker('t:r1-x', 'r;5000;4099113000123;gpt-4o-mini', {}, start)).toEqual({ requestId: 'r1-x', amount: 5_000, reservedAt: 4_099_113_000_123, model: 'gpt-4o-mini', lease: false });
    // Not take markers: a shared take's, the item's own attributes.
    expect(parseMarker('*AbCdEfGhIjKl', 's', {}, start)).toBeUndefined();
    expect(parseMarker('taken', 5, {}, start)).toBeUndefined();
    expect(parseMarker('ttl', 5, {}, start)).toBeUndefined();
  });

  it('when a grant id is named on its pool item, only the part after the item\'s own name is kept', () => {
    expect(grantName('pool.AbC_-x#3.e409911301.mabc1xyz7')).toBe('+mabc1xyz7');
    expect(grantName('spool.Q#12.e5.mabc1.4fzy3')).toBe('+mabc1.4fzy3');
    expect(grantName('lease-x')).toBe('+:lease-x');
  });
});

describe('waiting for a refill (DynamoDB Local)', () => {
  it("when another instance is refilling the pool, a taker polls it with reads, not with refused takes (each a write unit on the pool's partition)", async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const sent = new Map<string, number>();
    const client = {
      send: (command: { constructor: { name: string }; input: { Key?: { pk?: { S?: string } } } }) => {
        if (String(command.input.Key?.pk?.S).startsWith('pool#')) sent.set(command.constructor.name, (sent.get(command.constructor.name) ?? 0) + 1);
        return db.client.send(command as never);
      },
    } as unknown as typeof db.client;
    const l = ledger(clock, client);
    await markPooled(l, user, clock.now());
    const refs = [dayCounterAt(`user:${user}` as ScopeId, T0, 100_000_000)];
    const pool = { pk: `pool#${groupId(request(user, clock.now(), 10_000, refs, MODELS[0]!))}#0` };
    // Start at the beginning of the pool's epoch (its epochs are offset by a hash of its key), so the wait for the
    // stale claim (2 s) stays in one epoch whatever the random user makes the offset.
    const offset = shardOf(pool.pk, POOLS.epochMs!);
    clock.set(T0 + POOLS.epochMs! - ((T0 + offset) % POOLS.epochMs!));
    const start = clock.now();
    const input = request(user, start, 10_000, refs, MODELS[0]!);
    expect(`pool#${groupId(input)}#0`).toBe(pool.pk);
    const sk = `e${Math.floor((clock.now() + offset) / POOLS.epochMs!)}`;
    // Another instance claimed the pool's refill a moment ago (and then stalls: its claim goes stale after 2 s).
    await db.client.send(
      new UpdateItemCommand({
        TableName: db.tables.budgets,
        Key: marshall({ pk: pool.pk, sk }),
        UpdateExpression: 'SET refillAt = :now, claimBy = :other',
        ExpressionAttributeValues: marshall({ ':now': clock.now(), ':other': 'another-instance.0' }),
      }),
    );

    const r = await l.reserve(input);
    expect(r.pool).toEqual({ pk: pool.pk, sk });
    expect(clock.now() - start).toBeGreaterThanOrEqual(2_000); // it waited for the stale claim
    // Refused take (this epoch's and the last one's), then reads until the claim is stale; a take, the claim, the
    // grant's room, the take.
    expect(sent.get('GetItemCommand')).toBeGreaterThanOrEqual(5);
    expect(sent.get('UpdateItemCommand')).toBeLessThanOrEqual(6);
  });
});
