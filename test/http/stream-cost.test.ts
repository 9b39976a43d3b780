/**
 * The cost annotation of streams (lambda/http/stream-cost.ts): chunks of whole, unchanged events pass as they
 * came (the same bytes, not re-encoded); the usage event gets its `tollgate` field; events split across chunks
 * arrive whole. Whatever the chunking, the caller parses the same events.
 */
import { withStreamCost } from '../../lambda/http/stream-cost';
import { SseParser, type SseEvent } from '../../lambda/providers/sse';
import { PriceBook } from '../../lambda/core/pricing';

const enc = new TextEncoder();
const model = new PriceBook({ providers: ['openai'] }).resolve('gpt-4o-mini');

const content = (i: number) => `data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"w${i}"}}],"usage":null}\n\n`;
const usage = 'data: {"object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}\n\n';
const done = 'data: [DONE]\n\n';

async function run(chunks: readonly Uint8Array[]): Promise<Uint8Array[]> {
  async function* source() {
    for (const c of chunks) yield c;
  }
  const out: Uint8Array[] = [];
  for await (const c of withStreamCost(source(), { dialect: 'chat', model, requestId: 'req_1' })) out.push(c);
  return out;
}

function eventsOf(chunks: readonly Uint8Array[]): SseEvent[] {
  const p = new SseParser();
  return [...chunks.flatMap((c) => p.push(c)), ...p.end()];
}

test('chunks of whole unchanged events pass through as the same bytes; the usage event is annotated', async () => {
  const chunks = [content(0), content(1) + content(2), usage, done].map((s) => enc.encode(s));
  const out = await run(chunks);
  expect(out[0]).toBe(chunks[0]);
  expect(out[1]).toBe(chunks[1]);
  expect(out.at(-1)).toBe(chunks[3]);
  const events = eventsOf(out);
  expect(events).toHaveLength(5);
  const annotated = JSON.parse(events[3]!.data) as { tollgate?: { cost_usd: string; request_id: string } };
  expect(annotated.tollgate?.request_id).toBe('req_1');
  expect(Number(annotated.tollgate?.cost_usd)).toBeGreaterThan(0);
});

test('however the bytes are cut (mid-event, mid-line, CRLF), the caller gets the same events', async () => {
  const text = [content(0), content(1), content(2).replace(/\n/g, '\r\n'), usage, done].join('');
  const whole = eventsOf(await run([enc.encode(text)]));
  const bytes = enc.encode(text);
  for (const size of [1, 3, 7, 20, 61, 100]) {
    const cut: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += size) cut.push(bytes.slice(i, i + size));
    expect(eventsOf(await run(cut))).toEqual(whole);
  }
  expect(whole.map((e) => e.data.includes('"tollgate"'))).toEqual([false, false, false, true, false]);
});
