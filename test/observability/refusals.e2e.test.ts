/**
 * Refusals counted end to end: requests refused by the pipeline's own answers (the loop guard), by the
 * authenticator (a suspended key) and by the ledger (a budget) through the real local server and DynamoDB Local
 * end up in the daily counters, on the request log line, and nowhere in the money.
 */
import { ManualClock } from '../../lambda/core/clock';
import { requestLine } from '../../lambda/local/text-log';
import { TEST_NOW } from '../support/clock';
import { type Harness, startHarness } from '../support/gateway-harness';

let h: Harness;
const clock = new ManualClock(TEST_NOW);
const day = new Date(TEST_NOW).toISOString().slice(0, 10);

async function chat(key: string, content: string): Promise<{ status: number; code?: string }> {
  const res = await fetch(`${h.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'mock/gpt-4o-mini', max_tokens: 16, messages: [{ role: 'user', content }] }),
  });
  const body = (await res.json()) as { error?: { code?: string } };
  return { status: res.status, ...(body.error?.code ? { code: body.error.code } : {}) };
}

beforeAll(async () => {
  h = await startHarness({ clock, env: { TOLLGATE_LOOP_MAX_REPEATS: '2' } });
});
afterAll(async () => h?.close());

it('when the loop guard, a suspended key and a budget refuse, each refusal is counted by reason, scope and key, and no money moves', async () => {
  const looper = await h.createKey({ userId: 'lou', orgId: 'acme', name: 'looper' });
  const paused = await h.createKey({ userId: 'sam', orgId: 'acme', name: 'paused' });
  const broke = await h.createKey({ userId: 'bea', name: 'broke', budget: { window: 'day', limit: 1 } });
  await h.gateway.keys.setStatus(paused.keyId, { status: 'suspended', actor: 'operator', reason: 'test' });

  const results = [
    await chat(looper.raw, 'the same question'),
    await chat(looper.raw, 'the same question'),
    await chat(looper.raw, 'the same question'),
    await chat(paused.raw, 'hello'),
    await chat(broke.raw, 'hello'),
    await chat(broke.raw, 'hello again'),
  ];
  expect(results).toEqual([
    { status: 200 },
    { status: 200 },
    { status: 429, code: 'loop_detected' },
    { status: 403, code: 'key_suspended' },
    { status: 429, code: 'insufficient_quota' },
    { status: 429, code: 'insufficient_quota' },
  ]);
  const usageBefore = await h.scan('usage');
  await h.settled();

  const counts = await h.gateway.refusals.store.read([day]);
  expect(counts.map((c) => [c.reason, c.scope, c.window, c.keyId, c.userId, c.count]).sort()).toEqual(
    [
      ['loop_detected', `key:${looper.keyId}`, undefined, looper.keyId, 'lou', 1],
      ['key_suspended', `key:${paused.keyId}`, undefined, paused.keyId, 'sam', 1],
      ['budget', `key:${broke.keyId}`, 'day', broke.keyId, 'bea', 2],
    ].sort(),
  );
  // The request log line names the refusal too (what the CloudWatch "top refused keys" query reads).
  const lines = h.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.message === 'request' && l.refusalReason);
  expect(lines.map((l) => [l.refusalReason, l.keyId]).sort()).toEqual(
    [
      ['loop_detected', looper.keyId],
      ['key_suspended', paused.keyId],
      ['budget', broke.keyId],
      ['budget', broke.keyId],
    ].sort(),
  );
  // With its scope and window, and `npm start`'s readable line says the same: reason, scope, the caller's code.
  const budgetLine = lines.find((l) => l.refusalReason === 'budget')!;
  expect(budgetLine).toMatchObject({ refusalScope: `key:${broke.keyId}`, refusalWindow: 'day', errorCode: 'insufficient_quota' });
  expect(requestLine(budgetLine, new Date(TEST_NOW))).toContain(`refused: budget key:${broke.keyId}/day (insufficient_quota)`);
  const loopLine = lines.find((l) => l.refusalReason === 'loop_detected')!;
  expect(requestLine(loopLine, new Date(TEST_NOW))).toContain(`refused: loop_detected key:${looper.keyId}`);
  expect(requestLine(lines.find((l) => l.refusalReason === 'key_suspended')!, new Date(TEST_NOW))).toContain(`refused: key_suspended key:${paused.keyId}`);
  // Refusals are not usage: the records are the two answered requests, and the refused keys' counters are empty.
  expect((await h.scan('usage')).map((r) => r.keyId)).toEqual(usageBefore.map((r) => r.keyId));
  expect(usageBefore.map((r) => r.keyId)).toEqual([looper.keyId, looper.keyId]);
  const [brokeDay] = await h.gateway.ledger.readCounters([{ scope: `key:${broke.keyId}`, window: 'day', windowKey: `day#${day}`, windowEnd: TEST_NOW + 86_400_000 }]);
  expect([brokeDay?.spent ?? 0, brokeDay?.reserved ?? 0]).toEqual([0, 0]);
});
