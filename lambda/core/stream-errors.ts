/**
 * Errors inside a 200 stream: OpenAI chat (`data: {"error":{…}}`), Anthropic (`event: error`, e.g.
 * `overloaded_error`), Responses (`response.failed`, `error`). Such a stream is a failure, not an answer: never
 * `ok`, never cached, and, when nothing reached the caller yet, a provider error the caller sees in its dialect
 * (and a fallback may answer instead). Also which events carry nothing for the caller yet (the preamble a
 * provider sends before its first token), so the pipeline can hold them back until it knows the stream works.
 *
 * {@link StreamWatch} follows a stream event by event with both questions. The provider adapter that parses a
 * stream anyway (for its usage) feeds it the events it relays, so each chunk is parsed once; the pipeline
 * parses a stream itself only when the provider brings no watch.
 */
import type { SseEvent } from '../providers/sse';

export interface StreamError {
  readonly message: string;
  /** The provider's error type or code (`server_error`, `overloaded_error`, …). */
  readonly type: string;
  /** The HTTP status the provider uses for this error when it can say so before the 200. */
  readonly status: number;
}

const STATUS_OF: Readonly<Record<string, number>> = {
  overloaded_error: 529,
  api_error: 500,
  server_error: 500,
  rate_limit_error: 429,
  rate_limit_exceeded: 429,
  timeout: 504,
  invalid_request_error: 400,
  context_length_exceeded: 400,
};

function parse(data: string): Record<string, unknown> | undefined {
  if (!data.startsWith('{')) return undefined;
  try {
    const v = JSON.parse(data) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function errorFrom(raw: unknown): StreamError {
  const e = raw && typeof raw === 'object' ? (raw as Record<string, unknown>) : {};
  const type = String((e.type && e.type !== 'error' ? e.type : undefined) ?? e.code ?? 'server_error');
  const code = typeof e.code === 'string' ? e.code : undefined;
  const message = typeof e.message === 'string' && e.message ? e.message : 'The provider failed while streaming.';
  const status = STATUS_OF[type] ?? (code ? STATUS_OF[code] : undefined) ?? 502;
  return { message, type, status };
}

/** The error an event reports, if it is an error event of any provider's stream. */
export function streamErrorOf(event: SseEvent): StreamError | undefined {
  return errorOfParsed(event, parse(event.data));
}

function errorOfParsed(event: SseEvent, body: Record<string, unknown> | undefined): StreamError | undefined {
  if (event.event === 'error') return errorFrom(body?.error ?? body);
  if (!body) return undefined;
  if (body.type === 'error') return errorFrom(body.error ?? body);
  if (body.type === 'response.failed') {
    const response = body.response as Record<string, unknown> | undefined;
    return errorFrom(response?.error);
  }
  if (body.error && typeof body.error === 'object' && !('choices' in body) && !('type' in body)) return errorFrom(body.error);
  return undefined;
}

const PREAMBLE = new Set([
  'message_start',
  'ping',
  'response.created',
  'response.in_progress',
  'response.queued',
  'response.output_item.added',
  'response.content_part.added',
]);

/** Whether an event carries nothing for the caller yet (no text, no tool call): safe to hold back. */
export function isPreamble(event: SseEvent): boolean {
  if (event.data === '') return true;
  return preambleOfParsed(event, parse(event.data));
}

function preambleOfParsed(event: SseEvent, body: Record<string, unknown> | undefined): boolean {
  if (event.data === '') return true;
  if (!body) return false;
  const type = typeof body.type === 'string' ? body.type : event.event;
  if (type && PREAMBLE.has(type)) return true;
  if (type === 'content_block_start') {
    const block = body.content_block as Record<string, unknown> | undefined;
    return block?.type === 'text' && !block.text;
  }
  // OpenAI chat: a chunk with only the role (and empty content) comes before the first token.
  if (body.object === 'chat.completion.chunk' && Array.isArray(body.choices)) {
    return body.choices.every((c: unknown) => {
      const choice = c as { delta?: Record<string, unknown>; finish_reason?: unknown };
      const d = choice.delta ?? {};
      return !choice.finish_reason && !d.content && !d.tool_calls && !d.refusal && !d.function_call;
    }) && !body.usage;
  }
  return false;
}

/**
 * Whether an event can be an error event at all (see {@link streamErrorOf}), from its text: every error shape
 * has a key or a type `"error"`, or the type `response.failed`. Output events (the bulk of a stream) fail this
 * test and are never parsed once output has started.
 */
function mayBeError(event: SseEvent): boolean {
  return event.event === 'error' || event.data.includes('"error"') || event.data.includes('response.failed');
}

/**
 * How a stream has gone so far, from its events in order: whether output started, an error event before any
 * output (the stream is then a provider error the caller can be told of in its dialect), or one after it (the
 * stream failed after reaching the caller). Each event's JSON is parsed at most once, and only while output has
 * not started or when its text can be an error.
 */
export class StreamWatch {
  /** An event carrying output (not preamble, not an error) was seen. */
  started = false;
  /** The first error event, when it came before any output. */
  early: StreamError | undefined;
  /** An error event came after output started. */
  failedAfterStart = false;

  /** Takes the next event of the stream, as the caller receives it. */
  observe(event: SseEvent): void {
    if (this.early !== undefined || this.failedAfterStart) return;
    if (this.started) {
      if (mayBeError(event) && streamErrorOf(event)) this.failedAfterStart = true;
      return;
    }
    const body = parse(event.data);
    const error = errorOfParsed(event, body);
    if (error) this.early = error;
    else if (!preambleOfParsed(event, body)) this.started = true;
  }
}
