/**
 * The HTTP client the providers POST to their upstreams with: node:http / node:https on keep-alive agents
 * shared by every provider (one pool per origin, as fetch's global dispatcher keeps).
 *
 * Not `fetch`: per call, fetch builds Request, Headers and Response objects, wraps the request body in a
 * WHATWG stream and an async generator (written as a head and then a body) and the response body in another
 * stream, and derives abort signals for each; on the bench machine that is about 1 ms of CPU per call, on the
 * request's critical path (`npm run bench:portkey -- --profile DIR` shows it). Here a call is one
 * `http.request` with the body written with its head, and the body comes back as the socket's chunks.
 *
 * What differs from fetch, on purpose: redirects are not followed (a 3xx is a non-2xx answer, as for any
 * other status: an API answering a POST with a redirect is misconfigured, and following it would resend the
 * credential); no `accept-encoding` is sent, so upstreams answer uncompressed (an answer compressed anyway
 * is decoded). Network failures, aborts and timeouts reject as fetch's did; upstream-http.ts turns them into
 * the same {@link UpstreamError}s.
 */
import { Agent as HttpAgent, type IncomingMessage, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';

/** An upstream's answer: status and headers at once, the body read once, either whole or chunk by chunk. */
export interface UpstreamResponse {
  readonly status: number;
  /** A 2xx status. */
  readonly ok: boolean;
  /** A response header's value (several joined by `, `), or undefined. Names are case-insensitive. */
  header(name: string): string | undefined;
  /** The whole body, decoded as UTF-8. Rejects when the connection fails before the end. */
  text(): Promise<string>;
  /** The body's chunks as they arrive. Rejects when the connection fails before the end. */
  chunks(): AsyncIterable<Uint8Array>;
  /** Stops reading and closes the connection (the upstream stops sending); safe to call more than once. */
  cancel(): void;
}

/** One POST. */
export interface UpstreamRequest {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  readonly signal: AbortSignal;
}

/**
 * Idle connections are closed after 4 s (fetch's default), or sooner when the upstream's `Keep-Alive`
 * header says it closes them sooner, so a request is rarely sent on a connection the upstream is closing.
 */
const IDLE_MS = 4_000;
const httpAgent = new HttpAgent({ keepAlive: true, timeout: IDLE_MS, scheduling: 'lifo' });
const httpsAgent = new HttpsAgent({ keepAlive: true, timeout: IDLE_MS, scheduling: 'lifo' });

/**
 * A POST that failed before its answer's head arrived. `requestSent`: the whole request had been written to
 * the connection, so the upstream may be working on it (and will bill it) although no answer came back.
 */
export class UpstreamRequestFailed extends Error {
  constructor(
    override readonly cause: unknown,
    readonly requestSent: boolean,
  ) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.name = 'UpstreamRequestFailed';
  }
}

/** The error a call rejects with when its signal aborts: the signal's reason, as fetch rejects. */
function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/** The body as sent, decoded when the upstream compressed it although nothing asked it to. */
function decodedBody(res: IncomingMessage): Readable {
  switch ((res.headers['content-encoding'] ?? '').trim().toLowerCase()) {
    case 'gzip':
    case 'x-gzip':
      return res.pipe(createGunzip());
    case 'deflate':
      return res.pipe(createInflate());
    case 'br':
      return res.pipe(createBrotliDecompress());
    default:
      return res;
  }
}

class NodeUpstreamResponse implements UpstreamResponse {
  readonly status: number;
  readonly ok: boolean;
  private readonly body: Readable;

  constructor(private readonly res: IncomingMessage) {
    this.status = res.statusCode ?? 0;
    this.ok = this.status >= 200 && this.status < 300;
    this.body = decodedBody(res);
    if (this.body !== res) res.once('error', (err) => this.body.destroy(err));
  }

  header(name: string): string | undefined {
    const value = this.res.headers[name.toLowerCase()];
    return Array.isArray(value) ? value.join(', ') : value;
  }

  /** The whole body, read with plain listeners (no async iterator per answer: most answers are read whole). */
  text(): Promise<string> {
    const { body, res } = this;
    return new Promise<string>((resolve, reject) => {
      const parts: Buffer[] = [];
      let ended = false;
      body.on('data', (chunk: Buffer) => parts.push(chunk));
      body.once('end', () => {
        ended = true;
        // A body cut short without an error event (the socket closed mid-body) is a failure, as in fetch.
        if (!res.complete) reject(new Error('the upstream closed the connection before the body ended'));
        else resolve(parts.length === 1 ? parts[0]!.toString('utf8') : Buffer.concat(parts).toString('utf8'));
      });
      body.once('error', reject);
      // Destroyed without an error (cancelled): as the async iterator did, fail rather than wait forever.
      body.once('close', () => {
        if (!ended) reject(Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
      });
    });
  }

  async *chunks(): AsyncGenerator<Uint8Array> {
    for await (const chunk of this.body) yield chunk as Buffer;
    // A body cut short without an error event (the socket closed mid-body) is a failure, as in fetch.
    if (!this.res.complete) throw new Error('the upstream closed the connection before the body ended');
  }

  cancel(): void {
    // A body not read to its end holds its connection: close it (the upstream stops sending).
    if (!this.res.readableEnded) this.res.destroy();
    if (this.body !== this.res) this.body.destroy();
  }
}

/** Where a URL points, as http.request's options (what it would derive from the URL itself). */
interface Target {
  readonly secure: boolean;
  readonly options: { readonly protocol: string; readonly hostname: string; readonly port?: number; readonly path: string; readonly auth?: string };
}

/** Targets by URL: the few upstream URLs a gateway posts to are parsed once, not on every call. */
const targets = new Map<string, Target>();
const MAX_TARGETS = 256;

/** The request options of `url` (as node:http derives them from a URL), or a throw for a URL it cannot use. */
function targetOf(url: string): Target {
  const known = targets.get(url);
  if (known) return known;
  const parsed = new URL(url);
  const secure = parsed.protocol === 'https:';
  if (!secure && parsed.protocol !== 'http:') throw new TypeError(`unsupported protocol ${parsed.protocol}`);
  // As node's urlToHttpOptions: brackets off an IPv6 host, the path with its query, credentials decoded.
  const hostname = parsed.hostname.startsWith('[') ? parsed.hostname.slice(1, -1) : parsed.hostname;
  const target: Target = {
    secure,
    options: {
      protocol: parsed.protocol,
      hostname,
      ...(parsed.port !== '' ? { port: Number(parsed.port) } : {}),
      path: `${parsed.pathname}${parsed.search}`,
      ...(parsed.username || parsed.password ? { auth: `${decodeURIComponent(parsed.username)}:${decodeURIComponent(parsed.password)}` } : {}),
    },
  };
  if (targets.size >= MAX_TARGETS) targets.clear();
  targets.set(url, target);
  return target;
}

/**
 * POSTs `body` to `url` and resolves with the answer once its status and headers are in (the body is read
 * from the {@link UpstreamResponse}). Rejects with {@link UpstreamRequestFailed} when the upstream cannot be
 * reached or the signal aborts before the answer's head arrives; a signal aborting later fails the body's reading.
 */
export function postToUpstream(request: UpstreamRequest): Promise<UpstreamResponse> {
  return new Promise<UpstreamResponse>((resolve, reject) => {
    const { signal } = request;
    if (signal.aborted) {
      reject(abortReason(signal));
      return;
    }
    let target: Target;
    try {
      target = targetOf(request.url);
    } catch (err) {
      reject(err);
      return;
    }
    const { secure } = target;
    const body = Buffer.from(request.body, 'utf8');
    let answered = false;
    const options = {
      ...target.options,
      method: 'POST',
      agent: secure ? httpsAgent : httpAgent,
      headers: { ...request.headers, 'content-length': String(body.length) },
    };
    let req: ReturnType<typeof httpRequest>;
    try {
      req = (secure ? httpsRequest : httpRequest)(options, (res) => {
        answered = true;
        signal.removeEventListener('abort', onAbort);
        // Aborting while the body is read destroys it: its reader fails with the signal's reason.
        const abortBody = () => res.destroy(abortReason(signal) as Error);
        signal.addEventListener('abort', abortBody, { once: true });
        res.once('close', () => signal.removeEventListener('abort', abortBody));
        resolve(new NodeUpstreamResponse(res));
      });
    } catch (err) {
      // An invalid header name or value throws here; fetch rejected for the same.
      reject(err);
      return;
    }
    const onAbort = () => {
      const sent = req.writableFinished;
      req.destroy();
      reject(new UpstreamRequestFailed(abortReason(signal), sent));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err) => {
      // After the head arrived, a failure surfaces where the body is read.
      if (answered) return;
      signal.removeEventListener('abort', onAbort);
      reject(new UpstreamRequestFailed(err, req.writableFinished));
    });
    req.end(body);
  });
}
