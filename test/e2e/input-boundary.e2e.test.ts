/**
 * The input boundary over real HTTP, case by case: each input that used to crash the gateway (500) or was
 * blamed on the upstream (502) now gets a 4xx in the caller's dialect before anything is reserved, reaches no
 * upstream and changes no table. Limits are the documented defaults and move with their settings.
 */
import { InMemoryRunQueue } from '../../lambda/core/agent/queue';
import { LocalDataKeyProvider } from '../../lambda/core/byok/crypto';
import { type Harness, startHarness } from '../support/gateway-harness';

jest.setTimeout(120_000);

const ADMIN_TOKEN = `tga-boundary-${'b'.repeat(32)}`;
let h: Harness;
let key: string;
beforeAll(async () => {
  h = await startHarness({
    env: { TOLLGATE_ADMIN_AUTH: 'local-token' },
    gateway: { adminToken: ADMIN_TOKEN, byokDataKeys: new LocalDataKeyProvider(LocalDataKeyProvider.generateMasterKey()), runQueue: new InMemoryRunQueue() },
  });
  key = (await h.createKey({ userId: 'edge', scopes: ['ai:complete', 'ai:embed', 'ai:byok', 'ai:agent'], rpm: 100_000 })).raw;
});
afterAll(async () => {
  await h?.close();
});
beforeEach(() => h.upstream.reset());

async function snapshot(): Promise<string> {
  await h.settled();
  const tables = ['usage', 'budgets', 'keys', 'byok', 'runs'] as const;
  const items = await Promise.all(tables.map((t) => h.scan(t)));
  return JSON.stringify(items.map((list) => list.map((i) => JSON.stringify(i, Object.keys(i).sort())).sort()));
}

const chat = (extra: Record<string, unknown> = {}) => JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], ...extra });
const messages = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }], ...extra });
const nested = (depth: number) => `${'['.repeat(depth)}1${']'.repeat(depth)}`;

type Case = [name: string, method: string, path: string, body: string | Buffer | undefined, headers: () => Record<string, string>, status: number, code: string | null];
const auth = () => ({ authorization: `Bearer ${key}`, 'content-type': 'application/json' });
const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

const cases: () => Case[] = () => [
  ['a malformed %-escape in an admin key id, without credentials', 'GET', '/admin/keys/%E0%A4%A', undefined, () => ({}), 400, 'invalid_path'],
  ['a malformed %-escape in an admin key id, with the admin token', 'POST', '/admin/keys/%ff/suspend', undefined, () => admin, 400, 'invalid_path'],
  ['a lone % as an agent run id', 'GET', '/v1/agent/runs/%', undefined, auth, 400, 'invalid_path'],
  ['%ff as a BYOK provider', 'GET', '/v1/byok/%ff', undefined, auth, 400, 'invalid_path'],
  ['a malformed %-escape in a budget scope', 'PUT', '/admin/budgets/user:%ff/day', '{"limitUsd":"1"}', () => admin, 400, 'invalid_path'],
  ['a 300-character path parameter', 'GET', `/v1/agent/runs/run_${'a'.repeat(300)}`, undefined, auth, 400, 'invalid_path'],
  ['JSON nested 5,000 levels deep', 'POST', '/v1/chat/completions', chat({ x: JSON.parse(nested(1)) }).replace('[1]', nested(5000)), auth, 400, 'json_too_deep'],
  ['JSON nested 65 levels deep (one past the default limit)', 'POST', '/v1/chat/completions', chat({ x: JSON.parse(nested(64)) as unknown }), auth, 400, 'json_too_deep'],
  ['max_tokens of 1e15 on chat', 'POST', '/v1/chat/completions', chat({ max_tokens: 1e15 }), auth, 400, 'invalid_value'],
  ['max_tokens of 2^53-1 on chat', 'POST', '/v1/chat/completions', chat({ max_tokens: 2 ** 53 - 1 }), auth, 400, 'invalid_value'],
  ['max_completion_tokens over the limit on chat', 'POST', '/v1/chat/completions', chat({ max_completion_tokens: 262_145 }), auth, 400, 'invalid_value'],
  ['a body that is not UTF-8', 'POST', '/v1/chat/completions', Buffer.concat([Buffer.from('{"model":"gpt-4o'), Buffer.from([0xff]), Buffer.from('"}')]), auth, 400, 'invalid_json'],
  ['a multipart content type', 'POST', '/v1/chat/completions', chat(), () => ({ ...auth(), 'content-type': 'multipart/form-data; boundary=x' }), 415, 'unsupported_media_type'],
  ['a UTF-16 charset', 'POST', '/v1/chat/completions', chat(), () => ({ ...auth(), 'content-type': 'application/json; charset=utf-16' }), 415, 'unsupported_media_type'],
  ['top_p out of range', 'POST', '/v1/chat/completions', chat({ top_p: 1.5 }), auth, 400, 'invalid_value'],
  ['a huge embeddings dimensions', 'POST', '/v1/embeddings', JSON.stringify({ model: 'text-embedding-3-small', input: 'x', dimensions: 1e15 }), auth, 400, 'invalid_value'],
  ['a BYOK key with non-ASCII characters', 'PUT', '/v1/byok/openai', JSON.stringify({ apiKey: 'sk-ééééééééééééé' }), auth, 400, 'invalid_byok_key'],
  ['a BYOK key with a control character', 'PUT', '/v1/byok/openai', JSON.stringify({ apiKey: 'sk-abc\u0001defghijk' }), auth, 400, 'invalid_byok_key'],
  ['an admin rate limit of 1e300', 'POST', '/admin/keys', JSON.stringify({ userId: 'u', rpm: 1e300 }), () => ({ ...admin, 'content-type': 'application/json' }), 400, null],
  ['a doubled leading slash (not read as a host)', 'POST', '//v1/chat/completions', chat(), auth, 404, 'unknown_url'],
];

describe('the input boundary', () => {
  it.each(cases().map((c) => [c[0], c] as const))('when a request has %s, it gets a 4xx in the OpenAI dialect and nothing changes', async (_name, c) => {
    const [, method, path, body, headersOf, status, code] = c;
    const headers = headersOf();
    const before = await snapshot();
    const res = await fetch(`${h.url}${path}`, { method, headers, ...(body === undefined ? {} : { body: typeof body === 'string' ? body : new Uint8Array(body) }) });
    const json = (await res.json()) as { error: { code: string | null; type: string; message: string } };
    expect({ status: res.status, code: json.error.code }).toEqual({ status, code });
    expect(json.error.type).toBe('invalid_request_error');
    expect(h.upstream.requests).toHaveLength(0);
    expect(await snapshot()).toBe(before);
  });

  it.each([
    ['max_tokens of 1e15', messages({ max_tokens: 1e15 }), {}],
    ['max_tokens of 2^53-1', messages({ max_tokens: 2 ** 53 - 1 }), {}],
    ['JSON nested 5,000 levels deep', messages({ metadata: { x: 0 } }).replace('0', nested(5000)), {}],
    ['an anthropic-version header with non-ASCII bytes', messages(), { 'anthropic-version': '2023-06-01\u00e9' }],
    ['an anthropic-beta header of 5,000 characters', messages(), { 'anthropic-beta': 'b'.repeat(5000) }],
  ] as const)('when /v1/messages gets %s, it gets a 400 in the Anthropic dialect and nothing changes', async (_name, body, extra) => {
    const before = await snapshot();
    const res = await fetch(`${h.url}/v1/messages`, { method: 'POST', headers: { ...auth(), ...extra }, body });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
    expect(h.upstream.requests).toHaveLength(0);
    expect(await snapshot()).toBe(before);
  });

  it('when a body nests exactly at the limit and max_tokens is at the limit, the request is served', async () => {
    const res = await fetch(`${h.url}/v1/chat/completions`, {
      method: 'POST',
      headers: auth(),
      // The body object is level 1, so 62 more arrays inside "x" make 64 with the value's own object.
      body: JSON.stringify({ model: 'mock/gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 262_144, metadata: { x: JSON.parse(nested(62)) as unknown } }),
    });
    expect(res.status).toBe(200);
  });
});

describe('the limits follow their settings', () => {
  let tight: Harness;
  let tightKey: string;
  beforeAll(async () => {
    tight = await startHarness({ env: { TOLLGATE_MAX_JSON_DEPTH: '8', TOLLGATE_MAX_OUTPUT_TOKENS: '1000' } });
    tightKey = (await tight.createKey({ userId: 'tight' })).raw;
  });
  afterAll(async () => {
    await tight?.close();
  });
  const send = (body: unknown) =>
    fetch(`${tight.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${tightKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it('when TOLLGATE_MAX_JSON_DEPTH is 8, a body nested 9 deep gets 400 json_too_deep and one nested 8 deep is served', async () => {
    const deep = await send({ model: 'mock/gpt-4o', messages: [{ role: 'user', content: 'hi' }], x: JSON.parse(nested(8)) as unknown });
    expect(deep.status).toBe(400);
    expect(((await deep.json()) as { error: { code: string } }).error.code).toBe('json_too_deep');
    const ok = await send({ model: 'mock/gpt-4o', messages: [{ role: 'user', content: 'hi' }], x: JSON.parse(nested(7)) as unknown });
    expect(ok.status).toBe(200);
  });

  it('when TOLLGATE_MAX_OUTPUT_TOKENS is 1000, max_tokens 1001 gets 400 naming the limit and 1000 is served', async () => {
    const over = await send({ model: 'mock/gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1001 });
    expect(over.status).toBe(400);
    expect(((await over.json()) as { error: { message: string; param: string } }).error).toMatchObject({ param: 'max_tokens', message: expect.stringContaining('1000') });
    expect((await send({ model: 'mock/gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1000 })).status).toBe(200);
  });
});
