import { ManualClock } from '../../lambda/core/clock';
import { CircuitOpenError, LoopDetectedError } from '../../lambda/core/errors';
import { recordCrossings, crossingsOf } from '../../lambda/core/guardrails/alerts';
import { loopCheckFor } from '../../lambda/core/guardrails/loop-guard';
import { DEFAULT_GUARDRAILS } from '../../lambda/core/guardrails/settings';
import type { Alert, CounterRef, Reservation, ReserveInput } from '../../lambda/core/stores';
import type { BudgetLimits, ScopeId, UsageRecord } from '../../lambda/core/types';
import { windowBounds, windowKey } from '../../lambda/core/windows';
import { DynamoDbGuardrailStore } from '../../lambda/store/dynamodb/guardrails-store';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { createTestTables, type TestTables } from '../support/dynamo';
import { recordingClient } from '../support/recording-client';

// Far in the future, so DynamoDB Local's TTL job cannot delete what the tests write (see test/support/clock.ts).
const T0 = Date.parse('2099-11-23T10:20:00.000Z');
const SHARDS = 4;
let db: TestTables;
let seq = 0;

beforeAll(async () => {
  db = await createTestTables();
});
afterAll(() => db.cleanup());

function unique(prefix: string): string {
  seq += 1;
  return `${prefix}${seq}-${Math.random().toString(36).slice(2, 8)}`;
}

function stores(clock = new ManualClock(T0)) {
  return {
    clock,
    ledger: new DynamoDbLedger(db.client, { tables: db.tables, platformShards: SHARDS, usageRetentionDays: 30, clock }),
    store: new DynamoDbGuardrailStore(db.client, { tables: db.tables, platformShards: SHARDS, clock }),
  };
}

function hourCounter(scope: ScopeId, at = T0, limit?: number): CounterRef {
  return { scope, window: 'hour', windowKey: windowKey('hour', at), windowEnd: windowBounds('hour', at).end, ...(limit ? { limit } : {}) };
}

function input(keyId: string, extra: Partial<ReserveInput> = {}, now = T0): ReserveInput {
  return {
    requestId: unique('req-'),
    now,
    expiresAt: now + 60_000,
    amount: 1_000,
    counters: [hourCounter(`key:${keyId}`, now)],
    rateCharges: [],
    context: { keyId, userId: 'u', model: 'mock/gpt-4o' },
    ...extra,
  };
}

function usage(r: Reservation, outcome: UsageRecord['outcome']): UsageRecord {
  return {
    requestId: r.requestId,
    timestamp: new Date(T0).toISOString(),
    userId: 'u',
    keyId: 'k',
    provider: 'mock',
    model: 'mock/gpt-4o',
    requestType: 'chat',
    endpoint: '/v1/chat/completions',
    stream: false,
    usage: { inputTokens: 1, outputTokens: 1, cachedInputTokens: 0, cacheWriteTokens: 0 },
    costMicros: 0,
    costEstimated: false,
    outcome,
    httpStatus: outcome === 'ok' ? 200 : 502,
    durationMs: 1,
    byok: false,
  };
}

function alert(scope: ScopeId, at: number, type = 'spend_warning'): Alert {
  return { id: unique('a-'), at, type, severity: 'warning', scope, summary: `${scope} ${type}`, details: { n: 1 } };
}

describe('circuit breaker', () => {
  it('when a scope circuit is open, reserve refuses with circuit_open and says when it closes, changing nothing', async () => {
    const { ledger, store } = stores();
    const keyId = unique('k');
    const closesAt = Date.parse('2099-11-23T11:00:00.000Z');
    expect(await store.openCircuit({ scope: `user:${keyId}`, cause: 'breaker', openedAt: T0, closesAt, reason: 'hourly spend reached its limit' })).toBe(true);
    const counters = [hourCounter(`key:${keyId}`)];
    const err = await ledger.reserve(input(keyId, { counters, circuits: [{ scope: `key:${keyId}` }, { scope: `user:${keyId}` }] })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CircuitOpenError);
    const e = err as CircuitOpenError;
    expect(e.status).toBe(429);
    expect(e.code).toBe('circuit_open');
    expect(e.headers['x-tollgate-circuit-closes-at']).toBe('2099-11-23T11:00:00.000Z');
    expect(e.headers['Retry-After']).toBe(String(40 * 60));
    const [v] = await ledger.readCounters(counters);
    expect(v!.committed).toBe(0);
  });

  it('when the circuit closes by time, requests pass again', async () => {
    const { ledger, store } = stores();
    const keyId = unique('k');
    await store.openCircuit({ scope: `key:${keyId}`, cause: 'breaker', openedAt: T0, closesAt: T0 + 60_000, reason: 'x' });
    const later = T0 + 60_000;
    await expect(ledger.reserve(input(keyId, { circuits: [{ scope: `key:${keyId}` }] }, later))).resolves.toMatchObject({ amount: 1_000 });
  });

  it('when the platform circuit is open, every shard refuses, and a reset with an ack reopens all of them', async () => {
    const { ledger, store } = stores();
    await store.openCircuit({ scope: 'platform', cause: 'escalation', openedAt: T0, reason: 'day at 200 %' });
    for (let shard = 0; shard < SHARDS; shard++) {
      const err = await ledger.reserve(input(unique('k'), { circuits: [{ scope: 'platform', shard }] })).catch((e: unknown) => e);
      expect((err as CircuitOpenError).headers['x-tollgate-circuit-closes-at']).toBe('on-acknowledgement');
    }
    expect((await store.listCircuits(T0)).map((c) => c.scope)).toContain('platform');
    expect(await store.resetCircuit('platform', { by: 'ops@example.com', reason: 'limit raised', at: T0 + 1 })).toBe(true);
    expect(await store.resetCircuit('platform', { by: 'ops@example.com', reason: 'again', at: T0 + 2 })).toBe(false);
    await expect(ledger.reserve(input(unique('k'), { circuits: [{ scope: 'platform', shard: 2 }] }))).resolves.toBeDefined();
    const log = await store.listAlerts(T0);
    expect(log.find((a) => a.type === 'circuit_reset' && a.scope === 'platform')?.details).toMatchObject({ by: 'ops@example.com', reason: 'limit raised' });
  });

  it('when a circuit is open until acknowledged, a shorter breaker trip does not shorten it', async () => {
    const { store } = stores();
    const scope: ScopeId = `org:${unique('o')}`;
    await store.openCircuit({ scope, cause: 'escalation', openedAt: T0, reason: 'day at 200 %' });
    expect(await store.openCircuit({ scope, cause: 'breaker', openedAt: T0, closesAt: T0 + 1_000, reason: 'hour' })).toBe(false);
    expect((await store.listCircuits(T0 + 10_000)).find((c) => c.scope === scope)?.closesAt).toBeUndefined();
  });
});

describe('tier alerts', () => {
  it('when the same tier is crossed twice in a window, it alerts once; the next window alerts again', async () => {
    const { store } = stores();
    const scope: ScopeId = `user:${unique('u')}`;
    const limits = new Map<ScopeId, BudgetLimits>([[scope, { hour: 1_000_000 }]]);
    const published: Alert[] = [];
    const sink = { publish: async (a: Alert) => void published.push(a) };
    const deps = { store, sink, settings: DEFAULT_GUARDRAILS.breaker };
    const at = (now: number, spent: number) =>
      crossingsOf([{ ref: hourCounter(scope, now), committed: spent, spent, reserved: 0, requests: 1 }], limits, { now, lastReservation: 1, cooldownMs: 0 });
    expect(await recordCrossings(at(T0, 1_000_000), deps)).toHaveLength(1);
    expect(await recordCrossings(at(T0 + 1_000, 1_000_500), deps)).toHaveLength(0);
    const nextHour = T0 + 3_600_000;
    expect(await recordCrossings(at(nextHour, 1_000_000), deps)).toHaveLength(1);
    expect(published.map((a) => a.type)).toEqual(['spend_critical', 'spend_critical']);
    // The critical tier of the hour opened the circuit with it, in the same transaction.
    expect((await store.listCircuits(T0)).find((c) => c.scope === scope)).toMatchObject({ cause: 'breaker' });
    expect((await store.pendingAlerts(1000)).filter((a) => a.scope === scope)).toHaveLength(2);
  });

  it('when warnings of one scope come less than 6 hours apart, the later one waits; after 6 hours it is sent', async () => {
    const { store } = stores();
    const scope: ScopeId = `user:${unique('u')}`;
    const spacing = { key: 'warning', ms: 6 * 3_600_000 };
    const w = (at: number, window: string) => store.recordAlert(alert(scope, at), { dedupeKey: `${window}#warning`, dedupeUntil: at + 3_600_000, spacing });
    expect(await w(T0, 'hour#10')).toBe(true);
    expect(await w(T0 + 3_600_000, 'hour#11')).toBe(false);
    expect(await w(T0 + 3 * 3_600_000, 'day#23')).toBe(false);
    expect(await w(T0 + 6 * 3_600_000, 'hour#16')).toBe(true);
    // Another scope is not held back by this one's spacing.
    expect(await store.recordAlert(alert(`user:${unique('u')}`, T0 + 1), { dedupeKey: 'hour#10#warning', dedupeUntil: T0, spacing })).toBe(true);
    const log = (await store.listAlerts(T0)).filter((a) => a.scope === scope);
    expect(log).toHaveLength(2);
  });

  it('when a tier is crossed again by every settle, the repeats write nothing: remembered, or read once by a new instance', async () => {
    const { client: counted, calls } = recordingClient(db.client);
    const clock = new ManualClock(T0);
    const store = new DynamoDbGuardrailStore(counted, { tables: db.tables, platformShards: SHARDS, clock });
    const scope: ScopeId = `org:${unique('o')}`;
    const spacing = { key: 'warning', ms: 6 * 3_600_000 };
    const warn = (s: DynamoDbGuardrailStore, at: number, dedupeKey = 'day#23#warning') => s.recordAlert(alert(scope, at), { dedupeKey, dedupeUntil: T0 + 3_600_000, spacing });
    expect(await warn(store, T0)).toBe(true);
    const writes = () => calls.filter((c) => c === 'TransactWriteItemsCommand').length;
    expect(writes()).toBe(1);
    // The same instance: neither the marker nor the spacing is asked again.
    calls.length = 0;
    expect(await warn(store, T0 + 1_000)).toBe(false);
    expect(await warn(store, T0 + 2_000, 'hour#10#warning')).toBe(false);
    expect(calls).toEqual([]);
    // Another instance reads the two items once, then remembers too.
    const other = new DynamoDbGuardrailStore(counted, { tables: db.tables, platformShards: SHARDS, clock });
    expect(await warn(other, T0 + 3_000)).toBe(false);
    expect(await warn(other, T0 + 4_000)).toBe(false);
    expect(calls).toEqual(['BatchGetItemCommand']);
    // The spacing over, a new window's warning is recorded (and only one alert of the first is in the log).
    expect(await warn(other, T0 + 6 * 3_600_000, 'day#24#warning')).toBe(true);
    expect((await store.listAlerts(T0)).filter((a) => a.scope === scope)).toHaveLength(2);
  });

  it('when an alert is published, it leaves the outbox but stays in the log', async () => {
    const { store } = stores();
    const a = alert(`key:${unique('k')}`, T0, 'loop_detected');
    await store.recordAlert(a, { dedupeKey: 'x', dedupeUntil: T0 });
    expect((await store.pendingAlerts(1000)).map((p) => p.id)).toContain(a.id);
    await store.markPublished(a);
    expect((await store.pendingAlerts(1000)).map((p) => p.id)).not.toContain(a.id);
    expect((await store.listAlerts(T0)).map((p) => p.id)).toContain(a.id);
  });
});

describe('loop guard in the ledger', () => {
  const settings = DEFAULT_GUARDRAILS.loop;

  async function attempt(ledger: DynamoDbLedger, keyId: string, outcome: 'ok' | 'upstream_error', now = T0): Promise<unknown> {
    const loop = loopCheckFor({ keyId, userId: `owner-of-${keyId}`, model: 'mock/gpt-4o', bodyFingerprint: 'same-body' }, now, settings);
    let r: Reservation;
    try {
      r = await ledger.reserve(input(keyId, { loop }, now));
    } catch (err) {
      return err;
    }
    await ledger.settle({ reservation: r, cost: 0, usage: usage(r, outcome), ...(outcome === 'ok' ? { loopOutcome: 'succeeded' } : { loopOutcome: 'failed', loopStatus: 503 }) });
    return r;
  }

  it('when the same request finished 5 times within the window, the 6th copy is refused with loop_detected', async () => {
    const { ledger } = stores();
    const keyId = unique('k');
    for (let i = 0; i < 5; i++) expect(await attempt(ledger, keyId, 'ok')).not.toBeInstanceOf(Error);
    const err = (await attempt(ledger, keyId, 'ok')) as LoopDetectedError;
    expect(err).toBeInstanceOf(LoopDetectedError);
    expect(err.code).toBe('loop_detected');
    expect(err.message).toMatch(/sent 5 times within 10 minutes/);
    expect(Number(err.headers['Retry-After'])).toBeGreaterThan(0);
    // The next window starts afresh.
    expect(await attempt(ledger, keyId, 'ok', T0 + settings.windowMs)).not.toBeInstanceOf(Error);
  });

  it('when the same request failed 3 times in a row, further copies are refused; one probe passes a window later', async () => {
    const { ledger } = stores();
    const keyId = unique('k');
    for (let i = 0; i < 3; i++) expect(await attempt(ledger, keyId, 'upstream_error')).not.toBeInstanceOf(Error);
    const err = (await attempt(ledger, keyId, 'upstream_error')) as LoopDetectedError;
    expect(err).toBeInstanceOf(LoopDetectedError);
    expect(err.message).toMatch(/failed upstream 3 times in a row \(the provider answered 503 last\)/);
    expect(err.streak).toEqual({ fails: 3, lastStatus: 503, blockMinutes: 10 });
    const later = T0 + settings.windowMs + 1;
    expect(await attempt(ledger, keyId, 'ok', later)).not.toBeInstanceOf(Error);
    // The success cleared the streak: copies pass again.
    expect(await attempt(ledger, keyId, 'ok', later + 1)).not.toBeInstanceOf(Error);
  });

  it('when a probe after a failure streak fails too, the next probe waits twice as long', async () => {
    const clock = new ManualClock(T0);
    const { ledger } = stores(clock);
    const keyId = unique('k');
    const w = settings.windowMs;
    const at = (t: number, outcome: 'ok' | 'upstream_error') => {
      clock.set(t);
      return attempt(ledger, keyId, outcome, t);
    };
    for (let i = 0; i < 3; i++) expect(await at(T0, 'upstream_error')).not.toBeInstanceOf(Error);
    // The first probe, a window after the last failure, is admitted and fails too.
    expect(await at(T0 + w + 1, 'upstream_error')).not.toBeInstanceOf(Error);
    // A window after that failed probe is no longer enough: the block doubled.
    const refused = (await at(T0 + 2 * w + 2, 'upstream_error')) as LoopDetectedError;
    expect(refused).toBeInstanceOf(LoopDetectedError);
    expect(refused.message).toMatch(/refused for 20 minutes/);
    expect(Number(refused.headers['Retry-After'])).toBe(Math.ceil((w - 1) / 1000));
    // Two windows after the failed probe, the next probe passes.
    expect(await at(T0 + 3 * w + 2, 'ok')).not.toBeInstanceOf(Error);
  });

  it('when failures alternate with successes, the streak never builds up', async () => {
    const { ledger } = stores();
    const keyId = unique('k');
    for (const outcome of ['upstream_error', 'upstream_error', 'ok', 'upstream_error', 'upstream_error'] as const) {
      expect(await attempt(ledger, keyId, outcome)).not.toBeInstanceOf(Error);
    }
  });

  it('when a key has loop overrides, they are stored with its limits and read back', async () => {
    const { ledger } = stores();
    const keyId = unique('k');
    await ledger.setLimit(`key:${keyId}`, 'day', 5_000_000);
    await ledger.setLoopOverrides(keyId, { maxRepeats: 20 });
    expect((await ledger.getLoopOverrides([keyId])).get(keyId)).toEqual({ maxRepeats: 20 });
    expect((await ledger.getLimits([`key:${keyId}`])).get(`key:${keyId}`)).toEqual({ day: 5_000_000 });
    await ledger.setLoopOverrides(keyId, { maxRepeats: null });
    expect((await ledger.getLoopOverrides([keyId])).has(keyId)).toBe(false);
  });
});
