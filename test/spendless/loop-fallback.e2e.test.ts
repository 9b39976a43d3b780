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
