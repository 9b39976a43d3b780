/**
 * The loop guard counts what the caller experienced: a request a fallback answered is a success, not a failure
 * of the caller's loop. The OpenAI SDK → the local gateway (loop guard on, its defaults) → the fake upstream,
 * (failure streak at its default 3) with gpt-4o answering 503 and claude-sonnet healthy behind it; DynamoDB Local underneath.
 */
import OpenAI from 'openai';
import { ManualClock } from '../../lambda/core/clock';
import { type Harness, startHarness } from '../support/gateway-harness';

jest.setTimeout(120_000);

const T0 = Date.UTC(2031, 5, 10, 10, 30, 0);
const ROUTES = { rules: [{ name: 'resilient', alias: 'tollgate/resilient', models: ['openai/gpt-4o', 'anthropic/claude-sonnet-4-5'] }] };
let h: Harness;
beforeAll(async () => {
  // The repeat bound (identical copies per window, default 5) is raised past 8: this test is about the failure
  // streak (default 3 in a row), which used to refuse requests 4-8 although the fallback served them.
  h = await startHarness({ clock: new ManualClock(T0), env: { TOLLGATE_ROUTES: JSON.stringify(ROUTES), TOLLGATE_LOOP_MAX_REPEATS: '20' } });
});
afterAll(async () => {
  await h.close();
});

it('8 identical requests whose primary answers 503 are all served by the fallback; none is refused as a loop', async () => {
  const { raw } = await h.createKey({ userId: 'loop-fallback' });
  h.upstream.scriptEach((body) => (String(body.model).startsWith('gpt-4o') ? { status: 503, errorMessage: 'overloaded' } : { replyText: 'Sonnet answered.' }));
  const client = new OpenAI({ apiKey: raw, baseURL: h.baseURL, maxRetries: 0 });
  const served: string[] = [];
  for (let i = 0; i < 8; i++) {
    const res = await client.chat.completions.create({ model: 'tollgate/resilient', max_tokens: 500, messages: [{ role: 'user', content: 'Summarise ticket 42.' }] }).withResponse();
    expect(res.response.headers.get('x-tollgate-model')).toBe('anthropic/claude-sonnet-4-5');
    served.push(res.data.choices[0]!.message.content ?? '');
    await h.settled();
  }
  expect(served).toEqual(Array(8).fill('Sonnet answered.'));
  // Every request tried the primary first and then the fallback: 16 upstream calls.
  expect(h.upstream.requests).toHaveLength(16);
});

describe('when every model of the chain fails, the loop refusal says what failed', () => {
  it.each([
    { dialect: 'openai', path: '/v1/chat/completions', headers: {} as Record<string, string>, body: { model: 'tollgate/resilient', max_tokens: 500, messages: [{ role: 'user', content: 'Summarise ticket 77.' }] } },
    {
      dialect: 'anthropic',
      path: '/v1/messages',
      headers: { 'anthropic-version': '2023-06-01' } as Record<string, string>,
      body: { model: 'tollgate/resilient', max_tokens: 500, messages: [{ role: 'user', content: 'Summarise ticket 78.' }] },
    },
  ])('$path: gpt-4o 503 and claude-sonnet-4-5 529 three times, then a 429 naming both, x-should-retry false', async ({ dialect, path, headers, body }) => {
    const { raw } = await h.createKey({ userId: `loop-chain-${dialect}` });
    h.upstream.scriptEach((b) =>
      String(b.model).startsWith('gpt-4o') ? { status: 503, errorMessage: 'Service Unavailable' } : { status: 529, errorMessage: 'Overloaded' },
    );
    const post = () =>
      fetch(`${h.url}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
      });
    for (let i = 0; i < 3; i++) {
      const failed = await post();
      expect(failed.status).toBe(502);
      expect(failed.headers.get('x-tollgate-fallback')).toBe('fallback; from=openai/gpt-4o; to=anthropic/claude-sonnet-4-5; reason=upstream_502');
      await failed.text();
      await h.settled();
    }
    const refused = await post();
    expect(refused.status).toBe(429);
    expect(refused.headers.get('x-should-retry')).toBe('false');
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    const json = (await refused.json()) as { type?: string; error: { type: string; code?: string; message: string } };
    if (dialect === 'anthropic') expect(json).toMatchObject({ type: 'error', error: { type: 'rate_limit_error' } });
    // OpenAI dialect: a 429 no retry can help is typed usage_limit_reached (Codex then prints the sentence; http/dialects.ts).
    else expect(json.error).toMatchObject({ type: 'usage_limit_reached', code: 'loop_detected' });
    expect(json.error.message).toContain('openai/gpt-4o answered 503 and anthropic/claude-sonnet-4-5 answered 529 on the last 3 attempts');
    expect(json.error.message).toContain('route resilient');
    await h.settled();
  });
});
