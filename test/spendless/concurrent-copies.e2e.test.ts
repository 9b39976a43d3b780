/**
 * Identical requests at once, over real HTTP (fetch → the local gateway → the fake upstream, which holds every
 * call it receives until the test releases them, however slow the machine; DynamoDB Local underneath):
 * - the loop guard counts copies in flight (each is presumed failed until it is answered), so N identical
 *   requests at once cannot all pass: at most min(maxRepeats, maxFailures) = 3 with the defaults reach the
 *   provider, and the others are refused for what they are (copies in flight), not as upstream failures;
 * - with the response cache on, identical requests of one tenant at once are collapsed onto one upstream call:
 *   the first pays, the others get its answer as a cache hit at $0.
 */
import { ManualClock } from '../../lambda/core/clock';
import { type Harness, startHarness } from '../support/gateway-harness';

jest.setTimeout(120_000);

const T0 = Date.UTC(2031, 5, 10, 10, 30, 0);
let h: Harness;
beforeAll(async () => {
  h = await startHarness({ clock: new ManualClock(T0) });
});
afterAll(async () => {
  await h.close();
});
beforeEach(() => h.upstream.reset());

function ask(raw: string, content: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${h.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 200, messages: [{ role: 'user', content }] }),
  });
}

describe('identical copies in flight (loop guard)', () => {
  it('10 copies at once from one user: 3 reach the provider, 7 are refused as copies in flight (not as failures), and all pass once answered', async () => {
    const { raw } = await h.createKey({ userId: 'burst-user' });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    h.upstream.script({ replyText: 'Answered.', until: held });
    const answered: (Response | undefined)[] = Array(10).fill(undefined);
    const pending = Array.from({ length: 10 }, (_, i) => ask(raw, 'What is the status of order 7?').then((r) => (answered[i] = r)));
    // Each copy is decided (refused, or held at the provider) before any is answered: wait for all ten decisions.
    const refused = () => answered.filter((r) => r?.status === 429);
    try {
      while (refused().length + h.upstream.requests.length < 10) await new Promise((r) => setTimeout(r, 10));
    } finally {
      setTimeout(release, 60_000).unref();
    }
    const refusals = refused() as Response[];
    expect(h.upstream.requests).toHaveLength(3);
    expect(refusals).toHaveLength(7);
    for (const r of refusals) {
      const body = (await r.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('loop_detected');
      expect(body.error.message).toMatch(/3 identical copies of this request are in flight/);
      expect(body.error.message).not.toMatch(/failed upstream/);
      // Retrying helps once a copy is answered.
      expect(r.headers.get('x-should-retry')).toBe('true');
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    }
    release();
    const all = await Promise.all(pending);
    expect(all.filter((r) => r.status === 200)).toHaveLength(3);
    await h.settled();
    // Answered: the streak is clear; the same request passes again (4th copy of the 5 per window).
    h.upstream.script({ replyText: 'Answered again.' });
    expect((await ask(raw, 'What is the status of order 7?')).status).toBe(200);
  });

  it('a real failure streak is still named as one', async () => {
    const { raw } = await h.createKey({ userId: 'streak-user' });
    h.upstream.script({ status: 503, errorMessage: 'overloaded' });
    for (let i = 0; i < 3; i++) {
      expect((await ask(raw, 'Classify ticket 9.')).status).toBe(502);
      await h.settled();
    }
    const refused = await ask(raw, 'Classify ticket 9.');
    expect(refused.status).toBe(429);
    const body = (await refused.json()) as { error: { message: string } };
    expect(body.error.message).toMatch(/failed upstream 3 times in a row/);
    expect(refused.headers.get('x-should-retry')).toBe('false');
  });
});
