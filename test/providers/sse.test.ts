import { encodeSse, parseSse, SseParser, type SseEvent } from '../../lambda/providers/sse';

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);

async function parseChunks(chunks: readonly Uint8Array[]): Promise<SseEvent[]> {
  async function* source(): AsyncGenerator<Uint8Array> {
    for (const chunk of chunks) yield chunk;
  }
  const out: SseEvent[] = [];
  for await (const event of parseSse(source())) out.push(event);
  return out;
}

/** Splits `data` into pieces at the given byte offsets. */
function splitAt(data: Uint8Array, offsets: readonly number[]): Uint8Array[] {
  const cuts = [0, ...offsets, data.length];
  return cuts.slice(1).map((end, i) => data.slice(cuts[i], end));
}

const SAMPLE =
  'event: message_start\r\ndata: {"type":"message_start","text":"héllo 👋"}\r\n\r\n' +
  ': keep-alive comment\n\n' +
  'data: line one\ndata: line two\n\n' +
  'event: ping\rdata: {}\r\r' +
  'data:no-space\n\n' +
  'data: [DONE]\n\n';

const EXPECTED: SseEvent[] = [
  { event: 'message_start', data: '{"type":"message_start","text":"héllo 👋"}' },
  { data: 'line one\nline two' },
  { event: 'ping', data: '{}' },
  { data: 'no-space' },
  { data: '[DONE]' },
];

describe('parseSse', () => {
  it('when the stream arrives in one chunk, it yields every event with its type and joined data lines', async () => {
    expect(await parseChunks([bytes(SAMPLE)])).toEqual(EXPECTED);
  });

  it('when the stream is split at every possible byte (mid-line, mid-UTF-8 character, between CR and LF), it yields the same events', async () => {
    const data = bytes(SAMPLE);
    for (let cut = 1; cut < data.length; cut++) {
      expect(await parseChunks(splitAt(data, [cut]))).toEqual(EXPECTED);
    }
  });

  it('when the stream arrives one byte at a time, it yields the same events', async () => {
    const data = bytes(SAMPLE);
    const single = Array.from({ length: data.length - 1 }, (_, i) => i + 1);
    expect(await parseChunks(splitAt(data, single))).toEqual(EXPECTED);
  });

  it('when a CRLF is split so the LF starts the next chunk, it does not see an extra blank line', async () => {
    const events = await parseChunks([bytes('data: a\r'), bytes('\ndata: b\r'), bytes('\n\r\n')]);
    expect(events).toEqual([{ data: 'a\nb' }]);
  });

  it('when only comments and blank lines arrive, it yields nothing', async () => {
    expect(await parseChunks([bytes(': ping\n\n:another\r\n\r\n\n')])).toEqual([]);
  });

  it('when the last event lacks its closing blank line, it still yields it at the end', async () => {
    expect(await parseChunks([bytes('data: {"usage":1}')])).toEqual([{ data: '{"usage":1}' }]);
  });

  it('when an event names an id, it carries the id', async () => {
    expect(await parseChunks([bytes('id: 7\ndata: x\n\n')])).toEqual([{ id: '7', data: 'x' }]);
  });
});

describe('SseParser', () => {
  it('when fed incrementally, it returns each event from the push that completes it', () => {
    const parser = new SseParser();
    expect(parser.push(bytes('data: one\n'))).toEqual([]);
    expect(parser.push(bytes('\ndata: tw'))).toEqual([{ data: 'one' }]);
    expect(parser.push(bytes('o\n\n'))).toEqual([{ data: 'two' }]);
    expect(parser.end()).toEqual([]);
  });
});

describe('encodeSse', () => {
  it('when given multi-line data and a type, it writes one data line per line and parses back to the same event', async () => {
    const event = { event: 'delta', data: 'first\nsecond' };
    const encoded = encodeSse(event);
    expect(new TextDecoder().decode(encoded)).toBe('event: delta\ndata: first\ndata: second\n\n');
    expect(await parseChunks([encoded])).toEqual([event]);
  });
});
