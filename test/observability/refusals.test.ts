/**
 * Refusals as data: the classification of finished requests, the recorder that counts them off the request path,
 * and the daily counters in the usage table on DynamoDB Local.
 */
import { ManualClock } from '../../lambda/core/clock';
import type { Logger } from '../../lambda/core/log';
import type { RequestEvent } from '../../lambda/http/app';
import { RefusalRecorder, type RefusalCount, refusalOf, type RefusalStore } from '../../lambda/observability/refusals';
import { DynamoDbRefusalStore } from '../../lambda/store/dynamodb/refusal-store';
import { TEST_NOW } from '../support/clock';
import { createTestTables, type TestTables } from '../support/dynamo';

const alice = { keyId: 'k_alice', userId: 'alice', orgId: 'acme' };

function refused(status: number, error: NonNullable<RequestEvent['error']>, principal: RequestEvent['principal'] | null = alice) {
  return refusalOf({ status, error, ...(principal ? { principal } : {}) });
}

describe('refusalOf', () => {
  it.each([
    [429, { kind: 'insufficient_quota', code: 'insufficient_quota', headers: { 'x-tollgate-budget-scope': 'org:acme' } }, 'budget', 'org:acme'],
    [429, { kind: 'rate_limit', code: 'rate_limit_exceeded', headers: { 'x-ratelimit-limit-tokens': '100' } }, 'rate_tpm', 'key:k_alice'],
    [429, { kind: 'rate_limit', code: 'rate_limit_exceeded', headers: { 'x-ratelimit-limit-requests': '60' } }, 'rate_rpm', 'key:k_alice'],
    [429, { kind: 'rate_limit', code: 'rate_limit_exceeded', headers: { 'Retry-After': '1' } }, 'concurrency', 'key:k_alice'],
    [429, { kind: 'rate_limit', code: 'circuit_open', headers: { 'x-tollgate-circuit-scope': 'user:alice' } }, 'circuit_open', 'user:alice'],
    [429, { kind: 'rate_limit', code: 'circuit_open', headers: { 'x-tollgate-circuit-scope': 'user:alice', 'x-tollgate-circuit-cause': 'velocity' } }, 'spend_velocity', 'user:alice'],
    [429, { kind: 'rate_limit', code: 'loop_detected' }, 'loop_detected', 'key:k_alice'],
    [429, { kind: 'rate_limit', code: 'gateway_busy' }, 'gateway_busy', 'gateway'],
    [401, { kind: 'authentication', code: 'invalid_api_key' }, 'key_revoked', 'key:k_alice'],
    [401, { kind: 'authentication', code: 'expired_api_key' }, 'key_expired', 'key:k_alice'],
    [403, { kind: 'permission', code: 'key_suspended' }, 'key_suspended', 'key:k_alice'],
    [403, { kind: 'permission', code: 'missing_scope' }, 'missing_scope', 'key:k_alice'],
    [503, { kind: 'unavailable', code: 'store_unavailable' }, 'store_unavailable', 'gateway'],
    [400, { kind: 'invalid_request', code: 'content_blocked' }, 'guardrail', 'key:k_alice'],
  ] as const)('when a request ends %i %j, it is refused for %s by %s', (status, error, reason, scope) => {
    expect(refused(status, { message: 'm', ...error })).toEqual({ reason, scope, keyId: 'k_alice', userId: 'alice', orgId: 'acme' });
  });

  it('when a budget refuses, the refusal names its window too', () => {
    expect(refused(429, { kind: 'insufficient_quota', code: 'insufficient_quota', message: 'm', headers: { 'x-tollgate-budget-scope': 'user:alice', 'x-tollgate-budget-window': 'day' } })).toMatchObject({
      reason: 'budget',
      scope: 'user:alice',
      window: 'day',
    });
  });

  it('when the key is unknown, the refusal is invalid_key with no key or scope', () => {
    expect(refused(401, { kind: 'authentication', code: 'invalid_api_key', message: 'm' }, null)).toEqual({ reason: 'invalid_key', scope: '-', keyId: '-' });
  });

  it.each([
    [502, { kind: 'upstream', message: 'upstream broke' }],
    [400, { kind: 'invalid_request', code: 'invalid_json', message: 'bad json' }],
    [404, { kind: 'not_found', code: 'unknown_url', message: 'no route' }],
    [413, { kind: 'payload_too_large', message: 'big' }],
    [401, { kind: 'authentication', code: 'invalid_admin_token', message: 'admin' }],
  ] as const)('when a request ends %i %j, it is not a refusal', (status, error) => {
    expect(refused(status, error)).toBeUndefined();
  });
});

/** A store that holds what it was given, and can be made to fail or to hang until released. */
class MemoryStore implements RefusalStore {
  readonly writes: RefusalCount[][] = [];
  fail = false;
  gate: Promise<void> | undefined;
  async add(counts: readonly RefusalCount[]): Promise<void> {
    if (this.gate) await this.gate;
    if (this.fail) throw new Error('store down');
    this.writes.push([...counts]);
  }
  async read(): Promise<RefusalCount[]> {
    return this.writes.flat();
  }
}

function capture(): Logger & { lines: { level: string; message: string; fields?: Readonly<Record<string, unknown>> }[] } {
  const lines: { level: string; message: string; fields?: Readonly<Record<string, unknown>> }[] = [];
  return { lines, log: (level, message, fields) => void lines.push({ level, message, ...(fields ? { fields } : {}) }) };
}

describe('RefusalRecorder', () => {
  const budget = { reason: 'budget', scope: 'user:alice', keyId: 'k_alice', userId: 'alice' } as const;

  it('when refusals arrive while a write is in flight, they are coalesced into one write per counter', async () => {
    const store = new MemoryStore();
    let release!: () => void;
    store.gate = new Promise<void>((r) => (release = r));
    const recorder = new RefusalRecorder({ store, clock: new ManualClock(TEST_NOW), log: capture() });
    recorder.count(budget);
    for (let i = 0; i < 99; i++) recorder.count(budget);
    recorder.count({ ...budget, reason: 'loop_detected', scope: 'key:k_alice' });
    release();
    await recorder.flushed();
    expect(store.writes).toHaveLength(2);
    expect(store.writes[0]!.map((c) => c.count)).toEqual([1]);
    expect(store.writes[1]!.map((c) => [c.reason, c.count])).toEqual([
      ['budget', 99],
      ['loop_detected', 1],
    ]);
  });

  it('when the store fails, the counts are lost with one bounded warning, and nothing throws to the caller', async () => {
    const store = new MemoryStore();
    store.fail = true;
    const log = capture();
    const clock = new ManualClock(TEST_NOW);
    const recorder = new RefusalRecorder({ store, clock, log, errorLogIntervalMs: 60_000 });
    for (let i = 0; i < 5; i++) {
      expect(() => recorder.count(budget)).not.toThrow();
      await recorder.flushed();
    }
    expect(log.lines.map((l) => [l.level, l.message, l.fields?.lostRefusals])).toEqual([['warn', 'refusal counts not recorded', 1]]);
    clock.advance(60_000);
    recorder.count(budget);
    await recorder.flushed();
    expect(log.lines.map((l) => l.fields?.lostRefusals)).toEqual([1, 5]);
  });

  it('when more distinct counters wait than maxPending, the extra ones are dropped and reported', async () => {
    const store = new MemoryStore();
    let release!: () => void;
    store.gate = new Promise<void>((r) => (release = r));
    const log = capture();
    const recorder = new RefusalRecorder({ store, clock: new ManualClock(TEST_NOW), log, maxPending: 3 });
    recorder.count(budget); // taken by the first flush
    for (let i = 0; i < 5; i++) recorder.count({ ...budget, keyId: `k_${i}` });
    release();
    await recorder.flushed();
    expect(store.writes.flat()).toHaveLength(4);
    expect(log.lines.map((l) => l.fields?.lostRefusals)).toEqual([2]);
  });
});

describe('DynamoDbRefusalStore on DynamoDB Local', () => {
  let tables: TestTables;
  let store: DynamoDbRefusalStore;
  beforeAll(async () => {
    tables = await createTestTables();
    store = new DynamoDbRefusalStore(tables.client, { usage: tables.tables.usage });
  });
  afterAll(async () => tables?.cleanup());

  it('when counts of the same counter are added twice, they add up; other days and counters stay apart', async () => {
    const day = new Date(TEST_NOW).toISOString().slice(0, 10);
    const next = new Date(TEST_NOW + 86_400_000).toISOString().slice(0, 10);
    const c = { day, reason: 'budget', scope: 'org:acme', window: 'month', keyId: 'k_alice', userId: 'alice', orgId: 'acme', count: 3, lastAt: TEST_NOW } as const;
    const { window: _w, ...rate } = c;
    await store.add([c, { ...rate, reason: 'rate_tpm', scope: 'key:k_alice', count: 1 }, { ...c, window: 'day', count: 1 }]);
    await store.add([{ ...c, count: 4, lastAt: TEST_NOW + 5 }, { ...c, day: next, count: 2 }]);
    const read = await store.read([day]);
    expect(read.map((r) => [r.reason, r.scope, r.window, r.keyId, r.userId, r.orgId, r.count, r.lastAt])).toEqual([
      ['budget', 'org:acme', 'month', 'k_alice', 'alice', 'acme', 7, TEST_NOW + 5],
      ['budget', 'org:acme', 'day', 'k_alice', 'alice', 'acme', 1, TEST_NOW],
      ['rate_tpm', 'key:k_alice', undefined, 'k_alice', 'alice', 'acme', 1, TEST_NOW],
    ]);
    expect((await store.read([next])).map((r) => r.count)).toEqual([2]);
    expect(await store.read(['2000-01-01'])).toEqual([]);
  });
});
