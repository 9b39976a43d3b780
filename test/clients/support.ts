/**
 * Shared setup of the client e2e suite: a harness whose fake upstream plays a plausible model in every wire
 * format (it calls the declared weather tool, answers once the tool result is in, and answers JSON when JSON
 * is asked for), and the keys and helpers the per-client files use.
 */
import { ManualClock } from '../../lambda/core/clock';
import { TEST_NOW } from '../support/clock';
import type { FakeScript } from '../support/fake-upstream';
import { type Harness, startHarness } from '../support/gateway-harness';

/** The JSON every structured-output call asks for. */
export const WEATHER_SCHEMA = {
  type: 'object',
  properties: { city: { type: 'string' }, temperature: { type: 'number' } },
  required: ['city', 'temperature'],
  additionalProperties: false,
} as const;

export const WEATHER_JSON = { city: 'Paris', temperature: 21 };
export const TOOL_ANSWER = 'It is 21 degrees and sunny in Paris.';
export const PLAIN_ANSWER = 'Hello from the fake upstream.';

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function last<T>(items: unknown): T | undefined {
  return Array.isArray(items) && items.length > 0 ? (items[items.length - 1] as T) : undefined;
}

/** Whether the conversation in a request body (any wire format) ends with a tool result. */
function endsWithToolResult(body: Record<string, unknown>): boolean {
  const message = last<Record<string, unknown>>(body.messages);
  if (message?.role === 'tool') return true;
  if (message?.role === 'user' && Array.isArray(message.content)) {
    return message.content.some((b) => isRecord(b) && b.type === 'tool_result');
  }
  const item = last<Record<string, unknown>>(body.input);
  return item?.type === 'function_call_output';
}

function wantsJson(body: Record<string, unknown>): boolean {
  const text = isRecord(body.text) && isRecord(body.text.format) ? body.text.format.type : undefined;
  const rf = isRecord(body.response_format) ? body.response_format.type : undefined;
  const oc = isRecord(body.output_config) && isRecord(body.output_config.format);
  return rf === 'json_schema' || rf === 'json_object' || text === 'json_schema' || text === 'json_object' || oc;
}

function toolNames(body: Record<string, unknown>): string[] {
  if (!Array.isArray(body.tools)) return [];
  return body.tools.flatMap((t) => {
    if (!isRecord(t)) return [];
    if (typeof t.name === 'string') return [t.name];
    if (isRecord(t.function) && typeof t.function.name === 'string') return [t.function.name];
    return [];
  });
}

/** The plausible model: what to answer to one request body. */
export function plausibleModel(body: Record<string, unknown>): FakeScript {
  const usage = { inputTokens: 40, outputTokens: 10 };
  const choice = isRecord(body.tool_choice) ? body.tool_choice : undefined;
  // Anthropic with a forced tool: the gateway's structured output for translated requests, or a client's.
  if (choice?.type === 'tool' && typeof choice.name === 'string' && !toolNames(body).includes('get_weather')) {
    return { replyText: '', usage, toolCall: { id: 'toolu_fake_json', name: choice.name, input: WEATHER_JSON } };
  }
  if (endsWithToolResult(body)) return { replyText: TOOL_ANSWER, usage };
  if (toolNames(body).includes('get_weather') && choice?.type !== 'none' && body.tool_choice !== 'none') {
    return { replyText: '', usage, toolCall: { id: 'call_fake_weather', name: 'get_weather', input: { city: 'Paris' } } };
  }
  if (wantsJson(body)) return { replyText: JSON.stringify(WEATHER_JSON), usage };
  return { replyText: PLAIN_ANSWER, usage };
}

export interface ClientSuite {
  readonly h: Harness;
  /** A fresh key with generous limits. */
  key(userId: string): Promise<string>;
  /** A key whose day budget is already too small for any call. */
  brokeKey(userId: string): Promise<string>;
}

/** Starts the harness with the plausible model; call in beforeAll and close `h` in afterAll. */
export async function startClientSuite(): Promise<ClientSuite> {
  // A fixed far-future instant mid-hour (test/support/clock.ts): no window split, no TTL can delete a record.
  const h = await startHarness({ clock: new ManualClock(TEST_NOW) });
  h.upstream.scriptEach(plausibleModel);
  return {
    h,
    key: async (userId) => (await h.createKey({ userId })).raw,
    brokeKey: async (userId) => {
      const { raw, keyId } = await h.createKey({ userId });
      await h.gateway.ledger.setLimit(`key:${keyId}`, 'day', 1);
      return raw;
    },
  };
}

/** The weather tool's implementation the clients run. */
export function getWeather(args: { city: string }): string {
  return JSON.stringify({ city: args.city, temperature: 21, sky: 'sunny' });
}
