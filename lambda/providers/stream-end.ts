/**
 * A stream the upstream closed cleanly before its end marker is a cut answer, not an answer: the adapters
 * that pass a stream through follow its events with a {@link StreamEnd} and, at the end of the upstream body,
 * end the caller's stream with the error event of its dialect (which core/stream-errors.ts reads as any other
 * error event: before output a provider error the caller gets in its dialect, and a fallback may answer;
 * after output, a stream that failed). The adapter's StreamResult then says `cut()`, and the call settles
 * `stream_incomplete`: never cached, charged at what the provider reported, else its reservation.
 *
 * End markers: OpenAI chat `data: [DONE]` (or a chunk with a `finish_reason`: the answer is whole, only
 * `[DONE]` and the usage chunk were lost, and `[DONE]` is added for the caller), Anthropic `message_stop`,
 * Responses `response.completed` / `response.incomplete` / `response.failed`; an error event ends a stream too.
 */
import type { SseEvent } from './sse';
import { encodeSseJson } from './sse';

export type StreamDialect = 'chat' | 'messages' | 'responses';

/** Error codes of the event a cut stream ends with (the same as Bedrock's, providers/bedrock/provider.ts). */
const CUT = 'upstream_stream_cut';
const EMPTY = 'upstream_empty_answer';

const MARKER: Readonly<Record<StreamDialect, string>> = {
  chat: 'data: [DONE]',
  messages: 'message_stop',
  responses: 'response.completed',
};

const RESPONSES_FINAL = new Set(['response.completed', 'response.incomplete', 'response.failed', 'error']);

/** Follows one stream's events (as its adapter relays them) for its end marker. */
export class StreamEnd {
  private events = 0;
  private ended = false;
  /** OpenAI chat: a chunk with a finish_reason came (the answer is whole without `[DONE]`). */
  private finished = false;
  private lastSequence = -1;
  private wasCut = false;

  constructor(
    private readonly dialect: StreamDialect,
    /** Names the upstream in the message, e.g. `openai`. */
    private readonly provider: string,
  ) {}

  /** Takes the next event of the stream. */
  observe(event: SseEvent): void {
    if (this.ended) return;
    this.events++;
    const data = event.data;
    if (this.dialect === 'chat') {
      if (data === '[DONE]') this.ended = true;
      // A string value right after the key: `"finish_reason":null` does not match; text that merely contains the
      // words is escaped (`\"finish_reason\":\"`) and does not either.
      else if (data.includes('"finish_reason":"')) this.finished = true;
      else if (data.startsWith('{"error"')) this.ended = true;
    } else if (this.dialect === 'messages') {
      const type = event.event ?? /^\{"type":"([a-z_]+)"/.exec(data)?.[1];
      if (type === 'message_stop' || type === 'error') this.ended = true;
    } else {
      const type = event.event ?? /^\{"type":"([a-z_.]+)"/.exec(data)?.[1];
      if (type && RESPONSES_FINAL.has(type)) this.ended = true;
      const seq = /"sequence_number":(\d+)/.exec(data);
      if (seq) this.lastSequence = Number(seq[1]);
    }
  }

  /** Whether the stream was cut (known once {@link finish} ran). */
  cut(): boolean {
    return this.wasCut;
  }

  /**
   * Called when the upstream body ended cleanly: what to send the caller after the last event. Nothing for a
   * whole stream; `[DONE]` for an OpenAI chat stream whose answer finished without it; else the error event
   * of a cut stream, and {@link cut} says so from now on.
   */
  finish(): Uint8Array | undefined {
    if (this.ended) return undefined;
    if (this.dialect === 'chat' && this.finished) return new TextEncoder().encode('data: [DONE]\n\n');
    this.wasCut = true;
    const empty = this.events === 0;
    const message = empty
      ? `upstream ${this.provider} answered an empty stream`
      : `upstream ${this.provider} ended the stream before ${MARKER[this.dialect]} (a cut answer)`;
    const code = empty ? EMPTY : CUT;
    if (this.dialect === 'chat') return encodeSseJson({ error: { message, type: 'server_error', param: null, code } });
    if (this.dialect === 'messages') return encodeSseJson({ type: 'error', error: { type: 'api_error', message } }, { event: 'error' });
    return encodeSseJson({ type: 'error', sequence_number: this.lastSequence + 1, code: 'server_error', message, param: null }, { event: 'error' });
  }
}
