/**
 * `x-tollgate-budget-remaining-usd` as a caller sees it over real HTTP (local gateway, DynamoDB Local, the
 * mock provider): a conservative bound of the budget left. Every header is at most the limit minus what was
 * really spent (the store's counter after settlement, and the sum of the answers' costs); one key's requests
 * one after another on one instance see it fall by exactly each request's cost (never up and down); a request
 * after a header of 0 is refused. The requests leave `max_tokens` out, so the gateway reserves as much of the
 * remaining budget as the model may write: the case where the header used to say 0 and more requests passed.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGateway, type Gateway } from '../../lambda/compose';
import { ManualClock } from '../../lambda/core/clock';
import { jsonLogger } from '../../lambda/core/log';
import { createLocalServer } from '../../lambda/local/server';
import { startHarness, TEST_JWT_SECRET, TEST_PEPPER, type Harness } from '../support/gateway-harness';
import { trackInFlight } from '../support/in-flight';
import { TEST_NOW } from '../support/clock';

let h: Harness;
const clock = new ManualClock(TEST_NOW);
beforeAll(async () => {
  h = await startHarness({ clock });
});
afterAll(async () => {
  await h.close();
});

interface Answer {
  readonly status: number;
  readonly code?: string;
  readonly costMicros?: number;
  /** The header in micro-USD, undefined when absent. */
  readonly leftMicros?: number;
  readonly scope?: string;
}

let asked = 0;

/**
 * One chat request (each with its own text: identical ones would be a loop to the loop guard). An answer that
 * says retrying helps (`x-should-retry: true`: a store or the gateway too busy on a loaded machine, nothing
 * charged) is retried, as the SDKs do.
 */
async function ask(url: string, key: string, model: string, extra: Record<string, unknown> = {}): Promise<Answer> {
  asked++;
  let res: Response;
  for (let attempt = 1; ; attempt++) {
    res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: `Write sentence number ${asked} about budgets.` }], ...extra }),
    });
    if (res.status === 200 || res.headers.get('x-should-retry') !== 'true' || attempt >= 5) break;
    await res.arrayBuffer();
  }
  const body = (await res.json()) as { error?: { code?: string } };
  const micros = (h: string | null) => (h === null ? undefined : Math.round(Number(h) * 1_000_000));
  return {
    status: res.status,
    ...(body.error?.code ? { code: body.error.code } : {}),
    ...(res.headers.get('x-tollgate-cost-usd') !== null ? { costMicros: micros(res.headers.get('x-tollgate-cost-usd')) } : {}),
    ...(res.headers.get('x-tollgate-budget-remaining-usd') !== null ? { leftMicros: micros(res.headers.get('x-tollgate-budget-remaining-usd')) } : {}),
    ...(res.headers.get('x-tollgate-budget-scope') !== null ? { scope: res.headers.get('x-tollgate-budget-scope')! } : {}),
  };
}

async function spentOf(scope: string, window: 'day'): Promise<number> {
  await h.settled();
  const item = (await h.scan('budgets')).find((i) => i.pk === `ctr#${scope}` && String(i.sk).startsWith(`${window}#`));
  return Number(item?.spent ?? 0);
}

/**
 * Sends requests one after another until one is refused (at most `max`), checking the header after each
 * against the limit minus the costs so far. Returns the answers.
 */
async function untilRefused(url: string, key: string, limit: number, model: string, max: number, extra?: Record<string, unknown>): Promise<Answer[]> {
  const answers: Answer[] = [];
  let spent = 0;
  for (let i = 0; i < max; i++) {
    const a = await ask(url, key, model, extra);
    // Each request reserves about all that is left: until its settle lands, the next one cannot fit. A caller
    // that does not wait may be refused early (the hold counts); waiting keeps the sequence independent of speed.
    await h.settled();
    answers.push(a);
    if (a.status !== 200) break;
    spent += a.costMicros!;
    expect(a.leftMicros).toBeDefined();
    expect(a.leftMicros!).toBeLessThanOrEqual(Math.max(0, limit - spent));
  }
  return answers;
}

describe('the remaining-budget header', () => {
  it('when one key spends its budget request by request, the header falls by exactly each cost, never rises, and the request after a 0 is refused', async () => {
    // $0.70 a day: a few o1-pro-priced answers, each reserving what is left (at least 1,024 output tokens: $0.61)
    const limit = 700_000;
    const { raw, keyId } = await h.createKey({ userId: 'u-header-1', budget: { window: 'day', limit } });
    const answers = await untilRefused(h.url, raw, limit, 'mock/o1-pro', 60);
    const ok = answers.filter((a) => a.status === 200);
    const last = answers.at(-1)!;
    expect(last).toMatchObject({ status: 429, code: 'insufficient_quota' });
    expect(ok.length).toBeGreaterThan(2);
    let spent = 0;
    let previous = limit;
    for (const a of ok) {
      spent += a.costMicros!;
      expect(a.scope).toBe(`key:${keyId}/day`);
      // One instance, one caller, one request at a time: nothing but this key's spend moves the counter.
      expect(a.leftMicros).toBe(Math.max(0, limit - spent));
      expect(a.leftMicros!).toBeLessThanOrEqual(previous);
      previous = a.leftMicros!;
    }
    // A 0 is only ever followed by a refusal.
    answers.forEach((a, i) => {
      if (a.status === 200 && a.leftMicros === 0) expect(answers[i + 1]?.status ?? 429).toBe(429);
    });
    expect(await spentOf(`key:${keyId}`, 'day')).toBe(spent);
  });

  it('when a busy key is admitted against a budget lease, the header still falls by exactly each cost', async () => {
    const limit = 5_000_000;
    const { raw, keyId } = await h.createKey({ userId: 'u-header-2', budget: { window: 'day', limit } });
    let spent = 0;
    let previous = limit;
    let leased = false;
    for (let i = 0; i < 16; i++) {
      const a = await ask(h.url, raw, 'mock/gpt-4o-mini', { max_tokens: 64 });
      expect(a.status).toBe(200);
      spent += a.costMicros!;
      expect(a.scope).toBe(`key:${keyId}/day`);
      expect(a.leftMicros).toBe(limit - spent);
      expect(a.leftMicros!).toBeLessThanOrEqual(previous);
      previous = a.leftMicros!;
      leased ||= (h.gateway.leases?.openLeases ?? 0) > 0;
    }
    // The lease path was taken (a busy key on one instance), so the figures above include leased requests.
    expect(leased).toBe(true);
    await h.gateway.leases?.close();
    expect(await spentOf(`key:${keyId}`, 'day')).toBe(spent);
  });

  it('when a second gateway instance spends on the same user budget, the first one’s header never exceeds what is left', async () => {
    const second = await startSecondInstance();
    try {
      const userLimit = 150_000;
      const a = await h.createKey({ userId: 'u-header-3' });
      const b = await h.createKey({ userId: 'u-header-3' });
      await h.gateway.ledger.setLimit('user:u-header-3', 'day', userLimit);
      let spent = 0;
      let refused = false;
      for (let i = 0; i < 40 && !refused; i++) {
        // Alternate instances and keys: each instance's view of the user's spend is stale by the other's.
        const [url, key] = i % 2 === 0 ? [h.url, a.raw] : [second.url, b.raw];
        const answer = await ask(url, key, 'mock/o1-pro', { max_tokens: 100 });
        if (answer.status !== 200) {
          expect(answer).toMatchObject({ status: 429, code: 'insufficient_quota' });
          refused = true;
          break;
        }
        spent += answer.costMicros!;
        expect(answer.scope).toBe('user:u-header-3/day');
        expect(answer.leftMicros!).toBeLessThanOrEqual(Math.max(0, userLimit - spent));
      }
      expect(refused).toBe(true);
      await second.settled();
      expect(await spentOf('user:u-header-3', 'day')).toBe(spent);
    } finally {
      await second.close();
    }
  });
});

/** A second gateway over the harness's tables (another Lambda instance of the same deployment). */
async function startSecondInstance(): Promise<{ url: string; gateway: Gateway; settled(): Promise<void>; close(): Promise<void> }> {
  const log = jsonLogger({ level: 'warn', sink: () => undefined });
  const gateway = createGateway({
    config: h.config,
    secrets: { keyPepper: TEST_PEPPER, jwtSecret: TEST_JWT_SECRET },
    dynamodb: h.tables.client,
    log,
    clock,
  });
  const inFlight = trackInFlight();
  const server: Server = createLocalServer({ app: gateway.app, maxBodyBytes: h.config.maxBodyBytes, log, onRequest: inFlight.onRequest });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    gateway,
    settled: () => inFlight.settled(),
    async close() {
      await gateway.leases?.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
