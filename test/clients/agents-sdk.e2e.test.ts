/**
 * The OpenAI Agents SDK (`@openai/agents`, unchanged) through the gateway against the fake upstream, on the
 * Responses API (its default) and on chat completions: one tool turn, and a runaway (the model keeps asking for
 * the same failing tool call) stopped by the gateway's defaults within 10 model calls at ≤ $1. Counts and
 * dollars are asserted, never wall-clock time.
 */
import { Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, run, setTracingDisabled, tool } from '@openai/agents';
import OpenAI from 'openai';
import * as z from 'zod';
import type { FakeScript } from '../support/fake-upstream';
import { recordAgentRow, secondsSince } from './agent-cli';
import { getWeather, plausibleModel, startClientSuite, TOOL_ANSWER, type ClientSuite } from './support';
import { TEST_NOW } from '../support/clock';
import { recentRange } from '../support/usage-records';

setTracingDisabled(true);

let s: ClientSuite;
beforeAll(async () => {
  s = await startClientSuite();
});
afterAll(() => s.h.close());

type Surface = 'responses' | 'chat';
const modelFor = (surface: Surface, key: string, name: string) => {
  const client = new OpenAI({ apiKey: key, baseURL: s.h.baseURL });
  return surface === 'responses' ? new OpenAIResponsesModel(client, name) : new OpenAIChatCompletionsModel(client, name);
};
const modelCalls = () => s.h.upstream.requests.filter((r) => r.path === '/v1/responses' || r.path === '/v1/chat/completions').length;

async function spentBy(userId: string): Promise<{ micros: number; requests: number }> {
  await s.h.settled();
  const records = await s.h.gateway.usage.query({ by: 'user', id: userId, ...recentRange(TEST_NOW) });
  return { micros: records.reduce((n, r) => n + r.costMicros, 0), requests: records.length };
}

const weather = tool({
  name: 'get_weather',
  description: 'The weather in a city',
  parameters: z.object({ city: z.string() }),
  execute: async (args) => getWeather(args),
});

/** A model stuck on a failing test run: it asks for the same tool call, with a fresh call id, every time. */
function stuckModel(): (body: Record<string, unknown>) => FakeScript {
  let n = 0;
  return () => ({
    replyText: '',
    // An agent-sized turn: 20k tokens of context read again on every call.
    usage: { inputTokens: 20_000, outputTokens: 60 },
    toolCall: { id: `call_stuck_${++n}`, name: 'run_tests', input: { cmd: 'npm test' } },
  });
}

const runTests = tool({
  name: 'run_tests',
  description: 'Runs the test suite',
  parameters: z.object({ cmd: z.string() }),
  execute: async () => 'Error: 1 test failed (expected 2, received 3)',
});

describe.each<Surface>(['responses', 'chat'])('OpenAI Agents SDK on %s', (surface) => {
  it('when the agent needs a tool, it completes the tool turn through the gateway and the cost is recorded', async () => {
    s.h.upstream.scriptEach(plausibleModel);
    const userId = `u-agents-${surface}`;
    const key = await s.key(userId);
    const before = modelCalls();
    const agent = new Agent({ name: 'weather', instructions: 'Answer with the tool.', tools: [weather], model: modelFor(surface, key, 'gpt-4o') });
    const result = await run(agent, 'What is the weather in Paris?');
    expect(result.finalOutput).toBe(TOOL_ANSWER);
    expect(modelCalls() - before).toBe(2);
    const spent = await spentBy(userId);
    expect(spent.requests).toBe(2);
    expect(spent.micros).toBeGreaterThan(0);    recordAgentRow({ agent: `Agents SDK (${surface === 'responses' ? 'Responses API' : 'chat completions'})`, model: 'gpt-4o', kind: 'tool', ok: true });
  });

  it('when the agent keeps repeating a failing tool call, the gateway stops it by default within 10 model calls at ≤ $1', async () => {
    s.h.upstream.scriptEach(stuckModel());
    const userId = `u-agents-runaway-${surface}`;
    const key = await s.key(userId);
    const before = modelCalls();
    const agent = new Agent({ name: 'fixer', instructions: 'Make the tests pass.', tools: [runTests], model: modelFor(surface, key, 'gpt-4o') });
    // The SDK's own turn limit set high, so only the gateway can stop the loop.
    const started = performance.now();
    const err = await run(agent, 'Fix the failing test.', { maxTurns: 50 }).catch((e: unknown) => e);
    const seconds = secondsSince(started);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const refusal = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(refusal.code).toBe('loop_detected');
    expect(refusal.headers?.get('x-should-retry')).toBe('false');
    const calls = modelCalls() - before;
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(calls).toBeLessThanOrEqual(10);
    const spent = await spentBy(userId);
    expect(spent.micros).toBeLessThanOrEqual(1_000_000);    recordAgentRow({ agent: `Agents SDK (${surface === 'responses' ? 'Responses API' : 'chat completions'})`, model: 'gpt-4o', kind: 'runaway', ok: true, calls, seconds, micros: spent.micros, note: 'loop guard' });
  });
});
