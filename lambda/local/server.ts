/**
 * node:http adapter for the gateway: reads the body (refusing it past the size limit without buffering it),
 * writes the response — streams chunk by chunk with backpressure — and runs the settlement after the last
 * byte has been handed to the socket.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../core/log';
import type { GatewayApp } from '../http/app';
import { type HttpRequest, type HttpResponse, isStreamBody } from '../http/types';

export interface LocalServerOptions {
  readonly app: GatewayApp;
  readonly maxBodyBytes: number;
  readonly log: Logger;
  /** Extra routes served before the gateway's (the dashboard, the admin API). */
  readonly extraRoutes?: (req: HttpRequest) => Promise<HttpResponse | undefined>;
  /** Told of each request's whole lifetime, settlement included (tests wait on it). */
  readonly onRequest?: (done: Promise<void>) => void;
}

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      reject(new BodyTooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new BodyTooLarge());
        req.pause();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function headersOf(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

const PLAIN_PATH = /^\/[A-Za-z0-9_~/-]*$/;

/**
 * The path and query of a request target. Parsed against a fixed origin so that `//v1/…` stays a path (a
 * base URL would read it as a host); a target URL cannot parse is kept as it came, for the router to refuse.
 */
function targetOf(raw: string): { path: string; query: URLSearchParams } {
  // The usual target (`/v1/chat/completions`): letters, digits, `-`, `_`, `~` and slashes only, no query, so
  // the URL parser would return it unchanged (no dot segments, no escapes to decode): skip building a URL.
  if (PLAIN_PATH.test(raw)) return { path: raw, query: new URLSearchParams() };
  try {
    const url = new URL(`http://localhost${raw.startsWith('/') ? raw : `/${raw}`}`);
    return { path: url.pathname, query: url.searchParams };
  } catch {
    return { path: raw.split('?')[0] ?? '/', query: new URLSearchParams() };
  }
}

async function writeBody(res: ServerResponse, response: HttpResponse): Promise<void> {
  const { body } = response;
  if (!isStreamBody(body)) {
    await endResponse(res, body);
    return;
  }
  res.flushHeaders();
  for await (const chunk of body) {
    if (res.destroyed) break;
    if (!res.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.on('drain', done);
        res.on('close', done);
      });
    }
  }
  await endResponse(res);
}

/**
 * Ends the response and resolves once it is handed to the socket, or at once when the caller has gone: the
 * end callback of a destroyed response never runs, and the settlement after it must.
 */
function endResponse(res: ServerResponse, body?: string | Uint8Array): Promise<void> {
  if (res.destroyed) return Promise.resolve();
  return new Promise<void>((resolve) => {
    res.once('close', resolve);
    res.end(body ?? '', () => resolve());
  });
}

export function createLocalServer(options: LocalServerOptions): Server {
  const { app, log } = options;
  return createServer((req, res) => {
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const done = (async () => {
      const url = targetOf(req.url ?? '/');
      let response: HttpResponse;
      try {
        const body = await readBody(req, options.maxBodyBytes);
        const request: HttpRequest = {
          method: (req.method ?? 'GET').toUpperCase(),
          path: url.path,
          query: url.query,
          headers: headersOf(req),
          body,
          sourceIp: req.socket.remoteAddress,
          signal: abort.signal,
        };
        response = (await options.extraRoutes?.(request)) ?? (await app.handle(request));
      } catch (err) {
        if (!(err instanceof BodyTooLarge)) throw err;
        response = app.reject(url.path, app.tooLarge());
        res.setHeader('connection', 'close');
      }
      try {
        res.writeHead(response.status, response.headers);
        await writeBody(res, response);
      } catch (err) {
        // A stream that fails mid-way can only be cut: the status line is already sent.
        log.log('warn', 'response interrupted', { error: err instanceof Error ? err.message : String(err) });
        res.destroy();
      } finally {
        if (response.after) await response.after();
      }
    })().catch((err: unknown) => {
      log.log('error', 'local server failure', { error: err instanceof Error ? err.message : String(err) });
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end();
    });
    options.onRequest?.(done);
  });
}
