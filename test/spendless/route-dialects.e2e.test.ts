/**
 * Fallback across dialects: a routing chain whose fallback cannot answer in the caller's dialect is refused when
 * the gateway starts (the real composition, the real providers' surfaces), with a message naming the rule, the
 * surface and the model; a chain limited with `endpoints` to the surfaces every model serves starts and falls
 * back over real HTTP (fetch and the Anthropic SDK → the local gateway → the fake upstream; DynamoDB Local).
 */
import Anthropic from '@anthropic-ai/sdk';
import { createGateway } from '../../lambda/compose';
import { ConfigError } from '../../lambda/config';
import { ManualClock } from '../../lambda/core/clock';
import { checkRouteDialects, parseRoutingRules } from '../../lambda/core/routing/rules';
import { type Harness, startHarness, TEST_PEPPER } from '../support/gateway-harness';

jest.setTimeout(90_000);

const T0 = Date.UTC(2031, 5, 10, 10, 30, 0);
const CLAUDE_FIRST = { name: 'claude-first', alias: 'tollgate/claude-first', models: ['anthropic/claude-sonnet-4-5', 'openai/gpt-4o'] };
const ROUTES = {
  rules: [
    // The same chain, limited to the surfaces both models answer: it starts.
    { ...CLAUDE_FIRST, endpoints: ['/v1/chat/completions', '/v1/responses'] },
    // Two Claude models: every surface, /v1/messages included.
    { name: 'claude-pair', alias: 'tollgate/claude-pair', models: ['anthropic/claude-sonnet-4-5', 'anthropic/claude-haiku-4-5'] },
  ],
};

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ clock: new ManualClock(T0), env: { TOLLGATE_ROUTES: JSON.stringify(ROUTES) } });
});
afterAll(async () => {
  await h.close();
});
beforeEach(() => h.upstream.reset());

/** The gateway composed again on the harness's tables, with other routes. */
function composeWith(routes: unknown): void {
  createGateway({
    config: { ...h.config, routing: parseRoutingRules(JSON.stringify(routes)) },
    secrets: { keyPepper: TEST_PEPPER, openaiApiKey: 'sk-x', anthropicApiKey: 'sk-ant-x', jwtSecret: `test:${'j'.repeat(40)}` },
    dynamodb: h.tables.client,
  });
}

describe('fallback chains across dialects', () => {
  it('a chain whose fallback cannot answer /v1/messages is refused at start, naming the rule, the surface and the model', () => {
    let err: unknown;
    try {
      composeWith({ rules: [CLAUDE_FIRST] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe(
      'TOLLGATE_ROUTES: routing: a fallback must answer in the caller\'s dialect; rule "claude-first" takes /v1/messages requests ' +
        '(anthropic/claude-sonnet-4-5 serves them), but openai/gpt-4o cannot answer /v1/messages. Use models that serve that surface, ' +
        'or limit the rule with "endpoints" (e.g. ["/v1/chat/completions", "/v1/responses"]).',
    );
  });

  it('a downgrade model is checked like a fallback, and the endpoints a rule names are checked for every model', () => {
    expect(() =>
      composeWith({
        rules: [{ name: 'sonnet', alias: 'tollgate/sonnet', models: ['anthropic/claude-sonnet-4-5'], downgrade: { atPercent: 80, model: 'openai/gpt-4o-mini' } }],
      }),
    ).toThrow(/rule "sonnet" takes \/v1\/messages requests .* openai\/gpt-4o-mini cannot answer \/v1\/messages/);
    expect(() => composeWith({ rules: [{ name: 'pinned', alias: 'tollgate/pinned', endpoints: ['/v1/messages'], models: ['openai/gpt-4o'] }] })).toThrow(
      /rule "pinned" takes \/v1\/messages requests \(its endpoints\), but openai\/gpt-4o cannot answer/,
    );
  });

  it('chains every model of which answers the surfaces their first model serves start (OpenAI first, Claude behind)', () => {
    expect(() =>
      composeWith({ rules: [{ name: 'gpt-first', alias: 'tollgate/gpt-first', models: ['openai/gpt-4o', 'anthropic/claude-sonnet-4-5'] }, ...ROUTES.rules] }),
    ).not.toThrow();
  });

  it('the check asks the same question a request meets: which surfaces each provider answers here', () => {
    const serves = (m: string, e: string) => h.gateway.app.serves(m, e);
    expect(serves('anthropic/claude-sonnet-4-5', '/v1/messages')).toBe(true);
    expect(serves('openai/gpt-4o', '/v1/messages')).toBe(false);
    expect(serves('openai/gpt-4o', '/v1/responses')).toBe(true);
    expect(serves('anthropic/claude-sonnet-4-5', '/v1/responses')).toBe(true);
    expect(serves('no-such/model-x', '/v1/messages')).toBeUndefined();
    // An unknown model is refused on its own, per request; the start check leaves it be.
    expect(() => checkRouteDialects(parseRoutingRules(JSON.stringify({ rules: [{ name: 'u', alias: 'x/u', models: ['anthropic/claude-sonnet-4-5', 'no-such/model-x'] }] })), serves)).not.toThrow();
  });

  it('a chain limited to chat and Responses falls back from Claude (503) to GPT-4o on /v1/chat/completions', async () => {
    const { raw } = await h.createKey({ userId: 'dialect-chat' });
    h.upstream.scriptEach((body) => (String(body.model).startsWith('claude') ? { status: 503 } : { replyText: 'GPT took over.' }));
    const res = await fetch(`${h.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tollgate/claude-first', messages: [{ role: 'user', content: 'Where is my order?' }] }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-tollgate-model')).toBe('openai/gpt-4o');
    expect(res.headers.get('x-tollgate-fallback')).toMatch(/^fallback; from=anthropic\/claude-sonnet-4-5; to=openai\/gpt-4o; reason=upstream_50\d$/);
  });

  it('a /v1/messages caller of two Claude models gets the fallback in its own dialect (Anthropic SDK)', async () => {
    const { raw } = await h.createKey({ userId: 'dialect-messages' });
    h.upstream.scriptEach((body) => (String(body.model).startsWith('claude-sonnet') ? { status: 503 } : { replyText: 'Haiku took over.' }));
    const client = new Anthropic({ apiKey: raw, baseURL: h.url, maxRetries: 0 });
    const msg = await client.messages.create({ model: 'tollgate/claude-pair', max_tokens: 100, messages: [{ role: 'user', content: 'Where is my order?' }] });
    expect(msg.content[0]).toMatchObject({ type: 'text', text: 'Haiku took over.' });
  });
});

describe('rule endpoints', () => {
  it('parses and checks "endpoints"', () => {
    expect(parseRoutingRules(JSON.stringify({ rules: [{ alias: 'a/b', endpoints: ['/v1/messages'], models: ['anthropic/claude-sonnet-4-5'] }] })).rules[0]!.endpoints).toEqual([
      '/v1/messages',
    ]);
    expect(() => parseRoutingRules(JSON.stringify({ rules: [{ alias: 'a/b', endpoints: ['/v1/chat'], models: ['openai/gpt-4o'] }] }))).toThrow(
      /rules\[0\]\.endpoints must be a non-empty list of \/v1\/chat\/completions/,
    );
    expect(() => parseRoutingRules(JSON.stringify({ rules: [{ alias: 'a/b', endpoints: [], models: ['openai/gpt-4o'] }] }))).toThrow(/endpoints/);
  });

  it('a rule limited to some surfaces does not take a request to another one', async () => {
    const { raw } = await h.createKey({ userId: 'dialect-unmatched' });
    const res = await fetch(`${h.url}/v1/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'tollgate/claude-first', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] }),
    });
    // No rule takes it, so the alias is just an unknown model: refused before anything is reserved or forwarded.
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(((await res.json()) as { type: string }).type).toBe('error');
    expect(h.upstream.requests).toHaveLength(0);
  });
});
