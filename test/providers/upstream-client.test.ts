import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { UpstreamError } from '../../lambda/core/errors';
import { postToUpstream } from '../../lambda/providers/upstream-client';
import { postUpstream, readBody, readJson } from '../../lambda/providers/upstream-http';

/** A loopback upstream whose answer each test sets; it records the remote port of every request (its connection). */
interface TestUpstream {
  readonly url: string;
  readonly ports: number[];
  answer: (req: IncomingMessage, res: ServerResponse, body: string) => void;
  close(): Promise<void>;
}

async function testUpstream(): Promise<TestUpstream> {
  const ports: number[] = [];
  let answer: TestUpstream['answer'] = (_req, res) => res.end('{}');
  const server = createServer((req, res) => {
    ports.push(req.socket.remotePort ?? 0);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => answer(req, res, Buffer.concat(chunks).toString('utf8')));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    ports,
    get answer() {
      return answer;
    },
    set answer(next) {
      answer = next;
    },
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let upstream: TestUpstream;
beforeEach(async () => {
  upstream = await testUpstream();
});
afterEach(() => upstream.close());

const post = (body: unknown = { hello: 'world' }, signal: AbortSignal = new AbortController().signal) =>
  postUpstream({ providerId: 'test', url: `${upstream.url}/v1/chat`, headers: { authorization: 'Bearer sk-test-key' }, body, signal, secrets: ['sk-test-key'] });

async function failure(p: Promise<unknown>): Promise<UpstreamError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(UpstreamError);
    return err as UpstreamError;
  }
  throw new Error('expected a failure');
}

describe('upstream HTTP client', () => {
  it('when it posts, the upstream gets the JSON body with its length, the content type and the headers given', async () => {
    let seen: { headers: IncomingMessage['headers']; body: string } | undefined;
    upstream.answer = (req, res, body) => {
      seen = { headers: req.headers, body };
      res.end(JSON.stringify({ ok: true }));
    };
    const signal = new AbortController().signal;
    const response = await post({ text: 'héllo' }, signal);
    expect(await readJson('test', response, signal)).toEqual({ ok: true });
    expect(seen!.body).toBe(JSON.stringify({ text: 'héllo' }));
    expect(seen!.headers['content-length']).toBe(String(Buffer.byteLength(seen!.body)));
    expect(seen!.headers['content-type']).toBe('application/json');
    expect(seen!.headers.authorization).toBe('Bearer sk-test-key');
  });

  it('when calls follow each other, they reuse one connection (keep-alive)', async () => {
    upstream.answer = (_req, res) => res.end('{"n":1}');
    const signal = new AbortController().signal;
    for (let i = 0; i < 3; i++) await readJson('test', await post(undefined, signal), signal);
    expect(upstream.ports).toHaveLength(3);
    expect(new Set(upstream.ports).size).toBe(1);
  });

  it('when the upstream compresses its answer anyway, the body is decoded', async () => {
    upstream.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      res.end(gzipSync(JSON.stringify({ compressed: true })));
    };
    const signal = new AbortController().signal;
    expect(await readJson('test', await post(undefined, signal), signal)).toEqual({ compressed: true });
  });

  it('when the upstream answers with a redirect, it is not followed: the caller gets a 502', async () => {
    let calls = 0;
    upstream.answer = (_req, res) => {
      calls++;
      res.writeHead(307, { location: `${upstream.url}/elsewhere` });
      res.end();
    };
    const err = await failure(post());
    expect(err.status).toBe(502);
    expect(calls).toBe(1);
  });

  it('when the upstream cuts a body short, reading it fails with a 502 that may have cost money, and a stream stops at what arrived', async () => {
    upstream.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'content-length': '1000' });
      res.write('data: first\n\n', () => res.socket?.destroy());
    };
    const signal = new AbortController().signal;
    const chunks: string[] = [];
    const err = await failure(
      (async () => {
        for await (const chunk of readBody('test', await post(undefined, signal), signal)) chunks.push(Buffer.from(chunk).toString('utf8'));
      })(),
    );
    expect(err.status).toBe(502);
    expect(err.message).toMatch(/closed the connection before its answer ended/);
    expect(err.mayHaveOutput).toBe(true);
    expect(chunks.join('')).toBe('data: first\n\n');
  });

  it('when the signal aborts while the body is read, reading fails with the signal as the reason', async () => {
    upstream.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: first\n\n');
    };
    const controller = new AbortController();
    const response = await post(undefined, controller.signal);
    const iterator = readBody('test', response, controller.signal)[Symbol.asyncIterator]();
    expect((await iterator.next()).done).toBe(false);
    controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
    const err = await failure(iterator.next());
    expect(err.message).toMatch(/timed out/);
  });

  it('when a consumer stops reading early, the connection is closed instead of returned half-read', async () => {
    upstream.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: first\n\n');
    };
    const signal = new AbortController().signal;
    const response = await postToUpstream({ url: `${upstream.url}/v1/chat`, headers: {}, body: '{}', signal });
    for await (const chunk of readBody('test', response, signal)) {
      expect(Buffer.from(chunk).toString('utf8')).toBe('data: first\n\n');
      break;
    }
    upstream.answer = (_req, res) => res.end('{"again":true}');
    expect(await readJson('test', await post(undefined, signal), signal)).toEqual({ again: true });
    expect(upstream.ports).toHaveLength(2);
    expect(upstream.ports[1]).not.toBe(upstream.ports[0]);
  });
});
