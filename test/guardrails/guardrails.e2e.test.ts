/**
 * End to end through the local gateway (real HTTP, real DynamoDB Local, fake upstream): the loop guard stops
 * a client looping on a failing request, a burst over the hourly limit trips the breaker, and an operator's
 * acknowledged reset (or the kill switch's resume) restores service.
 */
import { ManualClock } from '../../lambda/core/clock';
import { KillSwitch } from '../../lambda/core/guardrails/kill-switch';
import { silentLogger } from '../../lambda/core/log';
import { DynamoDbKeyStatusBatch } from '../../lambda/store/dynamodb/key-status-batch';
import { type Harness, startHarness } from '../support/gateway-harness';
import { TEST_NOW } from '../support/clock';

let h: Harness;
/** A fixed instant mid-hour: a burst straddling an hour would land in two hourly windows. */
const clock = new ManualClock(TEST_NOW);

beforeAll(async () => {
  h = await startHarness({ clock });
});
afterAll(() => h.close());
beforeEach(() => h.upstream.reset?.());

function chat(key: string, content: string, extra: Record<string, unknown> = {}) {
  return fetch(`${h.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content }], max_tokens: 100, ...extra }),
  });
}

async function errorOf(res: Response): Promise<{ code: string; message: string; type: string }> {
  return ((await res.json()) as { error: { code: string; message: string; type: string } }).error;
}

it('when a client loops on the same failing request, the loop guard stops it after 3 failures without reaching the provider', async () => {
  const { raw } = await h.createKey({ userId: 'looper' });
  h.upstream.script({ status: 500, errorMessage: 'classification backend down' });
  const statuses: number[] = [];
  let last: Response | undefined;
  for (let i = 0; i < 10; i++) {
    last = await chat(raw, 'Classify this ticket: "refund please"');
    statuses.push(last.status);
    if (last.status === 429) break;
    await last.arrayBuffer();
    await h.settled();
  }
  expect(statuses.slice(0, 3).every((s) => s >= 500)).toBe(true);
  expect(statuses[3]).toBe(429);
  const error = await errorOf(last!);
  // A 429 no retry can help: the type Codex shows with the x-codex-promo-message sentence (lambda/http/dialects.ts).
  expect(error).toMatchObject({ code: 'loop_detected', type: 'usage_limit_reached' });
  expect(last!.headers.get('x-codex-promo-message')).toContain('Loop detected');
  expect(last!.headers.get('retry-after')).toMatch(/^\d+$/);
  const before = h.upstream.requests.length;
  expect(before).toBeGreaterThanOrEqual(3);
  // More copies never reach the provider; a different request from the same key still does.
  expect((await chat(raw, 'Classify this ticket: "refund please"')).status).toBe(429);
  expect(h.upstream.requests.length).toBe(before);
  h.upstream.script({ replyText: 'refund' });
  expect((await chat(raw, 'Classify this ticket: "where is my parcel"')).status).toBe(200);
  await h.settled();
  // The loop alert was recorded once.
  const alerts = (await h.gateway.guardrails.listAlerts(clock.now() - 60_000)).filter((a) => a.type === 'loop_detected' && a.details.userId === 'looper');
  expect(alerts).toHaveLength(1);
});

it('when a burst crosses the hourly limit, the breaker opens with circuit_open; an acknowledged reset restores service', async () => {
  const { raw, keyId } = await h.createKey({ userId: 'burster' });
  await h.gateway.ledger.setLimit(`user:burster`, 'hour', 60_000); // $0.06 an hour
  h.gateway.pipeline.invalidateLimits();
  h.upstream.script({ replyText: 'ok', usage: { inputTokens: 2_000, outputTokens: 100 } });
  const statuses: number[] = [];
  let denied: Response | undefined;
  for (let i = 0; i < 30; i++) {
    const res = await chat(raw, `burst request ${i}`);
    statuses.push(res.status);
    if (res.status === 429) {
      denied = res;
      break;
    }
    await res.arrayBuffer();
    await h.settled();
  }
  expect(denied).toBeDefined();
  const error = await errorOf(denied!);
  expect(error.code).toBe('circuit_open');
  expect(denied!.headers.get('x-tollgate-circuit-scope')).toBe('user:burster');
  const closesAt = Date.parse(denied!.headers.get('x-tollgate-circuit-closes-at')!);
  expect(closesAt).toBeGreaterThan(clock.now());
  expect(closesAt).toBeLessThanOrEqual(clock.now() + 3_600_000);
  const reached = h.upstream.requests.length;
  // Open: another request is refused without reaching the provider.
  expect((await chat(raw, 'one more')).status).toBe(429);
  expect(h.upstream.requests.length).toBe(reached);
  const alerts = (await h.gateway.guardrails.listAlerts(clock.now() - 60_000)).filter((a) => a.scope === 'user:burster');
  expect(alerts.map((a) => a.type)).toContain('spend_critical');

  // The operator raises the limit and resets the circuit with an acknowledgement.
  await h.gateway.ledger.setLimit(`user:burster`, 'hour', 10_000_000);
  h.gateway.pipeline.invalidateLimits();
  expect(await h.gateway.guardrails.resetCircuit('user:burster', { by: 'ops', reason: 'limit raised for the launch', at: clock.now() })).toBe(true);
  const again = await chat(raw, 'after the reset');
  expect(again.status).toBe(200);
  await again.arrayBuffer();
  await h.settled();
  expect(keyId).toBeTruthy();
});

it('when the kill switch stopped the platform, its suspended keys are refused until resume restores them', async () => {
  const { raw, keyId } = await h.createKey({ userId: 'after-kill' });
  const killSwitch = new KillSwitch({
    keys: h.gateway.keys,
    bulk: new DynamoDbKeyStatusBatch(h.tables.client, h.tables.tables),
    store: h.gateway.guardrails,
    budgets: { describe: async () => ({ limitMicros: 100_000_000, actualMicros: 120_000_000 }) },
    reporter: { report: async () => undefined },
    clock,
    log: silentLogger,
    budgetName: 'tollgate-test-monthly',
  });
  const notice = 'Budget Name: tollgate-test-monthly\nAlert Type: ACTUAL\nAlert Threshold: > $100.00\nACTUAL Amount: $120.00\n';
  expect(await killSwitch.handle(notice)).toMatchObject({ action: 'activated', completed: true });
  const stopped = await chat(raw, 'hello after the kill switch');
  expect(stopped.status).toBe(403);
  await stopped.arrayBuffer();
  expect(await h.gateway.keys.get(keyId)).toMatchObject({ status: 'suspended', statusChangedBy: 'kill-switch' });
  // Behind the suspended keys, the platform circuit is open too.
  expect((await h.gateway.guardrails.listCircuits(clock.now())).find((c) => c.scope === 'platform')).toMatchObject({ cause: 'kill-switch' });
  const resumed = await killSwitch.resume({ by: 'ops', reason: 'budget raised' });
  expect(resumed.restoredKeys).toBeGreaterThan(0);
  const ok = await chat(raw, 'hello after resume');
  expect(ok.status).toBe(200);
  await ok.arrayBuffer();
  await h.settled();
});
