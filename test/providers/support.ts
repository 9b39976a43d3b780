/** Helpers shared by the provider tests. */
import type { ProviderCallContext, ProviderResult, StreamResult } from '../../lambda/providers/contract';
import { parseSse, type SseEvent } from '../../lambda/providers/sse';

/** A call context with a fresh, never-aborted signal unless one is given. */
export function callContext(overrides: Partial<ProviderCallContext> = {}): ProviderCallContext {
  return { requestId: 'req-1', signal: new AbortController().signal, ...overrides };
}

export function asStream(result: ProviderResult): StreamResult {
  if (result.kind !== 'stream') throw new Error(`expected a stream, got ${result.kind}`);
  return result;
}

export function asJson(result: ProviderResult): Record<string, unknown> {
  if (result.kind !== 'json') throw new Error(`expected json, got ${result.kind}`);
  return result.body as Record<string, unknown>;
}

/** Reads a stream to the end and returns its text. */
export async function readAll(body: AsyncIterable<Uint8Array>): Promise<string> {
  const decoder = new TextDecoder();
  let text = '';
  for await (const chunk of body) text += decoder.decode(chunk, { stream: true });
  return text + decoder.decode();
}

/** Parses SSE text into events. */
export async function eventsOf(text: string): Promise<SseEvent[]> {
  const out: SseEvent[] = [];
  async function* one(): AsyncGenerator<Uint8Array> {
    yield new TextEncoder().encode(text);
  }
  for await (const event of parseSse(one())) out.push(event);
  return out;
}

/** The JSON payloads of an SSE text, `[DONE]` kept as the string. */
export async function payloadsOf(text: string): Promise<unknown[]> {
  return (await eventsOf(text)).map((e) => (e.data === '[DONE]' ? '[DONE]' : JSON.parse(e.data)));
}

/** The text an OpenAI chunk stream spells out. */
export function chunkText(payloads: readonly unknown[]): string {
  return payloads
    .map((p) => {
      const choices = (p as { choices?: { delta?: { content?: string } }[] }).choices;
      return choices?.[0]?.delta?.content ?? '';
    })
    .join('');
}
