/**
 * The stream watch (core/stream-errors.ts) and the pipeline's relay reading it (core/pipeline/stream-relay.ts):
 * the provider adapter that parses its stream anyway feeds the watch, so a stream's output events are parsed
 * once, not again by the pipeline. Same verdicts whether the watch comes from the adapter or the relay parses
 * the stream itself.
 */
import { systemClock } from '../../lambda/core/clock';
import { startStream, type StreamStart } from '../../lambda/core/pipeline/stream-relay';
import { StreamWatch } from '../../lambda/core/stream-errors';
import { relayMessagesStream } from '../../lambda/providers/anthropic/provider';
import type { StreamResult } from '../../lambda/providers/contract';
import { relayChatStream } from '../../lambda/providers/openai/provider';
import { SseParser } from '../../lambda/providers/sse';

const enc = new TextEncoder();

function chatChunk(delta: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  return `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o-mini', choices: [{ index: 0, delta, finish_reason: null }], ...extra })}\n\n`;
}

/** An OpenAI chat stream: the role chunk, n content chunks, the final chunk, [DONE]; each event its own network chunk. */
function chatStream(n: number, insertAfter?: { at: number; raw: string }): string[] {
  const out = [chatChunk({ role: 'assistant', content: '' })];
  for (let i = 0; i < n; i++) {
    out.push(chatChunk({ content: ` word${i}` }));
    if (insertAfter?.at === i) out.push(insertAfter.raw);
  }
  out.push('data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n');
  out.push('data: [DONE]\n\n');
  return out;
}

async function* bytes(parts: readonly string[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield enc.encode(p);
}

function relayOptions() {
  const abort = new AbortController();
  return { clock: systemClock, failureOutcome: () => 'upstream_error' as const, clientSignal: new AbortController().signal, abortUpstream: () => abort.abort() };
}

async function drain(start: StreamStart): Promise<string> {
  if (start.kind !== 'flowing') return start.kind;
  let text = '';
  for await (const chunk of start.body) text += new TextDecoder().decode(chunk);
  return `${start.ended().outcome}:${text.length}`;
}

/** Runs a provider result through the relay, with its watch or (withWatch false) parsing it in the relay. */
async function relayed(result: StreamResult, withWatch: boolean): Promise<{ start: StreamStart; ended: string }> {
  const start = await startStream(result.body, relayOptions(), withWatch ? result.watch : undefined);
  return { start, ended: await drain(start) };
}

afterEach(() => jest.restoreAllMocks());

test('the OpenAI adapter brings a watch, and with it each chunk is parsed once and no output event is JSON-parsed again', async () => {
  const n = 40;
  const parts = chatStream(n);
  const withWatch = relayChatStream(bytes(parts), { passUsageChunk: true });
  expect(withWatch.watch).toBeInstanceOf(StreamWatch);
  const push = jest.spyOn(SseParser.prototype, 'push');
  const parse = jest.spyOn(JSON, 'parse');
  const a = await relayed(withWatch, true);
  expect(push).toHaveBeenCalledTimes(parts.length);
  // The role chunk and the first content chunk (the preamble check); after that no event is parsed.
  expect(parse.mock.calls.length).toBeLessThanOrEqual(2);
  push.mockClear();
  // Without a watch the relay parses the stream a second time (a provider that brings none).
  const b = await relayed(relayChatStream(bytes(parts), { passUsageChunk: true }), false);
  expect(push).toHaveBeenCalledTimes(2 * parts.length);
  expect(a.ended).toBe(b.ended);
  expect(a.ended.startsWith('ok:')).toBe(true);
});

test('an error event before any output is a provider error, with and without the watch', async () => {
  const error = 'data: {"error":{"message":"overloaded","type":"server_error","code":null}}\n\n';
  for (const withWatch of [true, false]) {
    const parts = [chatChunk({ role: 'assistant', content: '' }), error];
    const { start } = await relayed(relayChatStream(bytes(parts), { passUsageChunk: true }), withWatch);
    expect(start).toMatchObject({ kind: 'provider_error', error: { type: 'server_error', status: 500, message: 'overloaded' } });
  }
});

test('an error event after output started ends the stream as upstream_error, with and without the watch', async () => {
  const error = 'data: {"error":{"message":"boom","type":"server_error","code":null}}\n\n';
  for (const withWatch of [true, false]) {
    const { start, ended } = await relayed(relayChatStream(bytes(chatStream(5, { at: 2, raw: error })), { passUsageChunk: true }), withWatch);
    expect(start.kind).toBe('flowing');
    expect(ended.startsWith('upstream_error:')).toBe(true);
  }
});

test('Anthropic: ping and message_start are held back; event: error after a delta fails the stream', async () => {
  const events = [
    'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"claude","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}\n\n',
    'event: ping\ndata: {"type":"ping"}\n\n',
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n',
  ];
  const early = await relayed(relayMessagesStream(bytes([...events, 'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'])), true);
  expect(early.start).toMatchObject({ kind: 'provider_error', error: { type: 'overloaded_error', status: 529 } });
  const delta = 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n';
  const late = await relayed(relayMessagesStream(bytes([...events, delta, 'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'])), true);
  expect(late.start.kind).toBe('flowing');
  expect(late.ended.startsWith('upstream_error:')).toBe(true);
});

test('a watch decides on the first error only, and text that merely mentions an error is output', () => {
  const w = new StreamWatch();
  w.observe({ data: JSON.stringify({ object: 'chat.completion.chunk', choices: [{ delta: { content: 'the word "error" in text' } }] }) });
  expect(w).toMatchObject({ started: true, early: undefined, failedAfterStart: false });
  w.observe({ event: 'error', data: '' });
  expect(w.failedAfterStart).toBe(true);
});
