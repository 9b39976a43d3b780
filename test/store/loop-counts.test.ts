/**
 * The loop guard's single-write count of a pooled request's copy (lambda/store/dynamodb/loop-counts.ts), on
 * DynamoDB Local: a fingerprint's first copy that succeeds costs one write in all (admission, no settle write);
 * later copies are presumed failed until they settle, as a reserve transaction's are; every count, take-back and
 * failure is applied once when DynamoDB applied a write and its answer was lost (the SDK sends it again).
 */
import { GetItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { ManualClock } from '../../lambda/core/clock';
import { LoopDetectedError } from '../../lambda/core/errors';
import { type LoopCheck, loopCheckFor } from '../../lambda/core/guardrails/loop-guard';
import { DEFAULT_GUARDRAILS } from '../../lambda/core/guardrails/settings';
import { createDynamoDbClient } from '../../lambda/store/dynamodb/client';
import { DynamoDbLedger, loopKey } from '../../lambda/store/dynamodb/ledger';
import { LedgerCore } from '../../lambda/store/dynamodb/ledger-core';
import { LedgerItems } from '../../lambda/store/dynamodb/ledger-items';
import { LoopCounts } from '../../lambda/store/dynamodb/loop-counts';
import { holdKey } from '../../lambda/store/dynamodb/items';
import type { PoolOptions } from '../../lambda/store/dynamodb/pools';
import { createTestTables, testDynamoDbEndpoint, type TestTables } from '../support/dynamo';
import { markPooled } from '../support/busy-scopes';
import { losingLoopAnswers } from '../support/lost-answers';
import { dayCounterAt, reserveInputFor, usageRecordFor } from '../support/usage-records';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write.
const T0 = Date.parse('2099-11-23T10:30:00.000Z');
const POOLS: PoolOptions = { shards: 2, epochMs: 10_000, graceMs: 5_000, markMs: 600_000 };
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

function uniqueUser(): string {
  seq += 1;
  return `lc${seq}-${Math.random().toString(36).slice(2, 8)}`;
}

/** A client that counts the UpdateItem calls on loop items (what the loop guard writes outside transactions). */
function countingLoopWrites(): { client: DynamoDBClient; loopWrites: () => number } {
  const client = createDynamoDbClient({ region: 'us-east-1', endpoint: testDynamoDbEndpoint(), maxAttempts: 1 });
  let n = 0;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const key = (args.input as { Key?: { pk?: { S?: string } } }).Key?.pk?.S ?? '';
      if (context.commandName === 'UpdateItemCommand' && key.startsWith('loop#')) n++;
      return next(args);
    },
    { step: 'initialize', name: 'countLoopWrites' },
  );
  return { client, loopWrites: () => n };
}

function loops(client: DynamoDBClient, clock: ManualClock): LoopCounts {
  const core = new LedgerCore(client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock });
  return new LoopCounts(core, new LedgerItems(core));
}

function check(user: string, body: string, now: number): LoopCheck {
  return loopCheckFor({ keyId: `key-${user}`, userId: user, model: 'gpt-4o-mini', bodyFingerprint: body }, now, DEFAULT_GUARDRAILS.loop);
}

async function loopItem(c: LoopCheck): Promise<Record<string, unknown>> {
  const out = await db.client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall(loopKey(c)), ConsistentRead: true }));
  return out.Item ? unmarshall(out.Item) : {};
}

describe('loop guard counts of pooled copies (DynamoDB Local)', () => {
  it('when a pooled request with a new fingerprint succeeds, the loop guard writes once in all (its count), and the item holds no streak', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, loopWrites } = countingLoopWrites();
    const l = new DynamoDbLedger(client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock, sleep: async (ms) => clock.advance(ms), pools: POOLS });
    await markPooled(db, l, user, clock.now());
    const loop = check(user, 'a question asked once', clock.now());
    const input = { ...reserveInputFor(user, { now: clock.now(), holdTtlMs: 15 * 60_000 }, 10_000, [dayCounterAt(`user:${user}`, T0, 100_000_000)]), loop };
    const r = await l.reserve(input);
    expect(r.pool).toBeDefined();
    expect(r.loop?.copy).toEqual({ id: input.requestId, presumedFailed: false });
    expect(loopWrites()).toBe(1);
    await l.settle({ reservation: r, cost: 8_000, usage: usageRecordFor(r.requestId, user, 8_000, T0), loopOutcome: 'succeeded' });
    expect(loopWrites()).toBe(1);
    const item = await loopItem(loop);
    expect(item[`n${loop.window}`]).toBe(1);
    expect(item.fails ?? 0).toBe(0);
  });

  it('when copies of one fingerprint repeat, the first is not presumed failed and every later one is, so failures count exactly as a transaction counts them', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const counts = loops(db.client, clock);
    const c = check(user, 'the same call', clock.now());
    const first = await counts.countCopy(c, 'req-a');
    expect(first.copy).toEqual({ id: 'req-a', presumedFailed: false });
    const second = await counts.countCopy(c, 'req-b'); // in flight beside the first: presumed failed
    expect(second.copy).toEqual({ id: 'req-b', presumedFailed: true });
    expect(await loopItem(c)).toMatchObject({ [`n${c.window}`]: 2, fails: 1 });
    await counts.settleLoop(first, 'failed');
    await counts.settleLoop(second, 'failed');
    expect(await loopItem(c)).toMatchObject({ fails: 2, lastFailAt: T0 });
    const third = await counts.countCopy(c, 'req-c');
    expect(third.copy?.presumedFailed).toBe(true);
    expect(await loopItem(c)).toMatchObject({ fails: 3 }); // presumed: a fourth copy meets the block at once
    await expect(counts.countCopy(c, 'req-d')).rejects.toBeInstanceOf(LoopDetectedError);
    await counts.settleLoop(third, 'succeeded');
    const item = await loopItem(c);
    expect(item.fails).toBeUndefined(); // a success clears the streak, as in a settle transaction
    expect(item[`n${c.window}`]).toBe(3);
  });

  it('when a counted copy is refused or its caller leaves, its count or its presumed failure is taken back once', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const counts = loops(db.client, clock);
    const c = check(user, 'refused after counting', clock.now());
    const refused = await counts.countCopy(c, 'req-x');
    await counts.uncountLoop(refused);
    await counts.uncountLoop(refused); // a second take-back changes nothing
    expect(await loopItem(c)).toMatchObject({ [`n${c.window}`]: 0, fails: 0 });
    const left = await counts.countCopy(c, 'req-y');
    await counts.settleLoop(left, undefined);
    expect(await loopItem(c)).toMatchObject({ [`n${c.window}`]: 1, fails: 0 });
  });

  it('when DynamoDB applies each loop write and its answer is lost, the SDK retry is applied once: counts, take-backs and failures are exact', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, lost } = losingLoopAnswers();
    const counts = loops(client, clock);
    const c = check(user, 'a flaky network', clock.now());

    const a = await counts.countCopy(c, 'req-1');
    const b = await counts.countCopy(c, 'req-2');
    expect(await loopItem(c)).toMatchObject({ [`n${c.window}`]: 2 }); // not 4
    // The second copy was presumed failed, but its retried count cannot tell (the answer that said so was lost):
    // it is taken as not presumed, which can only keep the streak longer. Its caller leaves: nothing is taken back.
    expect(b.copy?.presumedFailed).toBe(false);
    await counts.settleLoop(b, undefined);
    // The first copy fails: its failure is added once (the retry finds its marker gone).
    await counts.settleLoop(a, 'failed');
    const item = await loopItem(c);
    expect(item[`n${c.window}`]).toBe(2);
    expect(item.fails).toBe(2); // the first copy's failure once, and the second's presumption kept; never 3
    expect(lost.count).toBe(3);

    // A refused copy's take-back under a lost answer: the count goes back by one, not two.
    const refused = await counts.countCopy(c, 'req-3');
    await counts.uncountLoop(refused);
    expect((await loopItem(c))[`n${c.window}`]).toBe(2);
    expect(lost.count).toBe(5);
  });
});

describe('loop guard counts of requests held on their own (DynamoDB Local)', () => {
  async function counter(user: string): Promise<Record<string, unknown>> {
    const ref = dayCounterAt(`user:${user}`, T0, 100_000_000);
    const out = await db.client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall({ pk: `ctr#user:${user}`, sk: ref.windowKey }), ConsistentRead: true }));
    return out.Item ? unmarshall(out.Item) : {};
  }

  it('when a held request succeeds, the loop guard writes twice in all (its count, presumed failed, and its settle), none inside the transactions', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const { client, loopWrites } = countingLoopWrites();
    const l = new DynamoDbLedger(client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock });
    const loop = check(user, 'a held question', clock.now());
    const input = { ...reserveInputFor(user, { now: clock.now(), holdTtlMs: 15 * 60_000 }, 10_000, [dayCounterAt(`user:${user}`, T0, 100_000_000)]), loop };
    const r = await l.reserve(input);
    expect(r.pool).toBeUndefined();
    expect(r.loop?.copy).toEqual({ id: input.requestId, presumedFailed: true });
    expect(await loopItem(loop)).toMatchObject({ [`n${loop.window}`]: 1, fails: 1 });
    await l.settle({ reservation: r, cost: 8_000, usage: usageRecordFor(r.requestId, user, 8_000, T0), loopOutcome: 'succeeded' });
    await l.settle({ reservation: r, cost: 8_000, usage: usageRecordFor(r.requestId, user, 8_000, T0), loopOutcome: 'succeeded' }); // a retried settle
    expect(loopWrites()).toBe(3); // count, settle, and the retried settle's harmless repeat
    const item = await loopItem(loop);
    expect(item[`n${loop.window}`]).toBe(1);
    expect(item.fails).toBeUndefined();
    expect(await counter(user)).toMatchObject({ spent: 8_000, committed: 8_000, reserved: 0, requests: 1 });
  });

  it('when the loop guard refuses a held request whose reserve committed beside it, the reservation is taken back whole: counters, hold and streak as before', async () => {
    const user = uniqueUser();
    const clock = new ManualClock(T0);
    const l = new DynamoDbLedger(db.client, { tables: db.tables, platformShards: 1, usageRetentionDays: 30, clock });
    const counters = [dayCounterAt(`user:${user}`, T0, 100_000_000)];
    const loop = { ...check(user, 'the same failing call', clock.now()), maxFailures: 1 };
    const first = await l.reserve({ ...reserveInputFor(user, { now: clock.now(), holdTtlMs: 15 * 60_000 }, 10_000, counters), loop });
    // In flight and presumed failed: a copy now meets the block, though its budget has room.
    const before = await counter(user);
    const refused = reserveInputFor(user, { now: clock.now(), holdTtlMs: 15 * 60_000 }, 10_000, counters);
    await expect(l.reserve({ ...refused, loop })).rejects.toBeInstanceOf(LoopDetectedError);
    const after = await counter(user);
    expect(before).toMatchObject({ committed: 10_000, reserved: 10_000 });
    expect(after).toMatchObject({ committed: 10_000, reserved: 10_000 });
    expect([after.spent ?? 0, after.requests ?? 0]).toEqual([0, 0]);
    expect(await loopItem(loop)).toMatchObject({ [`n${loop.window}`]: 1, fails: 1 });
    const hold = holdKey(refused.requestId, refused.expiresAt);
    const left = await db.client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: marshall({ pk: hold.pk, sk: hold.sk }), ConsistentRead: true }));
    expect(left.Item).toBeUndefined(); // the refused request left no hold for the sweeper to charge
    expect(first.loop?.copy?.presumedFailed).toBe(true);
  });
});
