/**
 * The process plumbing of bench:portkey (bench/support/processes.ts): the fake upstream and the load generator
 * each run in a Node process of their own and the load generator reports its figures back over IPC. Checks
 * that the figures arrive and add up (counts, one latency per 200, per-status counts), never how fast anything
 * was: durations are the bench's business.
 */
import {
  type FakeUpstreamProcess,
  type LoadGenerator,
  procCpuUs,
  startFakeUpstreamProcess,
  startLoadGenerator,
} from '../../bench/support/processes';

let upstream: FakeUpstreamProcess;
let gen: LoadGenerator;

beforeAll(async () => {
  upstream = await startFakeUpstreamProcess();
  gen = await startLoadGenerator();
});
afterAll(async () => {
  await gen?.close();
  await upstream?.close();
});

const spec = (path: string, n: number, concurrency: number) => ({
  url: `${upstream.openaiBaseUrl}${path}`,
  headers: { 'content-type': 'application/json', authorization: 'Bearer sk-test' },
  bodyPrefix: '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello #',
  bodySuffix: '"}]}',
  start: 0,
  n,
  concurrency,
});

test('the fake and the load generator are processes of their own', () => {
  expect(upstream.pid).not.toBe(process.pid);
  expect(gen.pid).not.toBe(process.pid);
  expect(upstream.pid).not.toBe(gen.pid);
});

test('sequential and concurrent runs report one latency per 200 and the wall time', async () => {
  const sequential = await gen.run(spec('/chat/completions', 5, 1));
  expect(sequential.ok).toBe(5);
  expect(sequential.latenciesMs).toHaveLength(5);
  expect(sequential.statuses).toEqual({});
  for (const ms of sequential.latenciesMs) expect(ms).toBeGreaterThan(0);
  expect(sequential.elapsedMs).toBeGreaterThanOrEqual(Math.max(...sequential.latenciesMs));

  const concurrent = await gen.run(spec('/chat/completions', 40, 8));
  expect(concurrent.ok).toBe(40);
  expect(concurrent.latenciesMs).toHaveLength(40);
});

test('answers other than 200 are counted per status, and connection errors as 0', async () => {
  const notFound = await gen.run(spec('/no-such-route', 3, 2));
  expect(notFound).toMatchObject({ ok: 0, statuses: { 404: 3 }, latenciesMs: [] });

  const refused = await gen.run({ ...spec('', 2, 1), url: 'http://127.0.0.1:1/v1/chat/completions' });
  expect(refused).toMatchObject({ ok: 0, statuses: { 0: 2 } });
});

test('procCpuUs reads a process CPU from /proc (undefined for a process that does not exist)', () => {
  const mine = procCpuUs(process.pid);
  if (mine === undefined) return; // no /proc on this system
  expect(mine).toBeGreaterThanOrEqual(0);
  expect(procCpuUs(2 ** 30)).toBeUndefined();
});
