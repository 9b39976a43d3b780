/**
 * BYOK on a gateway that has no platform key for a provider: the provider is still offered, but only to
 * callers who stored their own key; everyone else gets a 400 that says how, before anything is reserved.
 */
import { LocalDataKeyProvider } from '../../lambda/core/byok/crypto';
import { ManualClock } from '../../lambda/core/clock';
import { type Harness, startHarness } from '../support/gateway-harness';
import { TEST_NOW } from '../support/clock';

const OWN_KEY = 'sk-carol-own-openai-key-424242';
let h: Harness;

beforeAll(async () => {
  h = await startHarness({
    clock: new ManualClock(TEST_NOW),
    secrets: { openaiApiKey: undefined, anthropicApiKey: undefined },
    gateway: { byokDataKeys: new LocalDataKeyProvider(LocalDataKeyProvider.generateMasterKey()) },
  });
});
afterAll(() => h.close());

async function call(method: string, path: string, key: string, body?: unknown) {
  const res = await fetch(`${h.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

const chat = (key: string) =>
  call('POST', '/v1/chat/completions', key, { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 20 });

describe('BYOK without a platform key', () => {
  it('when a caller without a stored key uses the provider, it gets 400 naming the way out and nothing is reserved', async () => {
    const { raw } = await h.createKey({ userId: 'dave', scopes: ['ai:complete', 'ai:byok'] });
    const res = await chat(raw);
    expect(res.status).toBe(400);
    expect(res.json.error).toMatchObject({ code: 'provider_key_required' });
    expect(String((res.json.error as { message: string }).message)).toContain('PUT /v1/byok/openai');
    await h.settled();
    expect(await h.scan('usage')).toHaveLength(0);
    expect(h.upstream.requests).toHaveLength(0);
  });

  it('when a caller stored its own key, the provider is reached with that key and the spend is byok', async () => {
    const { raw } = await h.createKey({ userId: 'carol', scopes: ['ai:complete', 'ai:byok'] });
    expect((await call('PUT', '/v1/byok/openai', raw, { apiKey: OWN_KEY })).status).toBe(200);
    h.upstream.reset();
    const res = await chat(raw);
    expect(res.status).toBe(200);
    expect(h.upstream.requests.find((r) => r.path === '/v1/chat/completions')!.headers.authorization).toBe(`Bearer ${OWN_KEY}`);
    await h.settled();
    const [record] = (await h.scan('usage')).filter((r) => r.userId === 'carol');
    expect(record).toMatchObject({ byok: true, outcome: 'ok' });
  });

  it('when models are listed, the BYOK-only provider is offered', async () => {
    const { raw } = await h.createKey({ userId: 'erin' });
    const res = await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${raw}` } });
    const ids = ((await res.json()) as { data: { id: string }[] }).data.map((m) => m.id);
    expect(ids).toContain('openai/gpt-4o-mini');
  });
});
