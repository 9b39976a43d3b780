/**
 * Routing rules, fallback and budget downgrades over real HTTP: the OpenAI SDK (and fetch for raw headers) →
 * the local gateway with `TOLLGATE_ROUTES` → the fake upstream; DynamoDB Local underneath.
 */
import OpenAI from 'openai';
import { ManualClock } from '../../lambda/core/clock';
import { type Harness, startHarness } from '../support/gateway-harness';

jest.setTimeout(90_000);

const ROUTES = {
  rules: [
    { name: 'cheap', alias: 'tollgate/cheap', models: ['openai/gpt-4o-mini'] },
    { name: 'resilient', alias: 'tollgate/resilient', models: ['openai/gpt-4o', 'anthropic/claude-haiku-4-5', 'openai/gpt-4o-mini'] },
    { name: 'smart', alias: 'tollgate/smart', models: ['openai/gpt-4o'], downgrade: { atPercent: 80, model: 'openai/gpt-4o-mini' } },
    { name: 'short-chat', match: { models: ['openai/gpt-4o'], maxInputTokens: 50, tools: false }, models: ['openai/gpt-4o-mini'] },
  ],
};

const T0 = Date.UTC(2031, 5, 10, 10, 30, 0);
let h: Harness;
beforeAll(async () => {
  h = await startHarness({ clock: new ManualClock(T0), env: { TOLLGATE_ROUTES: JSON.stringify(ROUTES) } });
});
afterAll(async () => {
  await h.close();
});
beforeEach(() => h.upstream.reset());

const openai = (key: string) => new OpenAI({ apiKey: key, baseURL: h.baseURL, maxRetries: 0 });
const ask = (model: string, extra: Record<string, unknown> = {}) => ({ model, max_tokens: 1000, messages: [{ role: 'user' as const, content: 'Where is my order?' }], ...extra });

async function recordsOf(keyId: string): Promise<Record<string, unknown>[]> {
  await h.settled();
  return (await h.scan('usage')).filter((r) => r.keyId === keyId).sort((a, b) => String(a.sk).localeCompare(String(b.sk)));
}

describe('routing rules', () => {
  it('when a caller asks for an alias, the configured model serves it, is billed, and is named in the header and the body', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'route-alias' });
    const res = await openai(raw).chat.completions.create(ask('tollgate/cheap')).withResponse();
    expect(res.response.headers.get('x-tollgate-model')).toBe('openai/gpt-4o-mini');
    expect(res.response.headers.get('x-tollgate-route')).toBe('cheap');
    expect(res.data.model).toBe('gpt-4o-mini');
    expect((h.upstream.requests[0]!.body as { model: string }).model).toBe('gpt-4o-mini');
    expect((await recordsOf(keyId))[0]).toMatchObject({ model: 'openai/gpt-4o-mini', outcome: 'ok' });
  });

  it('when the budget fits the routed model but not the requested one, the alias is admitted: the reservation is made at the routed price', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'route-price' });
    // gpt-4o would reserve ≥ $0.01 for 1000 output tokens; gpt-4o-mini ≤ $0.001.
    await h.gateway.ledger.setLimit(`key:${keyId}`, 'day', 5_000);
    h.gateway.pipeline.invalidateLimits();
    const direct = await fetch(`${h.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json' },
      body: JSON.stringify(ask('openai/gpt-4o', { tools: [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object' } } }] })),
    });
    expect(direct.status).toBe(429);
    const routed = await openai(raw).chat.completions.create(ask('tollgate/cheap')).withResponse();
    expect(routed.response.headers.get('x-tollgate-model')).toBe('openai/gpt-4o-mini');
  });

  it('when a short prompt without tools asks for the expensive model, the rule sends it to the cheaper one; with tools it is left alone', async () => {
    const { raw } = await h.createKey({ userId: 'route-class' });
    const short = await openai(raw).chat.completions.create(ask('openai/gpt-4o')).withResponse();
    expect(short.response.headers.get('x-tollgate-model')).toBe('openai/gpt-4o-mini');
    const tools = [{ type: 'function' as const, function: { name: 'lookup', parameters: { type: 'object' } } }];
    const withTools = await openai(raw).chat.completions.create(ask('openai/gpt-4o', { tools })).withResponse();
    expect(withTools.response.headers.get('x-tollgate-model')).toBe('openai/gpt-4o');
    const long = await openai(raw).chat.completions.create({ ...ask('openai/gpt-4o'), messages: [{ role: 'user', content: 'word '.repeat(400) }] }).withResponse();
    expect(long.response.headers.get('x-tollgate-model')).toBe('openai/gpt-4o');
  });
});

describe('fallback', () => {
  it('when the first model answers 5xx, the next model serves, and each attempt is reserved and settled on its own', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'fallback-5xx' });
    h.upstream.scriptEach((body) => (String(body.model).startsWith('gpt-4o') ? { status: 503, errorMessage: 'overloaded' } : { replyText: 'Claude took over.' }));
    const res = await openai(raw).chat.completions.create(ask('tollgate/resilient')).withResponse();
    expect(res.data.choices[0]!.message.content).toBe('Claude took over.');
    expect(res.response.headers.get('x-tollgate-model')).toBe('anthropic/claude-haiku-4-5');
    expect(res.response.headers.get('x-tollgate-fallback')).toBe('fallback; from=openai/gpt-4o; to=anthropic/claude-haiku-4-5; reason=upstream_502');
    const records = await recordsOf(keyId);
    expect(records.map((r) => [r.model, r.outcome, r.costMicros === 0])).toEqual(
      expect.arrayContaining([
        ['openai/gpt-4o', 'upstream_error', true],
        ['anthropic/claude-haiku-4-5', 'ok', false],
      ]),
    );
    expect(records).toHaveLength(2);
    expect(new Set(records.map((r) => r.requestId)).size).toBe(2);
    expect(await h.holds()).toHaveLength(0);
  });

  it('when every model of the list fails, the caller gets the last failure and every attempt was settled', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'fallback-all' });
    h.upstream.script({ status: 500, errorMessage: 'down' });
    const res = await fetch(`${h.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json' },
      body: JSON.stringify(ask('tollgate/resilient')),
    });
    expect(res.status).toBe(502);
    expect(res.headers.get('x-tollgate-fallback')).toContain('to=openai/gpt-4o-mini');
    expect(res.headers.get('x-tollgate-model')).toBe('openai/gpt-4o-mini');
    const records = await recordsOf(keyId);
    expect(records.map((r) => r.outcome)).toEqual(['upstream_error', 'upstream_error', 'upstream_error']);
    expect(await h.holds()).toHaveLength(0);
  });

  it('when the provider rejects the request (4xx), there is no fallback', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'fallback-4xx' });
    h.upstream.script({ status: 400, errorMessage: 'bad request' });
    const res = await fetch(`${h.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json' },
      body: JSON.stringify(ask('tollgate/resilient')),
    });
    expect(res.status).toBe(400);
    expect(res.headers.get('x-tollgate-fallback')).toBeNull();
    expect(await recordsOf(keyId)).toHaveLength(1);
  });

  it('when the first model\'s reservation is refused for budget, the rule\'s cheaper model serves instead of a refusal', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'downgrade-refused' });
    await h.gateway.ledger.setLimit(`key:${keyId}`, 'day', 5_000);
    h.gateway.pipeline.invalidateLimits();
    const res = await openai(raw).chat.completions.create(ask('tollgate/smart')).withResponse();
    expect(res.response.headers.get('x-tollgate-model')).toBe('openai/gpt-4o-mini');
    expect(res.response.headers.get('x-tollgate-fallback')).toBe('downgrade; from=openai/gpt-4o; to=openai/gpt-4o-mini; reason=budget_exceeded');
    expect(await recordsOf(keyId)).toHaveLength(1);
  });

  it('when the caller is past the rule\'s budget tier, the cheaper model serves from the start', async () => {
    // Explicitly unlimited token rate: the scripted 100k-token call would otherwise meet the default 100k tpm.
    const { raw, keyId } = await h.createKey({ userId: 'downgrade-tier', tpm: 0 });
    h.upstream.script({ usage: { inputTokens: 100_000, outputTokens: 10 } });
    await openai(raw).chat.completions.create(ask('tollgate/cheap'));
    h.upstream.reset();
    const [spent] = await recordsOf(keyId);
    // Spent is 85 % of the limit; what is left would still fit a one-token gpt-4o reservation: the tier decides.
    await h.gateway.ledger.setLimit(`key:${keyId}`, 'month', Math.ceil(Number(spent!.costMicros) / 0.85));
    h.gateway.pipeline.invalidateLimits();
    const res = await fetch(`${h.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...ask('tollgate/smart'), max_tokens: 1 }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-tollgate-fallback')).toBe('downgrade; from=openai/gpt-4o; to=openai/gpt-4o-mini; reason=budget_80pct');
    expect(res.headers.get('x-tollgate-model')).toBe('openai/gpt-4o-mini');
  });
});
