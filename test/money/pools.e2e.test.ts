/**
 * Scope pools end to end: the OpenAI SDK (unchanged) → the local gateway (real HTTP) → the fake upstream, on
 * DynamoDB Local, with default settings but leases off (so every request of the pooled key meets its pool). A
 * key another instance marked as pooled is admitted from pool items; each caller gets its cost, every request
 * its usage record, and once the sweeper releases the pools' grants the counters hold exactly what the usage
 * records say.
 */
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { type Harness, startHarness } from '../support/gateway-harness';
import { TEST_NOW } from '../support/clock';
import { ManualClock } from '../../lambda/core/clock';
import { usdToMicros } from '../../lambda/core/money';

const clock = new ManualClock(TEST_NOW);
let h: Harness;

beforeAll(async () => {
  // Quiet keys' pools as shipped (60 s epochs, 10 s warm-up), for the quiet key below.
  h = await startHarness({ clock, env: { TOLLGATE_LEASES: 'false' } });
});
afterAll(() => h.close());

/** As an instance that met a transaction conflict on this scope's items does (a key's, an org's, the platform's). */
async function markBusy(scope: string): Promise<void> {
  await h.tables.client.send(
    new UpdateItemCommand({
      TableName: h.config.tables.budgets,
      Key: marshall({ pk: `limit#${scope}`, sk: 'limits' }),
      UpdateExpression: 'SET poolUntil = :u',
      ExpressionAttributeValues: marshall({ ':u': clock.now() + 10 * 60_000 }),
    }),
  );
}

function markPooled(keyId: string): Promise<void> {
  return markBusy(`key:${keyId}`);
}

describe('scope pools through the gateway', () => {
  it('when a key is pooled, JSON and streamed requests are admitted from its pools and, once the grants are released, the counters equal the recorded usage', async () => {
    // A key busy enough to pool (a pool's share of a 60 rpm bucket over one epoch would not hold a few requests).
    const { raw, keyId } = await h.createKey({ userId: 'pool-user', rpm: 6_000, tpm: 10_000_000 });
    await markPooled(keyId);
    const client = new OpenAI({ apiKey: raw, baseURL: h.baseURL, maxRetries: 0 });
    let charged = 0;
    for (let i = 0; i < 12; i++) {
      const { data, response } = await client.chat.completions
        .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `Summarise ticket #${i}.` }], max_tokens: 50 })
        .withResponse();
      expect(data.choices[0]?.message.content).toBeTruthy();
      charged += usdToMicros(response.headers.get('x-tollgate-cost-usd') ?? 'missing');
      clock.advance(50);
    }
    const stream = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Stream a short answer.' }],
      max_tokens: 50,
      stream: true,
      stream_options: { include_usage: true },
    });
    let streamed = '';
    for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? '';
    expect(streamed.length).toBeGreaterThan(0);
    await h.settled();

    const pools = (await h.scan('budgets')).filter((item) => String(item.pk).startsWith('pool#'));
    expect(pools.length).toBeGreaterThan(0);
    // No request held on its own: only the pools' grants are holds.
    const holds = await h.holds();
    expect(holds.length).toBeGreaterThan(0);
    expect(holds.every((hold) => String(hold.requestId).startsWith('pool.'))).toBe(true);
    const day = `day#${new Date(clock.now()).toISOString().slice(0, 10)}`;
    const refs = [{ scope: 'user:pool-user' as const, window: 'day' as const, windowKey: day, windowEnd: 0 }];
    const [live] = await h.gateway.ledger.readCounters(refs);
    expect(live!.committed).toBeGreaterThan(0);

    // The sweeper's run after the pools' epochs and grace.
    expect(await h.gateway.ledger.sweepExpired(clock.now() + 5 * 60_000)).toBe(holds.length);
    expect(await h.holds()).toEqual([]);
    const records = (await h.scan('usage')).filter((r) => r.keyId === keyId);
    expect(records).toHaveLength(13);
    const recorded = records.reduce((a, r) => a + (r.costMicros as number), 0);
    expect(recorded).toBeGreaterThan(charged);
    const [after] = await h.gateway.ledger.readCounters(refs);
    expect(after).toMatchObject({ spent: recorded, committed: recorded, reserved: 0, requests: 13 });
  });

  it("when a quiet key's org and the platform are busy, OpenAI and Anthropic requests are admitted from the key's quiet pool (those of its first 10 s on their own, the one at 10 s refilling it) and the org's and platform's allowance items, with rate-limit headers; after the release the key's, user's and org's counters equal the recorded usage", async () => {
    // The default 60 rpm: never busy enough for a busy key's pools, but its org is.
    const { raw, keyId } = await h.createKey({ userId: 'quiet-user', orgId: 'quiet-org' });
    await markBusy('org:quiet-org');
    await markBusy('platform');
    const openai = new OpenAI({ apiKey: raw, baseURL: h.baseURL, maxRetries: 0 });
    const anthropic = new Anthropic({ apiKey: raw, baseURL: h.url, maxRetries: 0 });
    for (let i = 0; i < 6; i++) {
      const { data, response } = await openai.chat.completions
        .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `Summarise ticket #${i}.` }], max_tokens: 50 })
        .withResponse();
      expect(data.choices[0]?.message.content).toBeTruthy();
      expect(Number(response.headers.get('x-ratelimit-limit-requests'))).toBe(60);
      expect(Number(response.headers.get('x-ratelimit-remaining-requests'))).toBeGreaterThanOrEqual(0);
      clock.advance(2_000);
    }
    const msg = await anthropic.messages.create({ model: 'claude-sonnet-4-6', max_tokens: 50, messages: [{ role: 'user', content: 'Say hello in French' }] });
    expect(msg.content[0]?.type).toBe('text');
    await h.settled();
    // The requests of the key's first 10 s held on their own (its pool had no room yet); the one at 10 s had the
    // pool refilled beside it (the warm-up), and the Anthropic request was taken from it.
    await h.gateway.ledger.backgroundDone();

    const pools = (await h.scan('budgets')).filter((item) => String(item.pk).startsWith('pool#'));
    expect(pools.some((p) => String(p.pk).endsWith('#q'))).toBe(true);
    const holds = await h.holds();
    // Grants only (the own holds went with their settles): the quiet pool's and the allowance pools'.
    expect(holds.every((hold) => String(hold.requestId).startsWith('pool.') || String(hold.requestId).startsWith('spool.'))).toBe(true);
    expect(holds.some((hold) => String(hold.requestId).includes('#q.'))).toBe(true);
    expect(holds.some((hold) => (hold.context as { keyId?: string } | undefined)?.keyId === 'org:quiet-org')).toBe(true);

    // Past every pool's close: a quiet pool's is its epoch's start (5 minutes, offset by its key) + 2 epochs + grace.
    await h.gateway.ledger.sweepExpired(clock.now() + 20 * 60_000);
    expect(await h.holds()).toEqual([]);
    const records = (await h.scan('usage')).filter((r) => r.keyId === keyId);
    expect(records).toHaveLength(7);
    const recorded = records.reduce((a, r) => a + (r.costMicros as number), 0);
    const day = `day#${new Date(clock.now()).toISOString().slice(0, 10)}`;
    const refs = (['key:' + keyId, 'user:quiet-user', 'org:quiet-org'] as const).map((scope) => ({ scope: scope as `key:${string}`, window: 'day' as const, windowKey: day, windowEnd: 0 }));
    for (const value of await h.gateway.ledger.readCounters(refs)) {
      expect(value).toMatchObject({ spent: recorded, committed: recorded, reserved: 0, requests: 7 });
    }
  });
});
