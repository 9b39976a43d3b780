/**
 * OpenAI's own Responses API (`POST {baseUrl}/responses`), passed through: the body goes up as given, the
 * answer comes back as sent, and usage is read from the response (or from the stream's final
 * `response.completed` / `response.incomplete` / `response.failed` event).
 */
import { StreamWatch } from '../../core/stream-errors';
import type { TokenUsage } from '../../core/types';
import type { StreamResult } from '../contract';
import { SseParser } from '../sse';
import { StreamEnd } from '../stream-end';
import { usageFromResponses } from '../responses/response';

/** Final events of a Responses stream; each carries the response with its usage. */
const FINAL_EVENTS = ['response.completed', 'response.incomplete', 'response.failed'];

/** Passes a Responses stream through untouched while reading the usage of its final event. */
export function relayResponsesStream(upstream: AsyncIterable<Uint8Array>, provider = 'openai'): StreamResult {
  let usage: TokenUsage | undefined;
  const watch = new StreamWatch();
  const end = new StreamEnd('responses', provider);
  const observe = (data: string): void => {
    if (!data.includes('"usage"') || !FINAL_EVENTS.some((type) => data.includes(`"${type}"`))) return;
    try {
      const event = JSON.parse(data) as { type?: unknown; response?: { usage?: unknown } };
      if (typeof event.type === 'string' && FINAL_EVENTS.includes(event.type)) usage = usageFromResponses(event.response?.usage) ?? usage;
    } catch {
      // Not JSON: the caller still gets the bytes.
    }
  };
  async function* relay(): AsyncGenerator<Uint8Array> {
    const parser = new SseParser();
    for await (const chunk of upstream) {
      for (const event of parser.push(chunk)) {
        watch.observe(event);
        end.observe(event);
        observe(event.data);
      }
      yield chunk;
    }
    for (const event of parser.end()) {
      watch.observe(event);
      end.observe(event);
      observe(event.data);
    }
    // Closed cleanly before its final event: the caller's stream ends with an `error` event (a cut answer).
    const last = end.finish();
    if (last) {
      for (const event of new SseParser().push(last)) watch.observe(event);
      yield last;
    }
  }
  return { kind: 'stream', body: relay(), usage: () => usage, watch, cut: () => end.cut() };
}
