/**
 * Conservative accounting over real HTTP (issue 11): a departed caller is still billed, a swept hold is
 * charged and a late settle replaces it once, the output cap reaches the provider, an overshoot is charged
 * and trips the circuit, and the gateway's own refusals hold no budget and never feed the loop guard.
 */
import { knownMaxOutputTokens } from '../../lambda/core/output-limits';
import { costOf, maxCostOf } from '../../lambda/core/pricing';
import { systemClock } from '../../lambda/core/clock';
import type { UsageRecord } from '../../lambda/core/types';
import { type Harness, startHarness } from '../support/gateway-harness';

let h: Harness;

beforeAll(async () => {
  h = await startHarness();
});
afterAll(() => h.close());
beforeEach(() => h.upstream.reset());

function post(key: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(`${h.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
}

async function usageOf(userId: string): Promise<UsageRecord[]> {
  return (await h.scan('usage')).filter((u) => u.userId === userId) as unknown as UsageRecord[];
}

/** Waits (bounded in count, not time) until the fake upstream has received `n` requests. */
async function upstreamReceived(n: number): Promise<void> {
  for (let i = 0; i < 2_000 && h.upstream.requests.length < n; i++) await new Promise((r) => setTimeout(r, 5));
  expect(h.upstream.requests.length).toBeGreaterThanOrEqual(n);
}

const ANSWER_USAGE = { inputTokens: 12, outputTokens: 5, cachedTokens: 0, cacheWriteTokens: 0 };
const answerCost = (model: string) =>
  costOf(h.gateway.prices.resolve(model).price, { inputTokens: 12, outputTokens: 5, cachedInputTokens: 0, cacheWriteTokens: 0 });

describe('a caller that hangs up', () => {
  it('when the caller hangs up before a non-streamed answer, the call is settled with the real usage and no hold is left', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'hangup' });
    h.upstream.script({ delayMs: 300, usage: ANSWER_USAGE });
    const caller = new AbortController();
    const pending = post(raw, '/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: 'slow answer' }] }, caller.signal);
    await upstreamReceived(1);
    caller.abort();
    await expect(pending).rejects.toThrow();
    await h.settled();

    const records = await usageOf('hangup');
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ keyId, outcome: 'client_disconnected', costMicros: answerCost('gpt-4o'), costEstimated: false });
    // The provider answered in full: the record carries its usage, not an estimate.
    expect(records[0]).toMatchObject({ inputTokens: 12, outputTokens: 5 });
    expect(await h.holds()).toEqual([]);
    const [day] = await h.gateway.pipeline.readCounters(
      h.gateway.pipeline.countersFor([`key:${keyId}`], new Map(), systemClock.now(), 'r').filter((c) => c.window === 'day'),
    );
    expect(day).toMatchObject({ spent: answerCost('gpt-4o'), reserved: 0, requests: 1 });
  });
});

describe('holds the sweeper reclaims', () => {
  it('when the sweeper reclaims a hold while the provider is still answering, the late settle replaces the estimate exactly once', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'swept' });
    // A long answer, so the sweep below surely runs while the provider is still at work.
    h.upstream.script({ delayMs: 5_000, usage: ANSWER_USAGE });
    const pending = post(raw, '/v1/chat/completions', { model: 'gpt-4o', max_tokens: 100, messages: [{ role: 'user', content: 'swept' }] });
    await upstreamReceived(1);
    // The sweeper runs as if the hold had expired: it charges the whole reservation.
    expect(await h.gateway.ledger.sweepExpired(systemClock.now() + h.config.holdTtlMs + 1)).toBeGreaterThanOrEqual(1);
    const swept = await usageOf('swept');
    // At least the 100 output tokens the reservation assumed (plus the input estimate).
    const reserved = maxCostOf(h.gateway.prices.resolve('gpt-4o').price, { inputTokens: 0, maxOutputTokens: 100 });
    expect(swept).toHaveLength(1);
    expect(swept[0]).toMatchObject({ outcome: 'abandoned', costEstimated: true });
    expect(swept[0]?.costMicros).toBeGreaterThanOrEqual(reserved);

    const res = await pending;
    expect(res.status).toBe(200);
    await h.settled();
    const records = await usageOf('swept');
    expect(records.map((r) => [r.outcome, r.costMicros, r.costEstimated])).toEqual([['ok', answerCost('gpt-4o'), false]]);
    const [day] = await h.gateway.pipeline.readCounters(
      h.gateway.pipeline.countersFor([`key:${keyId}`], new Map(), systemClock.now(), 'r').filter((c) => c.window === 'day'),
    );
    expect(day).toMatchObject({ spent: answerCost('gpt-4o'), committed: answerCost('gpt-4o'), reserved: 0, requests: 1 });
  });
});

describe('the output cap', () => {
  it('when an OpenAI caller sets no cap, the provider is sent the cap the reservation assumed', async () => {
    const { raw } = await h.createKey({ userId: 'capless' });
    const res = await post(raw, '/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(200);
    const model = h.gateway.prices.resolve('gpt-4o');
    const expected = model.price.maxOutputTokens ?? knownMaxOutputTokens(model.upstreamModel) ?? h.config.defaultMaxOutputTokens;
    expect(h.upstream.requests[0]?.body).toMatchObject({ max_completion_tokens: expected });
    expect(h.upstream.requests[0]?.body).not.toHaveProperty('max_tokens');
  });

  it('when the caller sets its own cap, the body goes up with it and nothing is added', async () => {
    const { raw } = await h.createKey({ userId: 'capped' });
    await post(raw, '/v1/chat/completions', { model: 'gpt-4o', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] });
    expect(h.upstream.requests[0]?.body).toMatchObject({ max_tokens: 64 });
    expect(h.upstream.requests[0]?.body).not.toHaveProperty('max_completion_tokens');
  });

  it('when a chat caller of a Claude model sets no cap, Anthropic is sent max_tokens equal to the reserved cap', async () => {
    const { raw } = await h.createKey({ userId: 'capless-claude' });
    const res = await post(raw, '/v1/chat/completions', { model: 'claude-sonnet-4-6', messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(200);
    const model = h.gateway.prices.resolve('claude-sonnet-4-6');
    expect(h.upstream.requests[0]?.body).toMatchObject({ max_tokens: model.price.maxOutputTokens ?? knownMaxOutputTokens(model.upstreamModel) ?? h.config.defaultMaxOutputTokens });
  });
});

describe('overshoot', () => {
  it('when an answer costs more than its reservation, it is charged, recorded, alerted and opens the circuit of the limit it crossed', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'overshoot' });
    const model = h.gateway.prices.resolve('gpt-4o');
    // The upstream ignores the cap of 10 tokens and bills 20,000 output tokens.
    h.upstream.script({ usage: { inputTokens: 12, outputTokens: 20_000, cachedTokens: 0, cacheWriteTokens: 0 } });
    const actual = costOf(model.price, { inputTokens: 12, outputTokens: 20_000, cachedInputTokens: 0, cacheWriteTokens: 0 });
    const limit = Math.floor(actual / 2);
    await h.gateway.ledger.setLimit(`key:${keyId}`, 'day', limit);
    h.gateway.pipeline.invalidateLimits();

    const res = await post(raw, '/v1/chat/completions', { model: 'gpt-4o', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(200);
    await h.settled();

    const [record] = await usageOf('overshoot');
    expect(record?.costMicros).toBe(actual);
    expect(record?.overshootMicros).toBeGreaterThan(0);
    expect((record?.costMicros ?? 0) - (record?.overshootMicros ?? 0)).toBeLessThan(limit);
    const [day] = await h.gateway.pipeline.readCounters(
      h.gateway.pipeline.countersFor([`key:${keyId}`], new Map(), systemClock.now(), 'r').filter((c) => c.window === 'day'),
    );
    expect(day?.spent).toBe(actual);
    const alerts = (await h.gateway.guardrails.listAlerts(systemClock.now() - 60_000)).filter((a) => a.type === 'spend_overshoot');
    expect(alerts).toHaveLength(1);
    expect(alerts[0]).toMatchObject({ scope: `key:${keyId}`, severity: 'critical' });
    expect(h.logs.some((l) => l.includes('settle above its reservation'))).toBe(true);

    const next = await post(raw, '/v1/chat/completions', { model: 'gpt-4o', max_tokens: 1, messages: [{ role: 'user', content: 'again' }] });
    expect(next.status).toBe(429);
    expect(((await next.json()) as { error: { code: string } }).error.code).toBe('circuit_open');
  });
});

describe("the gateway's own refusals", () => {
  it('when a lone tool message goes to a Claude model, every try is a 400 before any reservation and the loop guard never answers', async () => {
    const { raw } = await h.createKey({ userId: 'refused' });
    const body = { model: 'claude-sonnet-4-6', messages: [{ role: 'tool', tool_call_id: 'call_1', content: '42' }] };
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await post(raw, '/v1/chat/completions', body);
      statuses.push(res.status);
      const json = (await res.json()) as { error: { type: string; param?: string } };
      expect(json.error.type).toBe('invalid_request_error');
    }
    await h.settled();
    expect(statuses).toEqual([400, 400, 400, 400, 400, 400]);
    expect(h.upstream.requests).toHaveLength(0);
    expect(await usageOf('refused')).toEqual([]);
    expect(await h.holds()).toEqual([]);
  });

  it('when a tool message answers a call an earlier assistant message made, the Claude request goes through', async () => {
    const { raw } = await h.createKey({ userId: 'tool-ok' });
    const res = await post(raw, '/v1/chat/completions', {
      model: 'claude-sonnet-4-6',
      messages: [
        { role: 'user', content: 'add' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'add', arguments: '{}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: '42' },
      ],
    });
    expect(res.status).toBe(200);
  });
});
