/**
 * The three guards end to end — who are you, what may you do, how much may you spend — and bad input:
 * every refusal has the right status in the caller's dialect and changes no ledger, counter or key.
 */
import { createGateway } from '../../lambda/compose';
import { createDynamoDbClient } from '../../lambda/store/dynamodb/client';
import { createLocalServer } from '../../lambda/local/server';
import { jsonLogger } from '../../lambda/core/log';
import { maxCostOf } from '../../lambda/core/pricing';
import { estimateChatInputTokens } from '../../lambda/core/tokens';
import { ManualClock } from '../../lambda/core/clock';
import { type Harness, startHarness, TEST_PEPPER } from '../support/gateway-harness';
import { TEST_NOW } from '../support/clock';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';


let h: Harness;
beforeAll(async () => {
  // A fixed instant mid-hour: a run straddling an hour or midnight would split its counters across windows.
  h = await startHarness({ env: { TOLLGATE_MAX_BODY_BYTES: String(64 * 1024) }, clock: new ManualClock(TEST_NOW) });
});
afterAll(async () => {
  await h.close();
});
beforeEach(() => h.upstream.reset());

const chatBody = (content = 'hello', extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content }], max_tokens: 100, ...extra });

function post(path: string, key: string | undefined, body: string, headers: Record<string, string> = {}) {
  return fetch(`${h.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
    body,
  });
}

/** Everything that must not change when a request is refused. */
async function ledgerSnapshot(): Promise<string> {
  await h.settled();
  const [usage, budgets, keys] = await Promise.all([h.scan('usage'), h.scan('budgets'), h.scan('keys')]);
  const stable = (items: Record<string, unknown>[]) =>
    items.map((i) => JSON.stringify(i, Object.keys(i).sort())).sort();
  return JSON.stringify({ usage: stable(usage), budgets: stable(budgets), keys: stable(keys) });
}

describe('bad input changes nothing', () => {
  let key: string;
  let suspended: string;
  let revoked: string;
  let expired: string;
  let noScope: string;
  beforeAll(async () => {
    key = (await h.createKey({ userId: 'bad-input', rpm: 1000 })).raw;
    const s = await h.createKey({ userId: 'bad-input' });
    await h.gateway.keys.setStatus(s.keyId, { status: 'suspended', actor: 'operator' });
    suspended = s.raw;
    const r = await h.createKey({ userId: 'bad-input' });
    await h.gateway.keys.setStatus(r.keyId, { status: 'revoked', actor: 'operator' });
    revoked = r.raw;
    expired = (await h.createKey({ userId: 'bad-input', expiresAt: '2020-01-01T00:00:00Z' })).raw;
    noScope = (await h.createKey({ userId: 'bad-input', scopes: ['ai:embed'] })).raw;
  });

  const cases: [string, () => Promise<Response>, number, string | null][] = [
    ['malformed JSON', () => post('/v1/chat/completions', key, '{"model": "gpt-4o", '), 400, 'invalid_json'],
    ['a JSON array body', () => post('/v1/chat/completions', key, '[]'), 400, 'invalid_json'],
    ['messages of the wrong type', () => post('/v1/chat/completions', key, JSON.stringify({ model: 'gpt-4o', messages: 'hi' })), 400, 'invalid_value'],
    ['a negative max_tokens', () => post('/v1/chat/completions', key, chatBody('x', { max_tokens: -5 })), 400, 'invalid_value'],
    ['an unknown model', () => post('/v1/chat/completions', key, chatBody('x', { model: 'gpt-unknown-9' })), 400, 'model_not_found'],
    ['a body over the size limit', () => post('/v1/chat/completions', key, chatBody('x'.repeat(100 * 1024))), 413, 'request_too_large'],
    ['an unknown route', () => post('/v1/nope', key, chatBody()), 404, 'unknown_url'],
    ['no key', () => post('/v1/chat/completions', undefined, chatBody()), 401, 'missing_api_key'],
    ['a key that is not ours', () => post('/v1/chat/completions', 'sk-proj-abcdef', chatBody()), 401, 'invalid_api_key'],
    ['a forged key with a real-looking shape', () => post('/v1/chat/completions', `sk-tg-${'A'.repeat(55)}`, chatBody()), 401, 'invalid_api_key'],
    ['a suspended key', () => post('/v1/chat/completions', suspended, chatBody()), 403, 'key_suspended'],
    ['a revoked key', () => post('/v1/chat/completions', revoked, chatBody()), 401, 'invalid_api_key'],
    ['an expired key', () => post('/v1/chat/completions', expired, chatBody()), 401, 'expired_api_key'],
    ['a key without the route scope', () => post('/v1/chat/completions', noScope, chatBody()), 403, 'missing_scope'],
    ['a model the endpoint cannot serve', () => post('/v1/embeddings', key, JSON.stringify({ model: 'claude-sonnet-4-5', input: 'x' })), 400, 'unsupported_endpoint'],
  ];

  it.each(cases)('when a request has %s, it gets the right status and OpenAI error JSON, and nothing changes', async (_name, send, status, code) => {
    const before = await ledgerSnapshot();
    const res = await send();
    expect(res.status).toBe(status);
    const body = (await res.json()) as { error: { message: string; type: string; code: string | null } };
    expect(body.error.code).toBe(code);
    expect(body.error.message.length).toBeGreaterThan(10);
    expect(res.headers.get('x-request-id')).toBeTruthy();
    expect(await ledgerSnapshot()).toBe(before);
    expect(h.upstream.requests).toHaveLength(0);
  });

  it('when a body is too large on the Anthropic route, the 413 is in the Anthropic dialect', async () => {
    const res = await post('/v1/messages', key, JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [{ role: 'user', content: 'x'.repeat(100 * 1024) }] }));
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ type: 'error', error: { type: 'request_too_large' } });
  });
});

describe('budgets', () => {
  it('when a request would cross a budget, it gets 429 insufficient_quota naming the scope and window', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'budget-1', budget: { window: 'day', limit: 1000 } });
    const res = await post('/v1/chat/completions', raw, chatBody('hi', { max_tokens: 1000 }));
    expect(res.status).toBe(429);
    const body = (await res.json()) as { error: { code: string; type: string; message: string } };
    expect(body.error.code).toBe('insufficient_quota');
    expect(body.error.message).toContain(`key:${keyId}`);
    expect(body.error.message).toContain('day');
    expect(h.upstream.requests).toHaveLength(0);
  });

  it('when a user budget is set, every key of that user is held to it', async () => {
    await h.gateway.ledger.setLimit('user:budget-user', 'month', 1000);
    h.gateway.pipeline.invalidateLimits();
    const { raw } = await h.createKey({ userId: 'budget-user' });
    const res = await post('/v1/chat/completions', raw, chatBody('hi', { max_tokens: 1000 }));
    expect(res.status).toBe(429);
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain('user:budget-user');
  });

  it('when 20 requests race for a budget that fits 7 of them, exactly 7 reach the upstream and nothing is left over', async () => {
    // Distinct racers (same length, so the same hold): identical copies in flight would meet the loop guard,
    // which counts copies at admission.
    const contentOf = (i: number) => `race for the last dollar, racer ${String(i).padStart(2, '0')}`;
    const content = contentOf(0);
    const price = h.gateway.prices.resolve('gpt-4o').price;
    const hold = maxCostOf(price, {
      inputTokens: estimateChatInputTokens({ messages: [{ role: 'user', content }] }),
      maxOutputTokens: 1000,
    });
    const limit = hold * 7 + Math.floor(hold / 2);
    const { raw, keyId } = await h.createKey({ userId: 'racer', budget: { window: 'hour', limit } });
    // The upstream answers no one until every racer was decided (refused, or holding its reservation at the
    // provider): however slow the machine, no early settle can free budget for a later racer.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    h.upstream.script({ until: gate, usage: { inputTokens: 10, outputTokens: 10 } });
    let answered = 0;
    const racing = Array.from({ length: 20 }, (_, i) =>
      post('/v1/chat/completions', raw, chatBody(contentOf(i), { max_tokens: 1000 })).then((r) => {
        answered += 1;
        return r;
      }),
    );
    for (let i = 0; answered + h.upstream.requests.length < 20 && i < 30_000; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    release();
    const results = await Promise.all(racing);
    const statuses = results.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 200)).toHaveLength(7);
    expect(statuses.filter((s) => s === 429)).toHaveLength(13);
    expect(h.upstream.requests).toHaveLength(7);
    await h.settled();
    const records = (await h.scan('usage')).filter((r) => r.keyId === keyId);
    expect(records).toHaveLength(7);
    const sum = records.reduce((a, r) => a + (r.costMicros as number), 0);
    const hour = (await h.scan('budgets')).find((i) => i.pk === `ctr#key:${keyId}` && String(i.sk).startsWith('hour#'))!;
    expect(hour.spent).toBe(sum);
    expect(hour.committed).toBe(sum);
    expect(hour.reserved).toBe(0);
    expect(hour.requests).toBe(7);
    expect(sum).toBeLessThanOrEqual(limit);
    expect(await h.holds()).toHaveLength(0);
  });
});

describe('rate limits', () => {
  it('when a key exceeds its requests per minute, it gets 429 with Retry-After and OpenAI rate-limit headers', async () => {
    const { raw } = await h.createKey({ userId: 'rpm', rpm: 3 });
    const ok = [];
    for (let i = 0; i < 3; i++) ok.push(await post('/v1/chat/completions', raw, JSON.stringify({ model: 'mock/gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] })));
    expect(ok.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(ok[0]!.headers.get('x-ratelimit-limit-requests')).toBe('3');
    expect(ok[2]!.headers.get('x-ratelimit-remaining-requests')).toBe('0');
    const denied = await post('/v1/chat/completions', raw, JSON.stringify({ model: 'mock/gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }));
    expect(denied.status).toBe(429);
    expect(Number(denied.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(((await denied.json()) as { error: { code: string } }).error.code).toBe('rate_limit_exceeded');
  });

  it('when a request is larger than the key tokens per minute, it is refused before the upstream', async () => {
    const { raw } = await h.createKey({ userId: 'tpm', tpm: 500 });
    // ~1,000 input tokens (o200k): more than a whole minute of this key's tokens.
    const res = await post('/v1/chat/completions', raw, chatBody('The quick brown fox jumps over the lazy dog. '.repeat(100), { max_tokens: 10 }));
    expect(res.status).toBe(429);
    expect(h.upstream.requests).toHaveLength(0);
  });

  it('when a caller asks for a large max_tokens, admission holds at most a quarter minute of output and settle charges what was used', async () => {
    const { raw } = await h.createKey({ userId: 'tpm-big-cap', tpm: 500 });
    const first = await post('/v1/chat/completions', raw, chatBody('x', { max_tokens: 100_000 }));
    expect(first.status).toBe(200);
    await h.settled();
    const second = await post('/v1/chat/completions', raw, chatBody('y', { max_tokens: 100_000 }));
    expect(second.status).toBe(200);
    expect(h.upstream.requests).toHaveLength(2);
  });
});

describe('failure paths', () => {
  it('when the client disconnects mid-stream, the hold is released and the request recorded as disconnected', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'leaver' });
    h.upstream.script({ hangAfterEvents: 2 });
    const res = await post('/v1/chat/completions', raw, chatBody('stream please', { stream: true }));
    const reader = res.body!.getReader();
    await reader.read();
    // Cancelling the body closes the connection, as a client that goes away does.
    await reader.cancel();
    await h.settled();
    const [record] = (await h.scan('usage')).filter((r) => r.keyId === keyId);
    expect(record?.outcome).toBe('client_disconnected');
    expect(await h.holds()).toHaveLength(0);
  });

  it('when the store cannot be reached, the gateway fails closed with 503 and the upstream is never called', async () => {
    // A port that nothing listens on.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', () => resolve()));
    const deadPort = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const dead = createGateway({
      config: h.config,
      secrets: { keyPepper: TEST_PEPPER },
      dynamodb: createDynamoDbClient({ region: 'us-east-1', endpoint: `http://127.0.0.1:${deadPort}` }),
      log: jsonLogger({ sink: () => undefined }),
    });
    const server = createLocalServer({ app: dead.app, maxBodyBytes: 1 << 20, log: jsonLogger({ sink: () => undefined }) });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    try {
      const port = (server.address() as AddressInfo).port;
      const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer sk-tg-${'B'.repeat(55)}`, 'content-type': 'application/json' },
        body: chatBody(),
      });
      expect(res.status).toBe(503);
      const body = (await res.json()) as { error: { message: string } };
      expect(body.error.message).not.toContain(String(deadPort));
      expect(h.upstream.requests).toHaveLength(0);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
