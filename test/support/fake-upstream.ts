/**
 * A fake OpenAI + Anthropic upstream on a real node:http server (127.0.0.1, a free port), for tests that
 * must cross real HTTP. It records every request and can be scripted per test.
 *
 * OpenAI:    POST /v1/chat/completions (stream and not), POST /v1/responses (stream and not, the real event
 *            sequence), POST /v1/embeddings, GET /v1/models
 * Anthropic: POST /v1/messages (stream and not) with the real event sequence, POST /v1/messages/count_tokens
 *            (`{"input_tokens": N}` by {@link fakeAnthropicTokenCount}; like Anthropic's it refuses the
 *            Messages-only fields `max_tokens` and `stream`)
 *
 * Usage in a script is written in each wire format's own terms: for OpenAI `inputTokens` is `prompt_tokens`
 * (cached included) and `cachedTokens` is `prompt_tokens_details.cached_tokens`; for Anthropic `inputTokens`
 * is `input_tokens` (cache excluded), `cachedTokens` is `cache_read_input_tokens` and `cacheWriteTokens` is
 * `cache_creation_input_tokens`.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeUsage {
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly cachedTokens: number;
  readonly cacheWriteTokens: number;
}

/** How the fake answers until the next script() or reset(). */
export interface FakeScript {
  /** The reply text. @default 'Hello from the fake upstream.' */
  readonly replyText?: string;
  /** @default { inputTokens: 12, outputTokens: 5, cachedTokens: 0, cacheWriteTokens: 0 } */
  readonly usage?: Partial<FakeUsage>;
  /** Answer with this error status (and an error body in the route's dialect). */
  readonly status?: number;
  /** The message in the error body. @default 'scripted failure' */
  readonly errorMessage?: string;
  /** A `Retry-After` header on an error answer. */
  readonly retryAfter?: string;
  /** Wait this long before answering. */
  readonly delayMs?: number;
  /**
   * Answer only once this settles: a test holds every admitted request at the provider for as long as it
   * needs (e.g. until all racers were decided), however slow the machine is.
   */
  readonly until?: Promise<unknown>;
  /** Never answer (until the client gives up or the server closes). */
  readonly hang?: boolean;
  /** Streams: send this many events, then hang without ending. */
  readonly hangAfterEvents?: number;
  /** Streams: send this many events, then end the response early (no usage, no end marker). */
  readonly endAfterEvents?: number;
  /**
   * Non-stream answers: send only the first N characters of the JSON body, then end the response cleanly (a
   * body cut mid-JSON; no Content-Length, so the HTTP framing itself is whole).
   */
  readonly cutBodyAt?: number;
  /** End streams (and answers) without usage. */
  readonly omitUsage?: boolean;
  /**
   * The whole error body (JSON-serialised unless a string) for an error answer, built from the credential the
   * request carried (`Authorization: Bearer …` or `x-api-key`): for tests of what an echoing upstream leaks.
   */
  readonly errorBody?: (credential: string) => unknown;
  /** Streams: a raw event written after the first one (e.g. an `error` event), built from the credential. */
  readonly midStreamEvent?: (credential: string) => string;
  /** After which event (0-based) midStreamEvent is written. @default 0 */
  readonly midStreamEventAt?: number;
  /** Extra headers on an error answer, built from the credential the request carried. */
  readonly errorHeaders?: (credential: string) => Record<string, string>;
  /** Answer with a tool call after the text. */
  readonly toolCall?: { readonly id: string; readonly name: string; readonly input: Record<string, unknown> };
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  /** Header names in lower case. */
  readonly headers: Readonly<Record<string, string>>;
  /** The body parsed as JSON, or undefined when it was empty or not JSON. */
  readonly body: unknown;
  readonly rawBody: string;
}

export interface FakeUpstream {
  /** `http://127.0.0.1:PORT/v1`, as OPENAI_BASE_URL. */
  readonly openaiBaseUrl: string;
  /** `http://127.0.0.1:PORT`, as ANTHROPIC_BASE_URL. */
  readonly anthropicBaseUrl: string;
  /** Every request received, oldest first. */
  readonly requests: RecordedRequest[];
  /** Replaces the script. */
  script(script: FakeScript): void;
  /** Replaces the script with one chosen per request from its JSON body (multi-step conversations). */
  scriptEach(next: (body: Record<string, unknown>) => FakeScript): void;
  /** Forgets the requests and the script. */
  reset(): void;
  close(): Promise<void>;
}

const DEFAULT_TEXT = 'Hello from the fake upstream.';
const DEFAULT_USAGE: FakeUsage = { inputTokens: 12, outputTokens: 5, cachedTokens: 0, cacheWriteTokens: 0 };

interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly body: Record<string, unknown>;
  readonly script: FakeScript;
  readonly usage: FakeUsage;
  readonly text: string;
}

/** The reply in word pieces, as a model streams it. */
function pieces(text: string): string[] {
  return text.match(/\s*\S+/g) ?? [];
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

/** Writes SSE events one by one, honouring hangAfterEvents / endAfterEvents. */
async function writeEvents(x: Exchange, events: readonly string[]): Promise<void> {
  x.res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  for (let i = 0; i < events.length; i++) {
    if (x.script.hangAfterEvents !== undefined && i >= x.script.hangAfterEvents) return;
    if (x.script.endAfterEvents !== undefined && i >= x.script.endAfterEvents) break;
    x.res.write(events[i]);
    if (i === (x.script.midStreamEventAt ?? 0) && x.script.midStreamEvent) x.res.write(x.script.midStreamEvent(credentialOf(x)));
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  x.res.end();
}

function openAiChat(x: Exchange): Promise<void> | void {
  const created = 1_700_000_000;
  const model = String(x.body.model);
  const usage = {
    prompt_tokens: x.usage.inputTokens,
    completion_tokens: x.usage.outputTokens,
    total_tokens: x.usage.inputTokens + x.usage.outputTokens,
    prompt_tokens_details: { cached_tokens: x.usage.cachedTokens, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0 },
  };
  const toolCalls = x.script.toolCall
    ? [{ id: x.script.toolCall.id, type: 'function', function: { name: x.script.toolCall.name, arguments: JSON.stringify(x.script.toolCall.input) } }]
    : undefined;
  if (!x.body.stream) {
    return sendJson(x.res, 200, {
      id: 'chatcmpl-fake',
      object: 'chat.completion',
      created,
      model,
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: x.text, refusal: null, ...(toolCalls ? { tool_calls: toolCalls } : {}) },
          logprobs: null,
          finish_reason: toolCalls ? 'tool_calls' : 'stop',
        },
      ],
      ...(x.script.omitUsage ? {} : { usage }),
    });
  }
  const streamOptions = x.body.stream_options as { include_usage?: boolean } | undefined;
  const includeUsage = streamOptions?.include_usage === true;
  const chunk = (delta: Record<string, unknown>, finish: string | null): string =>
    `data: ${JSON.stringify({
      id: 'chatcmpl-fake',
      object: 'chat.completion.chunk',
      created,
      model,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      ...(includeUsage ? { usage: null } : {}),
    })}\n\n`;
  const events = [
    chunk({ role: 'assistant', content: '', refusal: null }, null),
    ...pieces(x.text).map((p) => chunk({ content: p }, null)),
    ...(toolCalls ? [chunk({ tool_calls: [{ index: 0, ...toolCalls[0] }] }, null)] : []),
    chunk({}, toolCalls ? 'tool_calls' : 'stop'),
    ...(includeUsage && !x.script.omitUsage
      ? [`data: ${JSON.stringify({ id: 'chatcmpl-fake', object: 'chat.completion.chunk', created, model, choices: [], usage })}\n\n`]
      : []),
    'data: [DONE]\n\n',
  ];
  return writeEvents(x, events);
}

/** OpenAI's Responses API: the response object, or its event stream in the order the real API sends it. */
function openAiResponses(x: Exchange): Promise<void> | void {
  const createdAt = 1_700_000_000;
  const model = String(x.body.model);
  const tool = x.script.toolCall;
  const usage = {
    input_tokens: x.usage.inputTokens,
    input_tokens_details: { cached_tokens: x.usage.cachedTokens },
    output_tokens: x.usage.outputTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: x.usage.inputTokens + x.usage.outputTokens,
  };
  const textPart = { type: 'output_text', text: x.text, annotations: [], logprobs: [] };
  const message = { id: 'msg_fake', type: 'message', status: 'completed', role: 'assistant', content: [textPart] };
  const call = tool
    ? { id: 'fc_fake', type: 'function_call', status: 'completed', arguments: JSON.stringify(tool.input), call_id: tool.id, name: tool.name }
    : undefined;
  const output = [...(x.text ? [message] : []), ...(call ? [call] : [])];
  const response = (status: string, out: unknown[], withUsage: boolean): Record<string, unknown> => ({
    id: 'resp_fake',
    object: 'response',
    created_at: createdAt,
    status,
    error: null,
    incomplete_details: null,
    instructions: x.body.instructions ?? null,
    max_output_tokens: x.body.max_output_tokens ?? null,
    model,
    output: out,
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    store: x.body.store ?? true,
    temperature: 1,
    text: x.body.text ?? { format: { type: 'text' } },
    tool_choice: x.body.tool_choice ?? 'auto',
    tools: x.body.tools ?? [],
    top_p: 1,
    truncation: 'disabled',
    usage: withUsage && !x.script.omitUsage ? usage : null,
    user: null,
    metadata: {},
  });
  if (!x.body.stream) return sendJson(x.res, 200, response('completed', output, true));
  let seq = 0;
  const event = (type: string, data: Record<string, unknown>): string =>
    `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...data })}\n\n`;
  const events = [event('response.created', { response: response('in_progress', [], false) }), event('response.in_progress', { response: response('in_progress', [], false) })];
  let index = 0;
  if (x.text) {
    events.push(
      event('response.output_item.added', { output_index: index, item: { ...message, status: 'in_progress', content: [] } }),
      event('response.content_part.added', { item_id: 'msg_fake', output_index: index, content_index: 0, part: { ...textPart, text: '' } }),
      ...pieces(x.text).map((p) => event('response.output_text.delta', { item_id: 'msg_fake', output_index: index, content_index: 0, delta: p, logprobs: [] })),
      event('response.output_text.done', { item_id: 'msg_fake', output_index: index, content_index: 0, text: x.text, logprobs: [] }),
      event('response.content_part.done', { item_id: 'msg_fake', output_index: index, content_index: 0, part: textPart }),
      event('response.output_item.done', { output_index: index, item: message }),
    );
    index++;
  }
  if (call) {
    const half = Math.floor(call.arguments.length / 2);
    events.push(
      event('response.output_item.added', { output_index: index, item: { ...call, status: 'in_progress', arguments: '' } }),
      event('response.function_call_arguments.delta', { item_id: 'fc_fake', output_index: index, delta: call.arguments.slice(0, half) }),
      event('response.function_call_arguments.delta', { item_id: 'fc_fake', output_index: index, delta: call.arguments.slice(half) }),
      event('response.function_call_arguments.done', { item_id: 'fc_fake', output_index: index, arguments: call.arguments }),
      event('response.output_item.done', { output_index: index, item: call }),
    );
  }
  events.push(event('response.completed', { response: response('completed', output, true) }));
  return writeEvents(x, events);
}

function openAiEmbeddings(x: Exchange): void {
  const inputs = Array.isArray(x.body.input) ? x.body.input : [x.body.input];
  sendJson(x.res, 200, {
    object: 'list',
    data: inputs.map((_, index) => ({ object: 'embedding', index, embedding: [0.1 * (index + 1), 0.2, -0.3] })),
    model: x.body.model,
    ...(x.script.omitUsage ? {} : { usage: { prompt_tokens: x.usage.inputTokens, total_tokens: x.usage.inputTokens } }),
  });
}

function anthropicMessages(x: Exchange): Promise<void> | void {
  const model = String(x.body.model);
  const tool = x.script.toolCall;
  const usage = (outputTokens: number): Record<string, number> | undefined =>
    x.script.omitUsage
      ? undefined
      : {
          input_tokens: x.usage.inputTokens,
          cache_creation_input_tokens: x.usage.cacheWriteTokens,
          cache_read_input_tokens: x.usage.cachedTokens,
          output_tokens: outputTokens,
        };
  const stopReason = tool ? 'tool_use' : 'end_turn';
  if (!x.body.stream) {
    return sendJson(x.res, 200, {
      id: 'msg_fake',
      type: 'message',
      role: 'assistant',
      model,
      content: [
        ...(x.text ? [{ type: 'text', text: x.text }] : []),
        ...(tool ? [{ type: 'tool_use', id: tool.id, name: tool.name, input: tool.input }] : []),
      ],
      stop_reason: stopReason,
      stop_sequence: null,
      usage: usage(x.usage.outputTokens),
    });
  }
  const event = (type: string, data: Record<string, unknown>): string =>
    `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
  const toolJson = tool ? JSON.stringify(tool.input) : '';
  const half = Math.floor(toolJson.length / 2);
  const events = [
    event('message_start', {
      message: { id: 'msg_fake', type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: usage(1) },
    }),
    event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
    event('ping', {}),
    ...pieces(x.text).map((p) => event('content_block_delta', { index: 0, delta: { type: 'text_delta', text: p } })),
    event('content_block_stop', { index: 0 }),
    ...(tool
      ? [
          event('content_block_start', { index: 1, content_block: { type: 'tool_use', id: tool.id, name: tool.name, input: {} } }),
          event('content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: toolJson.slice(0, half) } }),
          event('content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: toolJson.slice(half) } }),
          event('content_block_stop', { index: 1 }),
        ]
      : []),
    event('message_delta', {
      delta: { stop_reason: stopReason, stop_sequence: null },
      ...(x.script.omitUsage ? {} : { usage: { output_tokens: x.usage.outputTokens } }),
    }),
    event('message_stop', {}),
  ];
  return writeEvents(x, events);
}

/**
 * The fake's own token count of a Messages body (it has no Claude tokenizer): the UTF-8 bytes of the system
 * prompt, messages and tools as JSON ÷ 3.5, rounded up. Deliberately unlike the gateway's o200k count, so a
 * test can tell which one answered.
 */
export function fakeAnthropicTokenCount(body: Record<string, unknown>): number {
  const read = JSON.stringify([body.system ?? null, body.messages ?? null, body.tools ?? null]);
  return Math.ceil(Buffer.byteLength(read, 'utf8') / 3.5);
}

function anthropicCountTokens(x: Exchange): void {
  for (const field of ['max_tokens', 'stream']) {
    if (field in x.body) {
      return sendJson(x.res, 400, {
        type: 'error',
        error: { type: 'invalid_request_error', message: `${field}: Extra inputs are not permitted` },
      });
    }
  }
  if (typeof x.body.model !== 'string' || !Array.isArray(x.body.messages)) {
    return sendJson(x.res, 400, { type: 'error', error: { type: 'invalid_request_error', message: 'model: Field required' } });
  }
  sendJson(x.res, 200, { input_tokens: fakeAnthropicTokenCount(x.body) });
}

/** The credential a request carried, as the real APIs read it. */
function credentialOf(x: Exchange): string {
  const auth = x.req.headers.authorization;
  if (typeof auth === 'string' && auth.startsWith('Bearer ')) return auth.slice('Bearer '.length);
  const apiKey = x.req.headers['x-api-key'];
  return typeof apiKey === 'string' ? apiKey : '';
}

function sendError(x: Exchange, status: number, anthropic: boolean): void {
  const message = x.script.errorMessage ?? 'scripted failure';
  const headers: Record<string, string> = {
    ...(x.script.retryAfter ? { 'retry-after': x.script.retryAfter } : {}),
    ...x.script.errorHeaders?.(credentialOf(x)),
  };
  if (x.script.errorBody) {
    const custom = x.script.errorBody(credentialOf(x));
    x.res.writeHead(status, { 'content-type': typeof custom === 'string' ? 'text/plain' : 'application/json', ...headers });
    x.res.end(typeof custom === 'string' ? custom : JSON.stringify(custom));
    return;
  }
  const body = anthropic
    ? { type: 'error', error: { type: status === 400 ? 'invalid_request_error' : 'api_error', message } }
    : { error: { message, type: status === 400 ? 'invalid_request_error' : 'server_error', param: null, code: null } };
  sendJson(x.res, status, body, headers);
}

const ROUTES: Readonly<Record<string, { anthropic: boolean; handle: (x: Exchange) => Promise<void> | void }>> = {
  'POST /v1/chat/completions': { anthropic: false, handle: openAiChat },
  'POST /v1/embeddings': { anthropic: false, handle: openAiEmbeddings },
  'POST /v1/responses': { anthropic: false, handle: openAiResponses },
  'POST /v1/messages': { anthropic: true, handle: anthropicMessages },
  'POST /v1/messages/count_tokens': { anthropic: true, handle: anthropicCountTokens },
  'GET /v1/models': {
    anthropic: false,
    handle: (x) => sendJson(x.res, 200, { object: 'list', data: [{ id: 'gpt-fake', object: 'model', owned_by: 'fake' }] }),
  },
};

/** Starts the fake on 127.0.0.1 and a free port. Close it in afterAll. */
export async function startFakeUpstream(): Promise<FakeUpstream> {
  const requests: RecordedRequest[] = [];
  let current: FakeScript | ((body: Record<string, unknown>) => FakeScript) = {};

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = rawBody ? JSON.parse(rawBody) : undefined;
      } catch {
        body = undefined;
      }
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(req.headers)) {
        if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
      }
      const path = (req.url ?? '/').split('?')[0];
      requests.push({ method: req.method ?? 'GET', path, headers, body, rawBody });
      const script = typeof current === 'function' ? current((body ?? {}) as Record<string, unknown>) : current;
      void respond(req, res, path, (body ?? {}) as Record<string, unknown>, script);
    });
  });

  async function respond(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    body: Record<string, unknown>,
    script: FakeScript,
  ): Promise<void> {
    const route = ROUTES[`${req.method} ${path}`];
    if (!route) return sendJson(res, 404, { error: { message: `no route ${req.method} ${path}`, type: 'not_found' } });
    if (script.hang) return;
    if (script.delayMs) await new Promise((resolve) => setTimeout(resolve, script.delayMs));
    if (script.until) await script.until.catch(() => undefined);
    if (res.destroyed) return;
    const exchange: Exchange = {
      req,
      res,
      body,
      script,
      usage: { ...DEFAULT_USAGE, ...script.usage },
      text: script.replyText ?? DEFAULT_TEXT,
    };
    if (script.status !== undefined && script.status >= 300) return sendError(exchange, script.status, route.anthropic);
    if (script.cutBodyAt !== undefined && !body.stream) {
      const cut = script.cutBodyAt;
      const end = res.end.bind(res);
      // The handler's JSON, cut: whatever it ends the response with is sent only up to `cut` characters.
      res.end = ((chunk?: unknown, ...rest: unknown[]) =>
        typeof chunk === 'string' ? end(chunk.slice(0, cut), ...(rest as [])) : end(chunk as never, ...(rest as []))) as typeof res.end;
    }
    await route.handle(exchange);
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;

  return {
    openaiBaseUrl: `${origin}/v1`,
    anthropicBaseUrl: origin,
    requests,
    script(script) {
      current = script;
    },
    scriptEach(next) {
      current = next;
    },
    reset() {
      requests.length = 0;
      current = {};
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    },
  };
}
