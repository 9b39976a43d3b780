/**
 * The parts of the gateway's surface the clients rely on, over real HTTP: authentication before route lookup,
 * whether a denial can be retried (`x-should-retry`, `Retry-After`), errors in the caller's dialect on shared
 * routes, and the mock provider's tools and JSON on both surfaces (what the README examples use).
 */
import { startClientSuite, type ClientSuite } from './support';

let s: ClientSuite;
let key: string;
beforeAll(async () => {
  s = await startClientSuite();
  key = await s.key('u-surface');
});
afterAll(() => s.h.close());

const post = (path: string, apiKey: string | undefined, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${s.h.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}), ...headers },
    body: JSON.stringify(body),
  });

describe('authentication before route lookup', () => {
  it('when an unknown route is called without a key or with a wrong one, it is a 401; with a valid key a 404', async () => {
    expect((await post('/v1/nope', undefined, {})).status).toBe(401);
    expect((await post('/v1/nope', 'sk-tg-wrong', {})).status).toBe(401);
    const found = await post('/v1/nope', key, {});
    expect(found.status).toBe(404);
    expect(await found.json()).toMatchObject({ error: { code: 'unknown_url' } });
  });

  it('when a shared route is called with anthropic-version, the error is in Anthropic shape', async () => {
    const res = await fetch(`${s.h.url}/v1/models/no-such-model`, { headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01' } });
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ type: 'error', error: { type: 'not_found_error' } });
  });
});

describe('whether a denial can be retried', () => {
  it('when the loop guard refuses a repeated request, it says x-should-retry: false with a Retry-After', async () => {
    const body = { model: 'mock/gpt-4o-mini', messages: [{ role: 'user', content: 'same every time' }] };
    const statuses: number[] = [];
    let denied: Response | undefined;
    for (let i = 0; i < 8 && !denied; i++) {
      const res = await post('/v1/chat/completions', key, body);
      statuses.push(res.status);
      if (res.status === 429) denied = res;
      else await res.arrayBuffer();
      // The loop guard counts finished copies: each settles before the next is sent.
      await s.h.settled();
    }
    expect(denied).toBeDefined();
    expect(await denied!.json()).toMatchObject({ error: { code: 'loop_detected' } });
    expect(denied!.headers.get('x-should-retry')).toBe('false');
    expect(denied!.headers.get('retry-after')).toMatch(/^\d+$/);
  });

  it('when a rate limit refuses a request, it says x-should-retry: true with a Retry-After', async () => {
    const { raw } = await s.h.createKey({ userId: 'u-rpm', rpm: 1 });
    const body = (n: number) => ({ model: 'mock/gpt-4o-mini', messages: [{ role: 'user', content: `call ${n}` }] });
    expect((await post('/v1/chat/completions', raw, body(1))).status).toBe(200);
    const limited = await post('/v1/chat/completions', raw, body(2));
    expect(limited.status).toBe(429);
    expect(limited.headers.get('x-should-retry')).toBe('true');
    expect(limited.headers.get('retry-after')).toMatch(/^\d+$/);
  });
});

describe('the mock provider on both surfaces', () => {
  it('when Messages declares a tool, the mock calls it with arguments from its schema, then answers the result', async () => {
    const tools = [{ name: 'lookup', input_schema: { type: 'object', properties: { q: { type: 'string' }, n: { type: 'integer' } }, required: ['q', 'n'] } }];
    const first = await (await post('/v1/messages', key, { model: 'mock/claude-sonnet-4-6', max_tokens: 100, tools, messages: [{ role: 'user', content: 'find cats' }] })).json();
    expect(first).toMatchObject({ stop_reason: 'tool_use', content: [{ type: 'tool_use', name: 'lookup', input: { q: 'find cats', n: 1 } }] });
    const use = (first as { content: { id: string }[] }).content[0]!;
    const second = await (
      await post('/v1/messages', key, {
        model: 'mock/claude-sonnet-4-6',
        max_tokens: 100,
        tools,
        messages: [
          { role: 'user', content: 'find cats' },
          { role: 'assistant', content: (first as { content: unknown }).content },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '3 cats' }] },
        ],
      })
    ).json();
    expect(second).toMatchObject({ stop_reason: 'end_turn', content: [{ type: 'text', text: 'Mock reply using the tool result: 3 cats' }] });
  });

  it('when chat completions asks the mock for a json_schema, the content validates against it', async () => {
    const schema = { type: 'object', properties: { title: { type: 'string' }, year: { type: 'integer' } }, required: ['title', 'year'] };
    const res = await (
      await post('/v1/chat/completions', key, {
        model: 'mock/gpt-4o-mini',
        messages: [{ role: 'user', content: 'a film' }],
        response_format: { type: 'json_schema', json_schema: { name: 'film', schema } },
      })
    ).json();
    expect(JSON.parse((res as { choices: { message: { content: string } }[] }).choices[0]!.message.content)).toEqual({ title: 'a film', year: 1 });
  });

  it('when count_tokens is called, it answers an estimate without billing anything', async () => {
    await s.h.settled();
    const before = (await s.h.scan('usage')).length;
    const res = await post('/v1/messages/count_tokens', key, { model: 'claude-sonnet-4-6', messages: [{ role: 'user', content: 'abcdef' }] }, { 'anthropic-version': '2023-06-01' });
    expect(await res.json()).toEqual({ input_tokens: expect.any(Number) });
    await s.h.settled();
    expect((await s.h.scan('usage')).length).toBe(before);
  });
});
