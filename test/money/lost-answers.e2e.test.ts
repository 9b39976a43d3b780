/**
 * An answer the provider produced but the gateway lost is charged (ledger v2, item 3): the OpenAI SDK → the
 * local gateway → an upstream on real HTTP that misbehaves as a real connection can, DynamoDB Local underneath.
 * Money the gateway cannot prove unspent is charged at the reservation; an error answer or an upstream that was
 * never reached costs nothing.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { type Harness, startHarness } from '../support/gateway-harness';
import { dayCounterAt } from '../support/usage-records';

jest.setTimeout(120_000);

type Behaviour = (req: IncomingMessage, res: ServerResponse) => void;
let behaviour: Behaviour = () => undefined;
let upstream: Server;
let h: Harness;

const USAGE = { prompt_tokens: 20, completion_tokens: 1000, total_tokens: 1020 };
const completion = JSON.stringify({
  id: 'chatcmpl-lost',
  object: 'chat.completion',
  created: 1_900_000_000,
  model: 'gpt-4o-2024-08-06',
  choices: [{ index: 0, message: { role: 'assistant', content: 'x'.repeat(4000), refusal: null }, finish_reason: 'stop', logprobs: null }],
  usage: USAGE,
});

beforeAll(async () => {
  upstream = createServer((req, res) => {
    req.resume();
    req.on('end', () => behaviour(req, res));
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', () => resolve()));
  const base = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`;
  h = await startHarness({ env: { OPENAI_BASE_URL: base, TOLLGATE_UPSTREAM_TIMEOUT_MS: '1000', TOLLGATE_MOCK_PROVIDER: 'false' } });
});
afterAll(async () => {
  await h?.close();
  upstream?.closeAllConnections();
  await new Promise((resolve) => upstream?.close(resolve));
});

async function call(userId: string): Promise<{ status: number; keyId: string }> {
  const { raw, keyId } = await h.createKey({ userId });
  const client = new OpenAI({ apiKey: raw, baseURL: h.baseURL, maxRetries: 0 });
  const status = await client.chat.completions
    .create({ model: 'gpt-4o', max_tokens: 2000, messages: [{ role: 'user', content: 'Write a long answer.' }] })
    .then(() => 200)
    .catch((err: { status?: number }) => err.status ?? 0);
  await h.settled();
  return { status, keyId };
}

async function ledgerOf(keyId: string): Promise<{ records: Record<string, unknown>[]; keyDaySpent: number }> {
  const records = (await h.scan('usage')).filter((r) => r.keyId === keyId);
  const at = Date.parse(String(records[0]?.timestamp ?? new Date().toISOString()));
  const [day] = await h.gateway.pipeline.readCounters([dayCounterAt(`key:${keyId}`, at)]);
  return { records, keyDaySpent: day!.spent };
}

it('a 200 whose body is cut mid-way is charged its reservation (not $0), once, and the counter agrees', async () => {
  behaviour = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(completion.length) });
    res.write(completion.slice(0, 200));
    setTimeout(() => res.socket?.destroy(), 20);
  };
  const { status, keyId } = await call('cut-short');
  expect(status).toBe(502);
  const { records, keyDaySpent } = await ledgerOf(keyId);
  expect(records).toHaveLength(1);
  expect(records[0]!.outcome).toBe('upstream_error');
  expect(records[0]!.costEstimated).toBe(true);
  // gpt-4o at 2,000 output tokens: well above $0.01, whatever the input estimate.
  expect(Number(records[0]!.costMicros)).toBeGreaterThan(10_000);
  expect(keyDaySpent).toBe(Number(records[0]!.costMicros));
  expect(await h.holds()).toHaveLength(0);
});

it('a 200 whose body is not JSON is charged its reservation', async () => {
  behaviour = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('<html>proxy error</html>');
  };
  const { status, keyId } = await call('not-json');
  expect(status).toBe(502);
  const { records, keyDaySpent } = await ledgerOf(keyId);
  expect(records).toHaveLength(1);
  expect(Number(records[0]!.costMicros)).toBeGreaterThan(10_000);
  expect(keyDaySpent).toBe(Number(records[0]!.costMicros));
});

it('a request sent and never answered before the timeout is charged its reservation', async () => {
  const open: ServerResponse[] = [];
  behaviour = (_req, res) => void open.push(res);
  const { status, keyId } = await call('timed-out');
  for (const res of open) res.destroy();
  expect(status).toBe(502);
  const { records, keyDaySpent } = await ledgerOf(keyId);
  expect(records).toHaveLength(1);
  expect(records[0]!.outcome).toBe('timeout');
  expect(Number(records[0]!.costMicros)).toBeGreaterThan(10_000);
  expect(keyDaySpent).toBe(Number(records[0]!.costMicros));
});

it('an error answer (500) costs nothing', async () => {
  behaviour = (_req, res) => {
    res.writeHead(500, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { message: 'The server had an error.', type: 'server_error', param: null, code: null } }));
  };
  const { status, keyId } = await call('error-answer');
  expect(status).toBe(502);
  const { records, keyDaySpent } = await ledgerOf(keyId);
  expect(records.map((r) => Number(r.costMicros))).toEqual([0]);
  expect(keyDaySpent).toBe(0);
});

it('an upstream that cannot be reached costs nothing', async () => {
  upstream.closeAllConnections();
  await new Promise((resolve) => upstream.close(resolve));
  const { status, keyId } = await call('unreachable');
  expect(status).toBe(502);
  const { records, keyDaySpent } = await ledgerOf(keyId);
  expect(records.map((r) => Number(r.costMicros))).toEqual([0]);
  expect(keyDaySpent).toBe(0);
});
