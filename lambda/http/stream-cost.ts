/**
 * Cost on streams: the event that carries a stream's final usage gets one more field, `tollgate`, with the
 * call's cost priced from that usage exactly as settlement prices it (clients ignore unknown fields):
 *
 * - OpenAI chat: the usage chunk (sent when the caller asks `stream_options.include_usage`)
 * - Anthropic messages: each `message_delta` (cumulative usage; the last one is final)
 * - Responses: `response.completed` / `response.incomplete` / `response.failed`
 *
 *   {"type":"message_delta", …, "usage":{…}, "tollgate":{"cost_usd":"0.000123","request_id":"req_…"}}
 *
 * Nothing is held back. A chunk that holds whole events only, none of them changed, passes as it came (most
 * of a stream: no copy, no re-encoding); otherwise its events are re-framed one by one as they complete.
 */
import { formatUsd } from '../core/money';
import { costOf, type ResolvedModel } from '../core/pricing';
import type { TokenUsage } from '../core/types';
import { AnthropicStreamUsage } from '../providers/anthropic/usage';
import { usageFromOpenAi } from '../providers/openai/chat-format';
import { usageFromResponses } from '../providers/responses/response';
import { encodeSse, SseParser, type SseEvent } from '../providers/sse';

/** Which wire format a stream is in. */
export type StreamDialect = 'chat' | 'messages' | 'responses';

const RESPONSES_FINAL = new Set(['response.completed', 'response.incomplete', 'response.failed']);

/** A usage object (not the `"usage": null` OpenAI puts in every chunk of a stream that asked for usage). */
const HAS_USAGE = /"usage"\s*:\s*\{/;

/** Returns the usage an event reports as final (or cumulative), undefined for the others. */
type UsageReader = (event: Record<string, unknown>) => TokenUsage | undefined;

function readerFor(dialect: StreamDialect): UsageReader {
  switch (dialect) {
    case 'chat':
      return (e) => (typeof e.usage === 'object' && e.usage !== null ? usageFromOpenAi(e.usage) : undefined);
    case 'messages': {
      const usage = new AnthropicStreamUsage();
      return (e) => {
        usage.observe(e);
        return e.type === 'message_delta' ? usage.current() : undefined;
      };
    }
    case 'responses':
      return (e) =>
        typeof e.type === 'string' && RESPONSES_FINAL.has(e.type)
          ? usageFromResponses((e.response as { usage?: unknown } | undefined)?.usage)
          : undefined;
  }
}

/** Adds the call's cost to the stream's usage event(s); every other event passes unchanged. */
export async function* withStreamCost(
  body: AsyncIterable<Uint8Array>,
  options: {
    readonly dialect: StreamDialect;
    readonly model: ResolvedModel;
    readonly requestId: string;
    /** What the call cost when it is not the usage's price: a response-cache hit costs nothing. */
    readonly costMicros?: number;
  },
): AsyncGenerator<Uint8Array> {
  const read = readerFor(options.dialect);
  const annotate = (event: SseEvent): SseEvent => {
    if (!HAS_USAGE.test(event.data)) return event;
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(event.data) as Record<string, unknown>;
    } catch {
      return event;
    }
    if (typeof parsed !== 'object' || parsed === null) return event;
    const usage = read(parsed);
    if (!usage) return event;
    const tollgate = { cost_usd: formatUsd(options.costMicros ?? costOf(options.model.price, usage)), request_id: options.requestId };
    return { ...event, data: JSON.stringify({ ...parsed, tollgate }) };
  };
  const parser = new SseParser();
  // Whether the bytes so far ended on an event boundary (every byte before is in an event already sent).
  let aligned = true;
  for await (const chunk of body) {
    const events = parser.push(chunk);
    const out = events.map(annotate);
    const endsAligned = parser.idle && chunk.byteLength > 0 && chunk[chunk.byteLength - 1] === 0x0a;
    if (aligned && endsAligned && out.every((event, i) => event === events[i])) yield chunk;
    else for (const event of out) yield encodeSse(event);
    aligned = endsAligned;
  }
  for (const event of parser.end()) yield encodeSse(annotate(event));
}
