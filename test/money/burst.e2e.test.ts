/**
 * Bursts over real HTTP (issue 11): 500 concurrent requests on one key racing a budget that fits 20 get
 * only 200s and 429s (admission sheds load before the store times out), at most 20 reach the upstream, and
 * the counters equal the sum of the usage records.
 */
import { maxCostOf } from '../../lambda/core/pricing';
import { systemClock } from '../../lambda/core/clock';
import { estimateChatInputTokens } from '../../lambda/core/tokens';
import { type Harness, startHarness } from '../support/gateway-harness';

const BURST = 500;
const FITS = 20;
const MAX_TOKENS = 50;

let h: Harness;

beforeAll(async () => {
  // The auth cache on, as in production: a burst on one key reads the key once per few seconds.
  h = await startHarness({ env: { TOLLGATE_AUTH_CACHE_MS: '5000' } });
});
afterAll(() => h.close());

interface Answer {
  readonly status: number;
  readonly code?: string;
  readonly retryAfter: string | null;
  readonly shouldRetry: string | null;
}

async function fire(key: string, body: unknown): Promise<Answer> {
  const res = await fetch(`${h.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as { error?: { code?: string } };
  return {
    status: res.status,
    ...(json.error?.code ? { code: json.error.code } : {}),
    retryAfter: res.headers.get('retry-after'),
    shouldRetry: res.headers.get('x-should-retry'),
  };
}

it(`when ${BURST} concurrent requests on one key race a budget that fits ${FITS}, they get only 200s and 429s and at most ${FITS} reach the upstream`, async () => {
  const { raw, keyId } = await h.createKey({ userId: 'burst' });
  // Distinct bodies of one length: one reservation each, and nothing for the loop guard to count.
  const body = (i: number) => ({ model: 'gpt-4o', max_tokens: MAX_TOKENS, messages: [{ role: 'user', content: `burst ${String(i).padStart(4, '0')}` }] });
  // No usage from the upstream: every admitted request is charged exactly its reservation, so the budget
  // fits exactly FITS of them however the settles interleave with the burst.
  h.upstream.script({ omitUsage: true, delayMs: 20 });
  const reservation = maxCostOf(h.gateway.prices.resolve('gpt-4o').price, {
    inputTokens: estimateChatInputTokens(body(0)),
    maxOutputTokens: MAX_TOKENS,
  });
  const limit = FITS * reservation;
  await h.gateway.ledger.setLimit(`key:${keyId}`, 'day', limit);

  const answers = await Promise.all(Array.from({ length: BURST }, (_, i) => fire(raw, body(i))));
  await h.settled();

  const statuses = new Set(answers.map((a) => a.status));
  expect([...statuses].filter((s) => s !== 200 && s !== 429)).toEqual([]);
  const ok = answers.filter((a) => a.status === 200).length;
  expect(ok).toBeGreaterThanOrEqual(1);
  expect(ok).toBeLessThanOrEqual(FITS);
  expect(h.upstream.requests.length).toBe(ok);
  // Shed requests say that retrying helps.
  for (const a of answers.filter((x) => x.code === 'gateway_busy')) {
    expect(a.retryAfter).toBe('1');
    expect(a.shouldRetry).toBe('true');
  }

  const records = (await h.scan('usage')).filter((u) => u.keyId === keyId);
  const recorded = records.reduce((sum, r) => sum + Number(r.costMicros), 0);
  expect(records).toHaveLength(ok);
  const [day] = await h.gateway.pipeline.readCounters(
    h.gateway.pipeline.countersFor([`key:${keyId}`], new Map(), systemClock.now(), 'r').filter((c) => c.window === 'day'),
  );
  expect(day).toMatchObject({ spent: recorded, committed: recorded, reserved: 0, requests: ok });
  expect(day?.committed).toBeLessThanOrEqual(limit);
  expect(await h.holds()).toEqual([]);
});
