/**
 * A fake Amazon Bedrock Runtime on a real HTTP/2 server (node:http2, cleartext, 127.0.0.1, a free port): the real
 * AWS SDK client with its default HTTP/2 handler, pointed at it with `endpoint`, sends signed requests over HTTP/2 and reads the answers exactly as it reads
 * Bedrock's, including ConverseStream's binary event stream (`application/vnd.amazon.eventstream`, encoded with
 * the SDK's own codec) and the exceptions Bedrock delivers inside it (`:message-type: exception`).
 *
 *   POST /model/{modelId}/converse         → Converse JSON (or the scripted error status with `x-amzn-errortype`)
 *   POST /model/{modelId}/converse-stream  → messageStart, contentBlockDelta…, contentBlockStop, messageStop,
 *                                            metadata (usage) — or cut / interrupted by an exception as scripted
 */
import { EventStreamCodec } from '@smithy/core/event-streams';
import { createServer, type Http2ServerRequest as IncomingMessage, type Http2ServerResponse as ServerResponse } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';

const utf8 = {
  encode: (s: string) => new TextEncoder().encode(s),
  decode: (b: Uint8Array) => new TextDecoder().decode(b),
};
const codec = new EventStreamCodec(utf8.decode, utf8.encode);

/** The exceptions ConverseStream sends inside the stream, with the HTTP status Bedrock gives each. */
export const BEDROCK_STREAM_EXCEPTIONS = {
  modelStreamErrorException: 424,
  throttlingException: 429,
  internalServerException: 500,
  validationException: 400,
  serviceUnavailableException: 503,
} as const;
export type BedrockStreamException = keyof typeof BEDROCK_STREAM_EXCEPTIONS;

export interface FakeBedrockScript {
  /** @default 'Hello from fake Bedrock.' */
  readonly replyText?: string;
  /** @default { inputTokens: 20, outputTokens: 6 } */
  readonly usage?: { readonly inputTokens: number; readonly outputTokens: number };
  /** Streams: after this many events (0: before messageStart), send `exception` and end. */
  readonly exceptionAt?: number;
  readonly exception?: { readonly type: BedrockStreamException; readonly message: string };
  /** Streams: send only this many events, then end the response cleanly (a cut stream: no messageStop). */
  readonly endAfterEvents?: number;
  /** Converse (non-stream): answer without `output.message` (an empty answer). */
  readonly noMessage?: boolean;
}

export interface FakeBedrock {
  /** `http://127.0.0.1:PORT`, the client's `endpoint`. */
  readonly endpoint: string;
  /** A Bedrock Runtime client on this fake, with test credentials (the fake does not check signatures); closed with the fake. */
  client(): BedrockRuntimeClient;
  /** Every request: its path and JSON body. */
  readonly requests: { path: string; body: Record<string, unknown> }[];
  script(script: FakeBedrockScript): void;
  /** A script per request, from its model id. */
  scriptEach(next: (modelId: string) => FakeBedrockScript): void;
  reset(): void;
  close(): Promise<void>;
}

function eventMessage(type: string, body: unknown): Uint8Array {
  return codec.encode({
    headers: {
      ':event-type': { type: 'string', value: type },
      ':content-type': { type: 'string', value: 'application/json' },
      ':message-type': { type: 'string', value: 'event' },
    },
    body: utf8.encode(JSON.stringify(body)),
  });
}

function exceptionMessage(type: string, message: string): Uint8Array {
  return codec.encode({
    headers: {
      ':exception-type': { type: 'string', value: type },
      ':content-type': { type: 'string', value: 'application/json' },
      ':message-type': { type: 'string', value: 'exception' },
    },
    body: utf8.encode(JSON.stringify({ message })),
  });
}

/** ConverseStream's events for a text answer, in Bedrock's order. */
function streamEvents(script: FakeBedrockScript): Uint8Array[] {
  const text = script.replyText ?? 'Hello from fake Bedrock.';
  const usage = script.usage ?? { inputTokens: 20, outputTokens: 6 };
  const pieces = text.match(/\s*\S+/g) ?? [];
  return [
    eventMessage('messageStart', { role: 'assistant' }),
    ...pieces.map((p) => eventMessage('contentBlockDelta', { contentBlockIndex: 0, delta: { text: p } })),
    eventMessage('contentBlockStop', { contentBlockIndex: 0 }),
    eventMessage('messageStop', { stopReason: 'end_turn' }),
    eventMessage('metadata', {
      usage: { inputTokens: usage.inputTokens, outputTokens: usage.outputTokens, totalTokens: usage.inputTokens + usage.outputTokens },
      metrics: { latencyMs: 5 },
    }),
  ];
}

async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const raw = Buffer.concat(chunks).toString('utf8');
  try {
    return raw ? (JSON.parse(raw) as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

export async function startFakeBedrock(): Promise<FakeBedrock> {
  let next: (modelId: string) => FakeBedrockScript = () => ({});
  const requests: { path: string; body: Record<string, unknown> }[] = [];
  const clients: BedrockRuntimeClient[] = [];

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = req.url ?? '';
    const body = await readBody(req);
    requests.push({ path, body });
    const m = /^\/model\/([^/]+)\/(converse|converse-stream)$/.exec(path);
    if (!m) {
      res.writeHead(404, { 'content-type': 'application/json', 'x-amzn-errortype': 'UnknownOperationException' });
      res.end('{}');
      return;
    }
    const modelId = decodeURIComponent(m[1]!);
    const script = next(modelId);
    if (m[2] === 'converse') {
      const usage = script.usage ?? { inputTokens: 20, outputTokens: 6 };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          ...(script.noMessage ? { output: {} } : { output: { message: { role: 'assistant', content: [{ text: script.replyText ?? 'Hello from fake Bedrock.' }] } } }),
          stopReason: 'end_turn',
          usage: { ...usage, totalTokens: usage.inputTokens + usage.outputTokens },
          metrics: { latencyMs: 5 },
        }),
      );
      return;
    }
    res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream', 'x-amzn-requestid': 'fake-request' });
    let events = streamEvents(script);
    if (script.endAfterEvents !== undefined) events = events.slice(0, script.endAfterEvents);
    if (script.exception) {
      const at = script.exceptionAt ?? 0;
      events = [...events.slice(0, at), exceptionMessage(script.exception.type, script.exception.message)];
    }
    for (const e of events) {
      res.write(e);
      // One event per TCP write, as Bedrock sends them.
      await new Promise((r) => setImmediate(r));
    }
    res.end();
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  const sessions = new Set<import('node:http2').ServerHttp2Session>();
  server.on('session', (session) => {
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    endpoint,
    requests,
    client() {
      const client = new BedrockRuntimeClient({ region: 'us-east-1', endpoint, credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'test-secret' }, maxAttempts: 1 });
      clients.push(client);
      return client;
    },
    script(s) {
      next = () => s;
    },
    scriptEach(f) {
      next = f;
    },
    reset() {
      requests.length = 0;
      next = () => ({});
    },
    async close() {
      for (const client of clients) client.destroy();
      for (const session of sessions) session.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
