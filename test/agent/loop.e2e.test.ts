/**
 * The agent loop end to end: POST /v1/agent/runs on a real local gateway, a worker taking the run from the
 * queue and calling the gateway's /v1/chat/completions over HTTP with service JWTs, a fake upstream scripted
 * per request, and the run recorded in DynamoDB Local.
 */
import { SUMMARY_HEADING } from '../../agent/src/conversation';
import { MAX_TOOL_RETRIES } from '../../agent/src/guards';
import { systemClock } from '../../lambda/core/clock';
import { createApiKey } from '../../lambda/core/key-admin';
import { usdToMicros } from '../../lambda/core/money';
import { TEST_PEPPER } from '../support/gateway-harness';
import { type AgentHarness, lastIsTool, messagesOf, startAgentHarness } from './support';
import { recentRange } from '../support/usage-records';

let h: AgentHarness;

beforeAll(async () => {
  h = await startAgentHarness();
});

afterAll(async () => {
  await h.close();
});

beforeEach(() => {
  h.upstream.reset();
});

/** Sum of what the gateway billed for alice's calls (the usage ledger), once every settlement is written. */
async function billedToAlice(): Promise<{ cost: number; count: number; keyIds: string[] }> {
  await h.settled();
  const records = await h.gateway.usage.query({ by: 'user', id: 'alice', ...recentRange() });
  return { cost: records.reduce((n, r) => n + r.costMicros, 0), count: records.length, keyIds: [...new Set(records.map((r) => r.keyId))] };
}

async function runToEnd(id: string, worker = h.worker()) {
  void worker.start();
  try {
    return await h.waitFor(id, (r) => r.status !== 'queued' && r.status !== 'running');
  } finally {
    await worker.stop();
  }
}

describe('agent runs', () => {
  it('when a run calls tools and then answers, it succeeds with its outputs, tokens and the cost the gateway billed to the user', async () => {
    const before = await billedToAlice();
    h.upstream.scriptEach((body) => {
      const toolResults = (body.messages as Array<{ role: string }>).filter((m) => m.role === 'tool').length;
      if (toolResults === 0) return { toolCall: { id: 'call_1', name: 'get_item', input: { index: 1 } } };
      if (toolResults === 1) return { toolCall: { id: 'call_2', name: 'record_output', input: { item: 1, value: 'negative' } } };
      return { replyText: 'Review 1 is negative.' };
    });
    const res = await h.submit({ instructions: 'Classify each review.', input: ['Great!', 'Awful.'], model: 'gpt-4o-mini', maxCostUsd: 1 });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    expect(id).toMatch(/^run_[0-9a-f]{32}$/);
    expect((await h.runs.get(id))?.status).toBe('queued');

    const run = await runToEnd(id);
    expect(run).toMatchObject({ status: 'succeeded', steps: 3, result: 'Review 1 is negative.', outputs: [{ item: 1, value: 'negative' }] });
    expect(run.inputTokens).toBe(3 * 12);
    expect(run.outputTokens).toBe(3 * 5);
    // The tool's answer reached the model, and every call went through the gateway on alice's behalf.
    const calls = h.chatRequests();
    expect(calls).toHaveLength(3);
    expect(messagesOf(calls[1]!).at(-1)).toMatchObject({ role: 'tool', tool_call_id: 'call_1', content: 'Awful.' });
    const after = await billedToAlice();
    expect(after.count - before.count).toBe(3);
    expect(after.keyIds).toContain('svc:agent');
    expect(run.costMicros).toBe(after.cost - before.cost);
    expect(run.costMicros).toBeGreaterThan(0);
    // Recorded, then deleted from the queue.
    expect(h.queue.waitingRunIds()).toEqual([]);
    expect(h.queue.inFlightCount()).toBe(0);

    const got = await fetch(`${h.url}/v1/agent/runs/${id}`, { headers: { authorization: `Bearer ${h.key}` } });
    expect(got.status).toBe(200);
    expect(await got.json()).toMatchObject({
      id,
      status: 'succeeded',
      steps: 3,
      usage: { input_tokens: 36, output_tokens: 15 },
      result: 'Review 1 is negative.',
      outputs: [{ item: 1, value: 'negative' }],
    });
  });

  it('when the model keeps calling tools, the iteration guard stops the run at its limit and keeps what it produced', async () => {
    h.upstream.scriptEach(() => ({ replyText: 'Still counting.', toolCall: { id: 'c', name: 'count_words', input: { text: 'one two' } } }));
    const id = await h.createRun();
    const run = await runToEnd(id, h.worker({ settings: { maxIterations: 3, runTimeoutMs: 600_000, shutdownGraceMs: 1_000 } }));
    expect(run.status).toBe('stopped_iterations');
    expect(run.steps).toBe(3);
    expect(run.result).toBe('Still counting.');
    expect(run.error).toMatch(/limit of 3 model calls/);
    expect(h.chatRequests()).toHaveLength(3);
  });

  it('when the gateway-billed cost reaches the run cap, the run stops with stopped_cost right after the call that crossed it', async () => {
    // 100k input tokens of gpt-4o-mini per call: about $0.015 a call against a $0.04 cap.
    h.upstream.scriptEach(() => ({ usage: { inputTokens: 100_000 }, toolCall: { id: 'c', name: 'count_words', input: { text: 'x' } } }));
    const cap = usdToMicros('0.04');
    const id = await h.createRun({ maxCostUsd: '0.04' });
    const run = await runToEnd(id);
    expect(run.status).toBe('stopped_cost');
    const perCall = run.costMicros / run.steps;
    expect(Number.isInteger(perCall)).toBe(true);
    expect(run.costMicros).toBeGreaterThanOrEqual(cap);
    expect(run.costMicros - perCall).toBeLessThan(cap);
    expect(run.steps).toBe(Math.ceil(cap / perCall));
  });

  it('when the same tool call keeps failing, it is retried at most 3 times and the run stops with stopped_loop', async () => {
    h.upstream.scriptEach(() => ({ toolCall: { id: 'c', name: 'get_item', input: { index: 99 } } }));
    const id = await h.createRun();
    const run = await runToEnd(id);
    expect(run.status).toBe('stopped_loop');
    expect(run.error).toMatch(/get_item/);
    // 1 attempt + 3 retries reached the tool; the model's 5th request for it was refused.
    const calls = h.chatRequests();
    expect(calls).toHaveLength(1 + MAX_TOOL_RETRIES + 1);
    const toolResults = messagesOf(calls.at(-1)!).filter((m) => m.role === 'tool');
    expect(toolResults).toHaveLength(1 + MAX_TOOL_RETRIES);
    for (const t of toolResults) expect(t.content).toMatch(/^Error: There is no item 99/);
  });

  it('when a tool returns an empty result, it is taken as the answer: no retry, and the run succeeds', async () => {
    h.upstream.scriptEach((body) =>
      lastIsTool(body) ? { replyText: 'Item 0 is empty: nothing to classify.' } : { toolCall: { id: 'e', name: 'get_item', input: { index: 0 } } },
    );
    const id = await h.createRun({ input: ['', 'Très bien, merci'] });
    const run = await runToEnd(id);
    expect(run.status).toBe('succeeded');
    expect(run.steps).toBe(2);
    const calls = h.chatRequests();
    expect(calls).toHaveLength(2);
    expect(messagesOf(calls[1]!).at(-1)).toEqual({ role: 'tool', tool_call_id: 'e', content: '' });
  });

  it('when the conversation passes 50 messages, it is pruned to the system prompt, the task, a summary and the recent steps', async () => {
    let n = 0;
    h.upstream.scriptEach(() => ({ toolCall: { id: `c${n}`, name: 'count_words', input: { text: `step ${n++}` } } }));
    const id = await h.createRun();
    const run = await runToEnd(id, h.worker({ settings: { maxIterations: 30, runTimeoutMs: 600_000, shutdownGraceMs: 1_000 } }));
    expect(run.status).toBe('stopped_iterations');
    const sizes = h.chatRequests().map((r) => messagesOf(r).length);
    expect(sizes).toHaveLength(30);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(50);
    expect(Math.max(...sizes)).toBeGreaterThan(45);
    const pruned = h.chatRequests().filter((r) => messagesOf(r)[2]?.content?.startsWith(SUMMARY_HEADING));
    expect(pruned.length).toBeGreaterThan(0);
    for (const request of pruned) {
      const messages = messagesOf(request);
      expect(messages[0]!.role).toBe('system');
      expect(messages[1]!.content).toMatch(/^Classify each review/);
      expect(messages[2]!.content).toMatch(/count_words/);
      // Every tool result still follows the assistant message that asked for it.
      const asked = new Set<string>();
      for (const m of messages) {
        for (const c of m.tool_calls ?? []) asked.add(c.id);
        if (m.role === 'tool') expect(asked.has(m.tool_call_id!)).toBe(true);
      }
    }
  });

  it('when the run passes its wall-clock limit, the call in flight is cut and the run ends timed_out', async () => {
    // The provider never answers: the run can only end if its limit cuts the call (no wall-clock bound needed).
    h.upstream.script({ hang: true });
    const id = await h.createRun();
    const run = await runToEnd(id, h.worker({ settings: { maxIterations: 20, runTimeoutMs: 300, shutdownGraceMs: 1_000 } }));
    expect(run.status).toBe('timed_out');
    expect(run.steps).toBe(0);
  });

  it('when the user has no budget left, the run stops with stopped_cost and the gateway reason', async () => {
    await h.gateway.ledger.setLimit('user:bob', 'day', 1);
    const { raw } = await createApiKey(h.gateway, { userId: 'bob', name: 'bob', scopes: ['ai:agent'] }, { pepper: TEST_PEPPER, clock: systemClock });
    const res = await h.submit({ instructions: 'Say hi.', model: 'gpt-4o-mini' }, raw);
    const { id } = (await res.json()) as { id: string };
    const run = await runToEnd(id);
    expect(run.status).toBe('stopped_cost');
    expect(run.error).toMatch(/gateway refused/);
    expect(h.chatRequests()).toHaveLength(0);
  });
});

describe('agent worker shutdown (SIGTERM)', () => {
  it('when stopped mid-run, it finishes the step in flight, returns the run to the queue, and another worker completes it', async () => {
    h.upstream.scriptEach(() => ({ delayMs: 300, toolCall: { id: 'c', name: 'count_words', input: { text: 'a' } } }));
    const id = await h.createRun();
    const worker = h.worker({ settings: { maxIterations: 20, runTimeoutMs: 600_000, shutdownGraceMs: 600_000 } });
    void worker.start();
    await h.waitFor(id, (r) => r.status === 'running');
    while (h.chatRequests().length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    await worker.stop();

    const returned = await h.runs.get(id);
    expect(returned).toMatchObject({ status: 'queued', steps: 1, attempts: 1 });
    expect(returned!.costMicros).toBeGreaterThan(0);
    expect(h.queue.waitingRunIds()).toEqual([id]);
    expect(h.queue.inFlightCount()).toBe(0);

    h.upstream.scriptEach(() => ({ replyText: 'All done.' }));
    const run = await runToEnd(id);
    expect(run).toMatchObject({ status: 'succeeded', attempts: 2, steps: 2, result: 'All done.' });
    expect(run.costMicros).toBeGreaterThan(returned!.costMicros);
  });

  it('when the step in flight outlasts the grace period, the call is cut and the run is returned at once', async () => {
    // The provider never answers: stop() can only return if the grace period cuts the call.
    h.upstream.script({ hang: true });
    const id = await h.createRun();
    const worker = h.worker({ settings: { maxIterations: 20, runTimeoutMs: 600_000, shutdownGraceMs: 100 } });
    void worker.start();
    await h.waitFor(id, (r) => r.status === 'running');
    while (h.chatRequests().length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    await worker.stop();
    expect(await h.runs.get(id)).toMatchObject({ status: 'queued', steps: 0 });
    expect(h.queue.waitingRunIds()).toEqual([id]);
    // Leave the queue clean for the next test.
    h.upstream.script({ replyText: 'ok' });
    await runToEnd(id);
  });
});

describe('agent routes', () => {
  it('when the key lacks the ai:agent scope, POST is refused with 403 and nothing is queued', async () => {
    const { raw } = await createApiKey(h.gateway, { userId: 'alice', name: 'no agent', scopes: ['ai:complete'] }, { pepper: TEST_PEPPER, clock: systemClock });
    const res = await h.submit({ instructions: 'x', model: 'gpt-4o-mini' }, raw);
    expect(res.status).toBe(403);
    expect(h.queue.waitingRunIds()).toEqual([]);
  });

  it('when the body is invalid or the model unknown, POST answers 400 naming the field', async () => {
    const noInstructions = await h.submit({ input: ['a'], model: 'gpt-4o-mini' });
    expect(noInstructions.status).toBe(400);
    expect(((await noInstructions.json()) as { error: { param: string } }).error.param).toBe('instructions');
    const badCap = await h.submit({ instructions: 'x', model: 'gpt-4o-mini', maxCostUsd: -1 });
    expect(((await badCap.json()) as { error: { param: string } }).error.param).toBe('maxCostUsd');
    const unknownModel = await h.submit({ instructions: 'x', model: 'no-such-model-xyz' });
    expect(unknownModel.status).toBe(400);
    expect(h.queue.waitingRunIds()).toEqual([]);
  });

  it("when another user asks for a run, it is a 404 as for a missing one", async () => {
    const id = await h.createRun();
    const { raw } = await createApiKey(h.gateway, { userId: 'mallory', name: 'm', scopes: ['ai:agent'] }, { pepper: TEST_PEPPER, clock: systemClock });
    const other = await fetch(`${h.url}/v1/agent/runs/${id}`, { headers: { authorization: `Bearer ${raw}` } });
    expect(other.status).toBe(404);
    const missing = await fetch(`${h.url}/v1/agent/runs/run_${'0'.repeat(32)}`, { headers: { authorization: `Bearer ${h.key}` } });
    expect(missing.status).toBe(404);
    h.upstream.script({ replyText: 'ok' });
    await runToEnd(id);
  });
});
