/**
 * Issue 10 end to end (real HTTP, DynamoDB Local, fake upstream), with DEFAULT settings unless a test says
 * otherwise: default limits and their explicit removal, the gateway-chosen output cap, the loop guard counted
 * at admission (a client retrying at once), growing conversations and near-duplicates across a user's keys,
 * the spend-velocity breaker (key rotation, parallel workers, escalation and ack), the kill switch on ledger
 * spend, and a small false-positive workload that must pass.
 *
 * The clock is derived from now (the next hour + 30 min), so no counter or TTL depends on today's date.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { ManualClock } from '../../lambda/core/clock';
import { checkLedgerSpend, KillSwitch } from '../../lambda/core/guardrails/kill-switch';
import { DEFAULT_LIMITS } from '../../lambda/core/guardrails/defaults';
import { silentLogger } from '../../lambda/core/log';
import { DynamoDbKeyStatusBatch } from '../../lambda/store/dynamodb/key-status-batch';
import { type Harness, startHarness } from '../support/gateway-harness';
import { recentRange } from '../support/usage-records';

const HOUR = 3_600_000;
const clock = new ManualClock(Math.ceil(Date.now() / HOUR) * HOUR + 30 * 60_000);
const ADMIN = 'tga-runaway-test-token';
const FAILED = 'Classification failed - no result';
const TICKET = `Classify this support ticket: ${'The customer writes about an order. '.repeat(40)}`;
let h: Harness;

beforeAll(async () => {
  h = await startHarness({ clock, env: { TOLLGATE_ADMIN_AUTH: 'local-token' }, gateway: { adminToken: ADMIN } });
});
afterAll(() => h.close());
beforeEach(() => {
  h.upstream.reset();
  clock.advance(HOUR); // every test starts in a fresh hour, day windows aside
});

type Msg = { role: string; content: string | null; tool_calls?: unknown[]; tool_call_id?: string };

async function chat(key: string, body: Record<string, unknown>): Promise<{ status: number; headers: Headers; json: any }> {
  const res = await fetch(`${h.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, json: await res.json() };
}

function admin(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${h.url}${path}`, { ...init, headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}`, ...(init.headers ?? {}) } });
}

/** The fake o1-pro of the incident: ~4,000 tokens in, up to 4,300 out, honouring the cap it was sent. */
function failingClassifier(): void {
  h.upstream.scriptEach((body) => {
    const cap = typeof body.max_completion_tokens === 'number' ? body.max_completion_tokens : typeof body.max_tokens === 'number' ? body.max_tokens : 4_300;
    return { replyText: FAILED, usage: { inputTokens: 4_000, outputTokens: Math.min(4_300, cap) } };
  });
}

describe('safe defaults', () => {
  it('when a key is made with no flags, keys show and budgets show report the default limits, and "none" is an explicit unlimited', async () => {
    const { keyId } = await h.createKey({ userId: 'newcomer' });
    const shown = (await (await admin(`/admin/keys/${keyId}`)).json()) as any;
    expect(shown.limits.rpm).toEqual({ value: DEFAULT_LIMITS.keyRpm, source: 'default' });
    expect(shown.limits.tpm).toEqual({ value: DEFAULT_LIMITS.keyTpm, source: 'default' });
    expect(shown.limits.budgets.month).toEqual({ usd: '100.000000', source: 'default' });
    const user = (await (await admin('/admin/budgets/user:newcomer')).json()) as any;
    expect(user.limits.day).toBe('10.000000');
    expect(user.sources.day).toBe('default');

    expect((await admin('/admin/budgets/user:newcomer/day', { method: 'PUT', body: JSON.stringify({ usd: 'none' }) })).status).toBe(200);
    const removed = (await (await admin('/admin/budgets/user:newcomer')).json()) as any;
    expect(removed).toMatchObject({ limits: { day: null }, sources: { day: 'none' } });
    expect((await admin('/admin/budgets/user:newcomer/day', { method: 'PUT', body: JSON.stringify({ usd: 'default' }) })).status).toBe(200);
    expect(((await (await admin('/admin/budgets/user:newcomer')).json()) as any).sources.day).toBe('default');
  });

  it('when a request to an expensive model sets no max_tokens, the gateway reserves and sends the largest cap the $10/day default allows, and the charge stays within it', async () => {
    const { raw } = await h.createKey({ userId: 'no-cap' });
    failingClassifier();
    const first = await chat(raw, { model: 'o1-pro', messages: [{ role: 'user', content: TICKET }] });
    expect(first.status).toBe(200);
    const sent = h.upstream.requests[0]!.body as { max_completion_tokens?: number };
    expect(sent.max_completion_tokens).toBeGreaterThanOrEqual(1_024);
    // $10 at $600/MTok is at most 16,666 output tokens, less the input's cost.
    expect(sent.max_completion_tokens).toBeLessThan(16_667);
    await h.settled();
    const records = await h.gateway.usage.query({ by: 'user', id: 'no-cap', ...recentRange(clock.now()) });
    expect(records[0]!.costMicros).toBeLessThanOrEqual(10_000_000);
  });
});

describe('a request larger than the tokens-per-minute window', () => {
  it('when one request needs more tokens than the key may use in a minute, the 429 says x-should-retry: false and names the limit and scope', async () => {
    // A key an operator limited to 50,000 tokens a minute (the default, 5,000,000, fits any single request).
    const { raw, keyId } = await h.createKey({ userId: 'too-large', tpm: 50_000 });
    // ~390 KB of files read into context (~85k tokens): more input than 50,000 tokens per minute can ever admit.
    const files = 'export const value = compute(input, options);\n'.repeat(8_500);
    const client = new OpenAI({ apiKey: raw, baseURL: h.baseURL, maxRetries: 2 });
    const err = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: files }], max_tokens: 100 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const e = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(e.headers?.get('x-should-retry')).toBe('false');
    expect(e.headers?.get('retry-after')).toBeNull();
    expect(e.message).toContain(keyId);
    expect(e.message).toContain("the key's limit is 50,000 tokens per minute, so retrying can never succeed");
    // The Anthropic SDK (Claude Code's client) gets the same in its dialect and does not retry either.
    const anthropic = new Anthropic({ apiKey: raw, baseURL: h.url, maxRetries: 2 });
    const aerr = await anthropic.messages.create({ model: 'claude-sonnet-4-6', max_tokens: 100, messages: [{ role: 'user', content: files }] }).catch((x: unknown) => x);
    expect(aerr).toBeInstanceOf(Anthropic.RateLimitError);
    expect((aerr as InstanceType<typeof Anthropic.RateLimitError>).headers?.get('x-should-retry')).toBe('false');
    expect((aerr as Error).message).toContain(`Request too large for key ${keyId}`);
    expect(h.upstream.requests).toHaveLength(0);
  });
});

describe('loop guard', () => {
  it('when a client retries a failing request at once without waiting for settle, exactly 3 copies reach the provider', async () => {
    const { raw } = await h.createKey({ userId: 'instant-retry' });
    h.upstream.script({ status: 500, errorMessage: 'classifier down' });
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await chat(raw, { model: 'gpt-4o', messages: [{ role: 'user', content: 'Classify: refund' }], max_tokens: 50 })).status);
    expect(h.upstream.requests).toHaveLength(3);
    expect(statuses.slice(0, 3).every((s) => s >= 500)).toBe(true);
    expect(statuses.slice(3)).toEqual([429, 429, 429]);
  });

  it('when the same request comes back with a new request id each time through three keys of one user, the 6th copy is refused', async () => {
    const keys = [await h.createKey({ userId: 'rotator' }), await h.createKey({ userId: 'rotator' }), await h.createKey({ userId: 'rotator' })];
    h.upstream.script({ replyText: 'refund' });
    const results = [];
    for (let i = 0; i < 7; i++) {
      const content = `Classify ticket (request ${crypto.randomUUID()}, sent ${new Date(clock.now() + i * 1000).toISOString()}): refund please`;
      results.push(await chat(keys[i % 3]!.raw, { model: 'gpt-4o', messages: [{ role: 'user', content }], max_tokens: 20 }));
    }
    expect(results.slice(0, 5).map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(results[5]!.status).toBe(429);
    expect(results[5]!.json.error.code).toBe('loop_detected');
    expect(results[5]!.headers.get('x-should-retry')).toBe('false');
    expect(h.upstream.requests).toHaveLength(5);
  });

  it('when a conversation grows by the same failed answer each retry, the retry carrying it 3 times is refused before the provider', async () => {
    const { raw } = await h.createKey({ userId: 'react-loop' });
    h.upstream.script({ replyText: FAILED });
    const messages: Msg[] = [{ role: 'user', content: 'Classify: refund please' }];
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await chat(raw, { model: 'gpt-4o', messages, max_tokens: 20 });
      statuses.push(r.status);
      if (r.status === 429) expect(r.json.error.code).toBe('loop_detected');
      messages.push({ role: 'assistant', content: FAILED }, { role: 'user', content: `Attempt ${i + 2}: try again.` });
    }
    expect(statuses).toEqual([200, 200, 200, 429, 429, 429]);
    expect(h.upstream.requests).toHaveLength(3);
    await h.settled();
    const alerts = (await h.gateway.guardrails.listAlerts(clock.now() - HOUR)).filter((a) => a.type === 'loop_detected' && a.details.userId === 'react-loop');
    expect(alerts).toHaveLength(1);
  });

  it('when a long chat and an agent making progress send growing histories, nothing is refused (false positives: 0)', async () => {
    const { raw } = await h.createKey({ userId: 'fp-user' });
    h.upstream.scriptEach((body) => {
      const msgs = body.messages as Msg[];
      const tools = msgs.filter((m) => m.role === 'tool').length;
      if (Array.isArray(body.tools) && tools < 6) return { replyText: 'Recording it.', toolCall: { id: `call_${tools}`, name: 'record_output', input: { item: tools } } };
      return { replyText: `Answer about: ${String(msgs[msgs.length - 1]?.content).slice(0, 40)}` };
    });
    const history: Msg[] = [];
    for (let turn = 0; turn < 12; turn++) {
      history.push({ role: 'user', content: `Tell me about roadmap topic ${turn}` });
      const r = await chat(raw, { model: 'gpt-4o-mini', messages: history });
      expect(r.status).toBe(200);
      history.push({ role: 'assistant', content: r.json.choices[0].message.content });
    }
    const agent: Msg[] = [{ role: 'user', content: 'Record six results.' }];
    for (let step = 0; step < 7; step++) {
      const r = await chat(raw, { model: 'gpt-4o-mini', messages: agent, tools: [{ type: 'function', function: { name: 'record_output', parameters: { type: 'object' } } }] });
      expect(r.status).toBe(200);
      const msg = r.json.choices[0].message;
      if (!msg.tool_calls) break;
      agent.push({ role: 'assistant', content: msg.content, tool_calls: msg.tool_calls }, { role: 'tool', tool_call_id: msg.tool_calls[0].id, content: 'recorded' });
    }
    expect(agent.filter((m) => m.role === 'tool')).toHaveLength(6);
  });
});

describe('loop guard on the Responses API (Codex, the Agents SDK)', () => {
  const tools: OpenAI.Responses.Tool[] = [{ type: 'function', name: 'run_tests', parameters: { type: 'object', properties: { cmd: { type: 'string' } } }, strict: false }];
  /** Ids like Codex's: a prefix and a UUID, new on every item and every run. */
  const fresh = (prefix: string) => `${prefix}_${crypto.randomUUID()}`;

  it('when an agent repeats a failing tool call, it is refused with x-should-retry: false within 10 model calls and the SDK does not retry', async () => {
    const { raw } = await h.createKey({ userId: 'responses-runaway' });
    // The model asks for the same tool call every turn, each time under a new call id.
    h.upstream.scriptEach(() => ({ replyText: 'Running the tests again.', toolCall: { id: fresh('call'), name: 'run_tests', input: { cmd: 'npm test' } } }));
    const client = new OpenAI({ apiKey: raw, baseURL: h.baseURL, maxRetries: 2 });
    const input: OpenAI.Responses.ResponseInputItem[] = [{ id: fresh('msg'), type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Fix the failing test.' }] } as OpenAI.Responses.ResponseInputItem];
    let refused: unknown;
    let calls = 0;
    for (; calls < 20 && !refused; calls++) {
      try {
        const res = await client.responses.create({ model: 'gpt-4o', input, tools });
        const call = res.output.find((i) => i.type === 'function_call') as OpenAI.Responses.ResponseFunctionToolCall;
        for (const item of res.output) input.push({ ...(item as object), id: item.type === 'message' ? fresh('msg') : fresh('fc') } as OpenAI.Responses.ResponseInputItem);
        input.push({ type: 'function_call_output', call_id: call.call_id, output: 'Error: 1 test failed (exit code 1)' });
      } catch (err) {
        refused = err;
      }
    }
    expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
    const err = refused as InstanceType<typeof OpenAI.RateLimitError>;
    expect(err.headers?.get('x-should-retry')).toBe('false');
    expect((err.error as { code?: string }).code).toBe('loop_detected');
    expect(calls).toBeLessThanOrEqual(10);
    // Every model call but the refused one reached the provider once: the SDK did not retry the refusal.
    expect(h.upstream.requests).toHaveLength(calls - 1);
  });

  it('when the same Codex turn is sent again and again with new msg_/fc_/call_ ids, the 6th copy is refused', async () => {
    const { raw } = await h.createKey({ userId: 'codex-exec-repeats' });
    h.upstream.script({ replyText: 'Done.' });
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 7; i++) {
      const callId = fresh('call');
      const input = [
        { id: fresh('msg'), type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Run the tests.' }] },
        { id: fresh('fc'), type: 'function_call', call_id: callId, name: 'run_tests', arguments: '{"cmd":"npm test"}' },
        { type: 'function_call_output', call_id: callId, output: 'Error: 1 test failed' },
      ];
      last = await fetch(`${h.url}/v1/responses`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${raw}` },
        body: JSON.stringify({ model: 'gpt-4o', input, tools, prompt_cache_key: crypto.randomUUID() }),
      });
      statuses.push(last.status);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429]);
    expect(last!.headers.get('x-should-retry')).toBe('false');
    expect(h.upstream.requests).toHaveLength(5);
  });
});

describe('spend-velocity breaker', () => {
  it('when one user loops through three keys, the user circuit opens after ~$3 with circuit_open and Retry-After, alerts once, and a later trip the same day needs an ack', async () => {
    const keys = [await h.createKey({ userId: 'burner' }), await h.createKey({ userId: 'burner' }), await h.createKey({ userId: 'burner' })];
    failingClassifier();
    // A loop with a modest output cap: without one o1-pro is reserved at its 100k-token limit, which the $10 user
    // budget refuses before the velocity breaker is reached (also a stop, but not the one this test is about).
    const results = [];
    for (let i = 0; i < 9; i++) {
      results.push(await chat(keys[i % 3]!.raw, { model: 'o1-pro', max_tokens: 4_096, messages: [{ role: 'user', content: `${TICKET} (ticket ${i})` }] }));
      await h.settled();
    }
    const reached = h.upstream.requests.length;
    expect(reached).toBe(1);
    const refused = results[1]!;
    expect(refused.status).toBe(429);
    expect(refused.json.error.code).toBe('circuit_open');
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(refused.headers.get('x-should-retry')).toBe('false');
    expect(refused.headers.get('x-tollgate-circuit-scope')).toMatch(/^(user:burner|key:)/);
    const trips = (await h.gateway.guardrails.listAlerts(clock.now() - HOUR)).filter((a) => a.type === 'spend_velocity' && String(a.details.userId) === 'burner');
    expect(trips.length).toBeGreaterThanOrEqual(1);
    expect(trips.length).toBeLessThanOrEqual(2); // at most one per scope (key and user)

    // After the cooldown the loop gets one more call through, trips again, and now stays open until acknowledged.
    clock.advance(16 * 60_000);
    for (let i = 0; i < 4; i++) {
      await chat(keys[i % 3]!.raw, { model: 'o1-pro', max_tokens: 4_096, messages: [{ role: 'user', content: `${TICKET} (again ${i})` }] });
      await h.settled();
    }
    expect(h.upstream.requests.length).toBe(reached + 1);
    const escalations = (await h.gateway.guardrails.listAlerts(clock.now() - HOUR)).filter((a) => a.type === 'spend_velocity_escalation');
    expect(escalations.length).toBeGreaterThanOrEqual(1);
    const held = await chat(keys[0]!.raw, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello' }] });
    expect(held.status).toBe(429);
    clock.advance(2 * HOUR);
    const stillHeld = await chat(keys[0]!.raw, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello again' }] });
    expect(stillHeld.status).toBe(429);
    expect(stillHeld.headers.get('x-tollgate-circuit-closes-at')).toBe('on-acknowledgement');
    for (const scope of ['user:burner', ...keys.map((k) => `key:${k.keyId}`)] as const) {
      await h.gateway.guardrails.resetCircuit(scope as `user:${string}`, { by: 'ops', reason: 'loop fixed', at: clock.now() });
    }
    h.upstream.script({ replyText: 'hi' });
    expect((await chat(keys[1]!.raw, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'after the ack' }] })).status).toBe(200);
  });

  it('when 8 workers loop in parallel on one key, the breaker counts them at admission and at most 4 calls reach the provider', async () => {
    const { raw } = await h.createKey({ userId: 'parallel' });
    failingClassifier();
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, w) => chat(raw, { model: 'o1-pro', messages: [{ role: 'user', content: `${TICKET} (worker ${w})` }] })),
    );
    await h.settled();
    const ok = results.filter((r) => r.status === 200).length;
    expect(ok).toBeGreaterThanOrEqual(1);
    // The bound that holds for any interleaving: each admission puts at least the input (~490 tokens) plus the
    // 1,024-token output floor at o1-pro prices (≈ $0.69) into the velocity window, whose ceiling is the $3 floor,
    // so a 5th admission (≈ $3.44) cannot pass. How many of the 4 get in depends on when the background budget
    // reads land (they lower the gateway-chosen cap); bench:runaway prints the figure (3).
    expect(ok).toBeLessThanOrEqual(4);
    expect(results.filter((r) => r.status === 429).every((r) => ['circuit_open', 'insufficient_quota'].includes(r.json.error.code))).toBe(true);
    expect(h.upstream.requests.length).toBe(ok);
  });
});

describe('kill switch on ledger spend', () => {
  it('when platform spend in the ledger reaches the platform limit, the sweeper check suspends every key until resume', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'platform-user' });
    h.upstream.script({ replyText: 'ok', usage: { inputTokens: 1_000, outputTokens: 100 } });
    expect((await chat(raw, { model: 'gpt-4o', messages: [{ role: 'user', content: 'spend a little' }], max_tokens: 100 })).status).toBe(200);
    await h.settled();
    const killSwitch = new KillSwitch({
      keys: h.gateway.keys,
      bulk: new DynamoDbKeyStatusBatch(h.tables.client, h.tables.tables),
      store: h.gateway.guardrails,
      budgets: { describe: async () => undefined },
      reporter: { report: async () => undefined },
      clock,
      log: silentLogger,
      budgetName: '',
    });
    const check = () => checkLedgerSpend(killSwitch, { ledger: h.gateway.ledger, defaults: h.config.defaults, percent: h.config.killSwitch.ledgerPercent, now: clock.now() });
    expect(await check()).toBeUndefined(); // far below the default $1,000 a day
    await h.gateway.ledger.setLimit('platform', 'hour', 1_000); // $0.001: already passed by this hour's spend
    h.gateway.pipeline.invalidateLimits();
    expect(await check()).toMatchObject({ action: 'activated', completed: true });
    const stopped = await chat(raw, { model: 'gpt-4o', messages: [{ role: 'user', content: 'after the kill' }], max_tokens: 10 });
    expect(stopped.status).toBe(403);
    expect(await h.gateway.keys.get(keyId)).toMatchObject({ status: 'suspended', statusChangedBy: 'kill-switch' });
    expect(await check()).toMatchObject({ action: 'unchanged' });

    await h.gateway.ledger.setLimit('platform', 'hour', null);
    h.gateway.pipeline.invalidateLimits();
    expect((await killSwitch.resume({ by: 'ops', reason: 'runaway stopped' })).restoredKeys).toBeGreaterThan(0);
    h.gateway.authenticator.invalidate(keyId);
    expect((await chat(raw, { model: 'gpt-4o', messages: [{ role: 'user', content: 'after resume' }], max_tokens: 10 })).status).toBe(200);
  });
});
