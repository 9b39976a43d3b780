/**
 * Budget leases end to end: the OpenAI SDK (unchanged) → the local gateway (real HTTP) → the fake upstream, on
 * DynamoDB Local, with default settings but for a lower busy threshold. A busy key's requests are admitted
 * against leases; each caller still gets its cost, every request its usage record, the loop guard counts every
 * copy, and once the leases are returned the counters hold exactly what the usage records say.
 */
import OpenAI from 'openai';
import { type Harness, startHarness } from '../support/gateway-harness';
import { TEST_NOW } from '../support/clock';
import { ManualClock } from '../../lambda/core/clock';
import { usdToMicros } from '../../lambda/core/money';

const clock = new ManualClock(TEST_NOW);
let h: Harness;

beforeAll(async () => {
  h = await startHarness({ clock, env: { TOLLGATE_LEASE_MIN_BUSY: '2' } });
});
afterAll(() => h.close());
beforeEach(() => {
  h.upstream.reset();
  clock.advance(60 * 60_000);
});

async function leaseHolds(): Promise<Array<Record<string, unknown>>> {
  return (await h.holds()).filter((hold) => String(hold.requestId).startsWith('lease-'));
}

describe('budget leases through the gateway', () => {
  it('when one key sends many requests, they are admitted against leases and, once returned, the counters equal the recorded usage exactly', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'lease-user' });
    const client = new OpenAI({ apiKey: raw, baseURL: h.baseURL, maxRetries: 0 });
    let charged = 0;
    for (let i = 0; i < 24; i++) {
      const { data, response } = await client.chat.completions
        .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `Summarise ticket #${i}.` }], max_tokens: 50 })
        .withResponse();
      expect(data.choices[0]?.message.content).toBeTruthy();
      charged += usdToMicros(response.headers.get('x-tollgate-cost-usd') ?? 'missing');
      clock.advance(50);
    }
    await h.settled();
    // A live lease holds its slice: the counter shows more committed than spent.
    expect((await leaseHolds()).length).toBeGreaterThan(0);
    const refs = [{ scope: 'user:lease-user' as const, window: 'day' as const, windowKey: `day#${new Date(clock.now()).toISOString().slice(0, 10)}`, windowEnd: 0 }];
    const [live] = await h.gateway.ledger.readCounters(refs);
    expect(live!.committed).toBeGreaterThan(live!.spent);

    await h.gateway.leases!.close();
    expect(await leaseHolds()).toEqual([]);
    const records = (await h.scan('usage')).filter((r) => r.keyId === keyId);
    expect(records).toHaveLength(24);
    const recorded = records.reduce((a, r) => a + (r.costMicros as number), 0);
    expect(recorded).toBe(charged);
    const [after] = await h.gateway.ledger.readCounters(refs);
    expect(after).toMatchObject({ spent: recorded, committed: recorded, reserved: 0, requests: 24 });
    expect(recorded).toBeGreaterThan(0);
  });

  it('when a leased key repeats one body, the loop guard refuses the copy past its limit exactly as without leases', async () => {
    const { raw } = await h.createKey({ userId: 'lease-looper' });
    const client = new OpenAI({ apiKey: raw, baseURL: h.baseURL, maxRetries: 0 });
    // Busy first (distinct bodies), so the copies below are admitted against a lease.
    for (let i = 0; i < 4; i++) {
      await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `warm-up ${i}` }], max_tokens: 20 });
    }
    expect((await leaseHolds()).length).toBeGreaterThan(0);
    const statuses: number[] = [];
    let code: string | undefined;
    for (let i = 0; i < 8; i++) {
      try {
        await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'the same question' }], max_tokens: 20 });
        statuses.push(200);
      } catch (err) {
        const e = err as { status?: number; code?: string };
        statuses.push(e.status ?? 0);
        code ??= e.code;
      }
    }
    // Default loop guard: 5 copies per window, the 6th is refused.
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    expect(code).toBe('loop_detected');
    await h.settled();
    await h.gateway.leases!.close();
  });
});
