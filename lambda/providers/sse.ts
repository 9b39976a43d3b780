/**
 * Server-sent events (the `text/event-stream` format every provider streams in): an incremental parser that
 * copes with bytes split anywhere (mid-line, mid-UTF-8 character, between CR and LF), and an encoder.
 * Follows the WHATWG event-stream rules: lines end in LF, CR or CRLF; `:` starts a comment; `data` lines
 * join with LF; an event is dispatched on a blank line; `retry` is ignored.
 */

/** One dispatched event. `event` is absent when the stream named none (the default `message` type). */
export interface SseEvent {
  readonly event?: string;
  readonly data: string;
  readonly id?: string;
}

/**
 * A push parser: feed it chunks as they arrive and it returns the events each chunk completed. Keep one per
 * stream; it holds the partial line and partial event between chunks.
 */
export class SseParser {
  private readonly decoder = new TextDecoder('utf-8');
  private buffer = '';
  /** The previous chunk ended in CR, so an LF starting the next chunk belongs to the same line ending. */
  private skipLeadingLf = false;
  private eventType: string | undefined;
  private dataLines: string[] = [];
  private lastId: string | undefined;

  /**
   * Whether everything pushed so far is accounted for by the events returned: no partial line, no event
   * waiting for its blank line, no CR whose LF may follow. (A chunk that ended in LF holds no partial character.)
   */
  get idle(): boolean {
    return this.buffer === '' && this.dataLines.length === 0 && this.eventType === undefined && !this.skipLeadingLf;
  }

  /** Parses one chunk; returns the events it completed, in order. */
  push(chunk: Uint8Array | string): SseEvent[] {
    let text = typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true });
    if (this.skipLeadingLf && text.length > 0) {
      if (text.startsWith('\n')) text = text.slice(1);
      this.skipLeadingLf = false;
    }
    this.buffer += text;
    return this.drainLines();
  }

  /**
   * Ends the stream. An event still missing its blank line is dispatched when it has data (lenient: some
   * upstreams end without the final blank line, and the last event carries the usage).
   */
  end(): SseEvent[] {
    this.buffer += this.decoder.decode();
    const events = this.drainLines();
    if (this.buffer.length > 0) {
      this.processLine(this.buffer, events);
      this.buffer = '';
    }
    const last = this.dispatch();
    if (last) events.push(last);
    return events;
  }

  private drainLines(): SseEvent[] {
    const events: SseEvent[] = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const ch = this.buffer.charCodeAt(i);
      if (ch !== 0x0a && ch !== 0x0d) continue;
      this.processLine(this.buffer.slice(start, i), events);
      if (ch === 0x0d) {
        if (i + 1 < this.buffer.length) {
          if (this.buffer.charCodeAt(i + 1) === 0x0a) i++;
        } else {
          this.skipLeadingLf = true;
        }
      }
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  private processLine(line: string, events: SseEvent[]): void {
    if (line === '') {
      const event = this.dispatch();
      if (event) events.push(event);
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.dataLines.push(value);
    else if (field === 'event') this.eventType = value;
    else if (field === 'id' && !value.includes('\0')) this.lastId = value;
  }

  private dispatch(): SseEvent | undefined {
    const { dataLines, eventType, lastId } = this;
    this.dataLines = [];
    this.eventType = undefined;
    if (dataLines.length === 0) return undefined;
    return {
      data: dataLines.join('\n'),
      ...(eventType ? { event: eventType } : {}),
      ...(lastId !== undefined ? { id: lastId } : {}),
    };
  }
}

/** Parses a byte stream into events as they complete. */
export async function* parseSse(source: AsyncIterable<Uint8Array | string>): AsyncGenerator<SseEvent> {
  const parser = new SseParser();
  for await (const chunk of source) yield* parser.push(chunk);
  yield* parser.end();
}

const encoder = new TextEncoder();

/** Formats one event as text, ending with the blank line; multi-line data becomes several `data:` lines. */
export function formatSse(event: { readonly event?: string; readonly data: string }): string {
  const head = event.event ? `event: ${event.event}\n` : '';
  const body = event.data
    .split(/\r\n|\r|\n/)
    .map((line) => `data: ${line}\n`)
    .join('');
  return `${head}${body}\n`;
}

/** Encodes one event as UTF-8 bytes (see {@link formatSse}). */
export function encodeSse(event: { readonly event?: string; readonly data: string }): Uint8Array {
  return encoder.encode(formatSse(event));
}

/** Encodes a JSON payload as a `data:` event, optionally named. */
export function encodeSseJson(data: unknown, options: { readonly event?: string } = {}): Uint8Array {
  return encodeSse({ event: options.event, data: JSON.stringify(data) });
}
