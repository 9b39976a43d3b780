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

describe('request collapsing (response cache on)', () => {
  async function usageOf(keyIds: readonly string[]): Promise<Record<string, unknown>[]> {
    await h.settled();
    return (await h.scan('usage')).filter((r) => keyIds.includes(String(r.keyId)));
  }

  it.each([false, true])('8 users of one org ask the same at once (stream: %s): one upstream call, the first pays, the 7 others get its answer as a hit at $0', async (stream) => {
    const keys = await Promise.all(Array.from({ length: 8 }, (_, i) => h.createKey({ userId: `collapse-${stream}-${i}`, orgId: `collapse-org-${stream}`, responseCache: true })));
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    h.upstream.script({ replyText: 'Our refund policy is 30 days.', usage: { inputTokens: 1000, outputTokens: 100 }, until: held });
    const body = JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 200, stream, messages: [{ role: 'user', content: 'What is the refund policy?' }] });
    const pending = keys.map((k) =>
      fetch(`${h.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${k.raw}`, 'content-type': 'application/json' }, body }).then(async (r) => ({
        status: r.status,
        cache: r.headers.get('x-tollgate-cache'),
        cost: r.headers.get('x-tollgate-cost-usd'),
        text: await r.text(),
      })),
    );
    // Wait for the one call at the provider, then let it answer: the others are waiting for it, not calling.
    while (h.upstream.requests.length < 1) await new Promise((r) => setTimeout(r, 10));
    release();
    const results = await Promise.all(pending);
    expect(h.upstream.requests).toHaveLength(1);
    expect(results.every((r) => r.status === 200 && r.text.includes('refund'))).toBe(true);
    expect(results.filter((r) => r.cache === 'miss')).toHaveLength(1);
    const hits = results.filter((r) => r.cache === 'hit');
    expect(hits).toHaveLength(7);
    expect(hits.every((r) => r.cost === '0.000000')).toBe(true);
    // One usage record, the leader's, at the provider's usage (gpt-4o-mini: $0.15 / $0.60 per million).
    const records = await usageOf(keys.map((k) => k.keyId));
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ outcome: 'ok', costMicros: 150 + 60 });
  });

  it('when the leader fails, the waiting copies go on by themselves (the failure is not shared)', async () => {
    const keys = await Promise.all(Array.from({ length: 3 }, (_, i) => h.createKey({ userId: `collapse-fail-${i}`, orgId: 'collapse-fail-org', responseCache: true })));
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let calls = 0;
    h.upstream.scriptEach(() => (++calls === 1 ? { status: 500, until: held } : { replyText: 'Second try worked.' }));
    const body = JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 200, messages: [{ role: 'user', content: 'Is the API up?' }] });
    const pending = keys.map((k) =>
      fetch(`${h.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${k.raw}`, 'content-type': 'application/json' }, body }).then((r) => r.status),
    );
    while (h.upstream.requests.length < 1) await new Promise((r) => setTimeout(r, 10));
    release();
    const statuses = await Promise.all(pending);
    expect(statuses.filter((s) => s === 502)).toHaveLength(1);
    expect(statuses.filter((s) => s === 200)).toHaveLength(2);
    // The first follower to go on claims the key in turn; the other gets its answer: 2 upstream calls in all.
    expect(h.upstream.requests).toHaveLength(2);
  });
});
