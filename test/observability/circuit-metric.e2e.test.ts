/**
 * Issue 23, finding 7: every circuit that opens, whatever opened it, writes the metric the circuit alarm watches.
 * Each guard that can open a circuit is driven end to end (real HTTP, DynamoDB Local, the fake upstream, the
 * gateway composed with `emitMetrics` as the Lambda composes it) and the EMF line it wrote to stdout is asserted:
 * `CircuitOpened` = 1 in namespace Tollgate under `service` × `Stage` (the alarm's series) and under
 * `service` × `Stage` × `Reason` (the cause).
 *
 *   hourly spend limit ─▶ breaker   overshoot past a limit ─▶ breaker   spend velocity ─▶ velocity
 *   second velocity trip ─▶ escalation   ledger / AWS budget kill switch ─▶ kill-switch
 */
import { ManualClock } from '../../lambda/core/clock';
import { checkLedgerSpend, KillSwitch } from '../../lambda/core/guardrails/kill-switch';
import { silentLogger } from '../../lambda/core/log';
import { costOf } from '../../lambda/core/pricing';
import { CIRCUIT_REASON_DIMENSION } from '../../lambda/observability/guardrail-events';
import { GUARDRAIL_METRICS, GUARDRAILS_SERVICE, METRICS_NAMESPACE } from '../../lambda/observability/metric-names';
import { DynamoDbKeyStatusBatch } from '../../lambda/store/dynamodb/key-status-batch';
import { CIRCUIT_ALARM_DESCRIPTION } from '../../lib/stacks/observability-stack';
import { type Harness, startHarness } from '../support/gateway-harness';

const HOUR = 3_600_000;
/** Mid-hour, in the future: no counter or TTL depends on today's date. */
const clock = new ManualClock(Math.ceil(Date.now() / HOUR) * HOUR + 30 * 60_000);
const TICKET = `Classify this support ticket: ${'The customer writes about an order. '.repeat(40)}`;
let h: Harness;
let lines: string[] = [];
let spy: jest.SpyInstance;

type Emf = {
  _aws: { Timestamp: number; CloudWatchMetrics: Array<{ Namespace: string; Dimensions: string[][]; Metrics: Array<{ Name: string; Unit: string }> }> };
  [k: string]: unknown;
};

/** The CircuitOpened documents written since the last call. */
function circuitLines(): Emf[] {
  const out = lines
    .flatMap((chunk) => chunk.split('\n'))
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Emf)
    .filter((d) => d._aws?.CloudWatchMetrics?.some((m) => m.Metrics.some((x) => x.Name === GUARDRAIL_METRICS.circuitOpened)));
  lines = [];
  return out;
}

/** Asserts one line per [scope, reason] opened, each a well-formed CircuitOpened under both dimension sets. */
function expectOpened(opened: ReadonlyArray<readonly [string, string]> | ((docs: readonly Emf[]) => ReadonlyArray<readonly [string, string]>)): Emf[] {
  const docs = circuitLines();
  if (typeof opened === 'function') opened = opened(docs);
  expect(docs.map((d) => [d.scope, d[CIRCUIT_REASON_DIMENSION]]).sort()).toEqual(opened.map(([s, r]) => [s, r]).sort());
  for (const d of docs) {
    expect(d._aws.CloudWatchMetrics).toEqual([
      {
        Namespace: METRICS_NAMESPACE,
        Dimensions: [
          ['service', 'Stage'],
          ['service', 'Stage', CIRCUIT_REASON_DIMENSION],
        ],
        Metrics: [{ Name: GUARDRAIL_METRICS.circuitOpened, Unit: 'Count' }],
      },
    ]);
    expect(d).toMatchObject({ service: GUARDRAILS_SERVICE, Stage: h.config.stage, [GUARDRAIL_METRICS.circuitOpened]: 1 });
    expect(d._aws.Timestamp).toBe(clock.now());
  }
  return docs;
}

beforeAll(async () => {
  h = await startHarness({ clock, gateway: { emitMetrics: true } });
  spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    lines.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    return true;
  });
});
afterAll(async () => {
  spy.mockRestore();
  await h.close();
});
beforeEach(() => {
  h.upstream.reset();
  clock.advance(HOUR);
  lines = [];
});

async function chat(key: string, body: Record<string, unknown>): Promise<number> {
  const res = await fetch(`${h.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  });
  await res.arrayBuffer();
  await h.settled();
  return res.status;
}

it('the circuit alarm says what the metric means, every reason, and what to do', () => {
  for (const word of ['CircuitOpened', 'Reason', 'breaker', 'velocity', 'escalation', 'kill-switch', '429 circuit_open', 'circuits reset']) {
    expect(CIRCUIT_ALARM_DESCRIPTION).toContain(word);
  }
  expect(CIRCUIT_ALARM_DESCRIPTION.length).toBeLessThanOrEqual(1024);
});

it('when a burst crosses an hourly limit, the breaker opens and writes CircuitOpened with Reason breaker', async () => {
  const { raw } = await h.createKey({ userId: 'burster' });
  await h.gateway.ledger.setLimit('user:burster', 'hour', 60_000);
  h.gateway.pipeline.invalidateLimits();
  h.upstream.script({ replyText: 'ok', usage: { inputTokens: 2_000, outputTokens: 100 } });
  let status = 200;
  for (let i = 0; i < 30 && status === 200; i++) status = await chat(raw, { model: 'gpt-4o', max_tokens: 100, messages: [{ role: 'user', content: `burst ${i}` }] });
  expect(status).toBe(429);
  const [doc] = expectOpened([['user:burster', 'breaker']]);
  expect(doc!.closesAt).toMatch(/^\d{4}-/);
  // A refusal of the open circuit opens nothing new.
  expect(await chat(raw, { model: 'gpt-4o', max_tokens: 10, messages: [{ role: 'user', content: 'one more' }] })).toBe(429);
  expect(circuitLines()).toEqual([]);
});

it('when an answer costs more than its reservation and takes a day to 200 % of its limit, the overshoot (breaker) and the daily escalation each write CircuitOpened', async () => {
  const { raw, keyId } = await h.createKey({ userId: 'overshooter' });
  const model = h.gateway.prices.resolve('gpt-4o');
  h.upstream.script({ usage: { inputTokens: 12, outputTokens: 20_000, cachedTokens: 0, cacheWriteTokens: 0 } });
  const actual = costOf(model.price, { inputTokens: 12, outputTokens: 20_000, cachedInputTokens: 0, cacheWriteTokens: 0 });
  await h.gateway.ledger.setLimit(`key:${keyId}`, 'day', Math.floor(actual / 2));
  h.gateway.pipeline.invalidateLimits();
  expect(await chat(raw, { model: 'gpt-4o', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] })).toBe(200);
  // Twice the limit: the overshoot opens the key's circuit until the day ends, the 200 % escalation until an ack.
  // Both are decided after the response, side by side: when the escalation lands first, the circuit is already
  // open when the overshoot comes, which then opens nothing (and writes no line). Each opening writes one line.
  const docs = expectOpened((written) =>
    written.some((d) => d[CIRCUIT_REASON_DIMENSION] === 'breaker')
      ? [
          [`key:${keyId}`, 'breaker'],
          [`key:${keyId}`, 'escalation'],
        ]
      : [[`key:${keyId}`, 'escalation']],
  );
  const breaker = docs.find((d) => d[CIRCUIT_REASON_DIMENSION] === 'breaker');
  if (breaker) expect(String(breaker.reason)).toContain('cost more than reserved');
  expect(docs.find((d) => d[CIRCUIT_REASON_DIMENSION] === 'escalation')!.closesAt).toBe('on-acknowledgement');
});

it('when a loop trips the spend-velocity breaker, then trips it again after the cooldown, it writes Reason velocity, then escalation', async () => {
  const keys = [await h.createKey({ userId: 'looper' }), await h.createKey({ userId: 'looper' }), await h.createKey({ userId: 'looper' })];
  // The subject is the velocity guard: the user's default daily budget ($10) must not refuse first (o1-pro's
  // reservations are dollars each, so a day's default runs out around the second trip).
  for (const window of ['day', 'month'] as const) await h.gateway.ledger.setLimit('user:looper', window, 1_000_000_000);
  h.gateway.pipeline.invalidateLimits();
  h.upstream.scriptEach((body) => {
    const cap = typeof body.max_completion_tokens === 'number' ? body.max_completion_tokens : typeof body.max_tokens === 'number' ? body.max_tokens : 4_300;
    return { replyText: 'Classification failed - no result', usage: { inputTokens: 4_000, outputTokens: Math.min(4_300, cap) } };
  });
  for (let i = 0; i < 6; i++) await chat(keys[i % 3]!.raw, { model: 'o1-pro', messages: [{ role: 'user', content: `${TICKET} (ticket ${i})` }] });
  const first = circuitLines();
  expect(first.length).toBeGreaterThanOrEqual(1);
  expect(new Set(first.map((d) => d[CIRCUIT_REASON_DIMENSION]))).toEqual(new Set(['velocity']));
  expect(first.every((d) => /^(user:looper|key:)/.test(String(d.scope)))).toBe(true);
  expect(first.every((d) => typeof d.closesAt === 'string' && d.closesAt !== 'on-acknowledgement')).toBe(true);

  clock.advance(16 * 60_000);
  for (let i = 0; i < 4; i++) await chat(keys[i % 3]!.raw, { model: 'o1-pro', messages: [{ role: 'user', content: `${TICKET} (again ${i})` }] });
  const second = circuitLines();
  expect(second.length).toBeGreaterThanOrEqual(1);
  expect(new Set(second.map((d) => d[CIRCUIT_REASON_DIMENSION]))).toEqual(new Set(['escalation']));
  expect(second.every((d) => d.closesAt === 'on-acknowledgement')).toBe(true);
  for (const scope of ['user:looper', ...keys.map((k) => `key:${k.keyId}`)]) {
    await h.gateway.guardrails.resetCircuit(scope as `user:${string}`, { by: 'ops', reason: 'loop fixed', at: clock.now() });
  }
});

it('when the kill switch stops the platform (ledger spend, the AWS budget path shares it), it writes Reason kill-switch once', async () => {
  const { raw } = await h.createKey({ userId: 'platform-user' });
  h.upstream.script({ replyText: 'ok', usage: { inputTokens: 1_000, outputTokens: 100 } });
  expect(await chat(raw, { model: 'gpt-4o', max_tokens: 100, messages: [{ role: 'user', content: 'spend a little' }] })).toBe(200);
  const killSwitch = new KillSwitch({
    keys: h.gateway.keys,
    bulk: new DynamoDbKeyStatusBatch(h.tables.client, h.tables.tables),
    store: h.gateway.guardrails,
    budgets: { describe: async () => undefined },
    reporter: { report: async () => undefined },
    clock,
    log: silentLogger,
    budgetName: '',
  });
  const check = () => checkLedgerSpend(killSwitch, { ledger: h.gateway.ledger, defaults: h.config.defaults, percent: h.config.killSwitch.ledgerPercent, now: clock.now() });
  await h.gateway.ledger.setLimit('platform', 'hour', 1_000);
  h.gateway.pipeline.invalidateLimits();
  expect(await check()).toMatchObject({ action: 'activated' });
  const [doc] = expectOpened([['platform', 'kill-switch']]);
  expect(doc!.closesAt).toBe('on-acknowledgement');
  expect(await check()).toMatchObject({ action: 'unchanged' });
  expect(circuitLines()).toEqual([]);
  await h.gateway.ledger.setLimit('platform', 'hour', null);
  await killSwitch.resume({ by: 'ops', reason: 'test done' });
});
