/**
 * Side by side with Portkey's OSS gateway (@portkey-ai/gateway, which enforces no budget): both in front of
 * the same fake OpenAI upstream, measured interleaved in one run so both see the same machine load.
 *
 *   npm run bench:portkey [-- --requests 600 --concurrent-requests 2400 --rounds 3 --stream --profile .bench/profiles]
 *
 * `--stream` asks every request for a stream (with usage); the default is a plain JSON answer.
 * Every part is a Node process of its own, so no two share an event loop:
 *
 *   load generator ──HTTP──▶ Portkey  ──HTTP──▶ fake upstream
 *   (load-generator.mjs)     tollgate ──HTTP──▶ (fake-upstream-child.ts)
 *                               └──HTTP──▶ DynamoDB Local (JVM)
 *
 * The load generator also runs straight to the fake: the harness's own ceiling, printed first, so a reader sees
 * that neither gateway is capped by the harness. tollgate runs as `npm start` assembles it
 * (bench/support/tollgate-child.ts: createGateway + the local server + DynamoDB Local in memory); Portkey runs
 * its own start-server (headless) with `x-portkey-custom-host` pointing at the fake. Each round measures the
 * ceiling and both gateways (alternating the order), each sequentially and then with 16 in flight.
 *
 * CPU is read from /proc/<pid>/stat (utime + stime, all threads) before and after each phase, per process: each
 * gateway's Node process, DynamoDB Local's JVM, the fake and the load generator. Prints sequential p50/p99,
 * throughput at 16 concurrent (median round), Node CPU per request and the ratios against the targets of
 * issue 25. `cat /proc/loadavg` is printed before and after: the machine may be shared, so prefer the ratios.
 *
 * `--baseline DIR` measures a second tollgate from another checkout in the same rounds ("tollgate before"), e.g.
 *   git archive <commit> | tar -x -C .bench/baseline && cp bench/support/{tollgate-child.ts,cpu-probe.mjs} \
 *     .bench/baseline/bench/support/ && ln -s "$PWD/node_modules" .bench/baseline/node_modules
 * and prints it beside the current one.
 *
 * `--profile DIR` runs both gateway processes under `node --cpu-prof` and leaves their .cpuprofile files in
 * DIR/portkey and DIR/tollgate (open them in Chrome DevTools, or summarise with
 * `tsx bench/support/cpuprofile-top.ts FILE --skip-ms N`). Profiling slows both sides, so figures of a profiled
 * run are not comparable with an unprofiled one.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  type LoadGenerator,
  type LoadResult,
  procCpuUs,
  readyOf,
  startFakeUpstreamProcess,
  startLoadGenerator,
  stopChild,
} from './support/processes';

const ROOT = resolve(__dirname, '..');
const CONCURRENCY = 16;

/** Targets from issue 25 (tollgate relative to Portkey). */
const TARGETS = { p50: { want: 1.5 }, throughput: { want: 0.5, must: 0.3 }, cpu: { want: 1.2 } } as const;

/** Something the load generator sends requests to: a gateway, or the fake itself (the ceiling). */
interface Target {
  readonly name: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  /** The Node process serving it (its CPU is the "Node CPU per request"). */
  readonly pid: number;
  readonly child?: ChildProcess;
  /** Further processes whose CPU belongs to this target (tollgate: DynamoDB Local's JVM). */
  readonly jvmPid?: number;
  /** DynamoDB calls made so far, per command (tollgate). */
  readonly storeCalls?: () => Promise<Record<string, number>>;
}

/** Asks tollgate's child for the DynamoDB calls it has made (bench/support/tollgate-child.ts). */
function storeCallsOf(child: ChildProcess): Promise<Record<string, number>> {
  return new Promise((resolveCalls, reject) => {
    const timer = setTimeout(() => reject(new Error('no store-calls answer from tollgate')), 10_000);
    const onMessage = (m: unknown) => {
      const calls = (m as { storeCalls?: Record<string, number> } | null)?.storeCalls;
      if (!calls) return;
      clearTimeout(timer);
      child.off('message', onMessage);
      resolveCalls(calls);
    };
    child.on('message', onMessage);
    child.send('store-calls');
  });
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolvePort(port));
    });
  });
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

// Each request differs: identical copies would (rightly) be stopped by tollgate's loop guard.
const BODY_PREFIX = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello #';
/** `--stream` asks for a stream (the fake sends the reply as chat chunks, usage last). */
const bodySuffix = (stream: boolean) => (stream ? '."}],"max_tokens":50,"stream":true,"stream_options":{"include_usage":true}}' : '."}],"max_tokens":50}');
let BODY_SUFFIX = bodySuffix(false);

/**
 * Node flags that write CPU profiles of the process into dir/name on exit (none without a dir): one file per
 * thread, named by Node (tsx's loader runs on a thread of its own; the main thread's file is the largest).
 */
function profileFlags(dir: string | undefined, name: string): string[] {
  return dir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${resolve(dir, name)}`];
}

async function startPortkey(upstreamBaseUrl: string, profileDir: string | undefined): Promise<Target> {
  const port = await freePort();
  const entry = join(ROOT, 'node_modules', '@portkey-ai', 'gateway', 'build', 'start-server.js');
  const flags = [...profileFlags(profileDir, 'portkey'), '--import', join(__dirname, 'support', 'cpu-probe.mjs')];
  const child = spawn(process.execPath, [...flags, entry, `--port=${port}`, '--headless'], {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: { ...process.env, NODE_ENV: 'production' },
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const res = await fetch(`${url}/`);
      await res.arrayBuffer();
      break;
    } catch {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error('Portkey did not start');
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return {
    name: 'Portkey',
    child,
    pid: child.pid!,
    url: `${url}/v1/chat/completions`,
    headers: {
      'content-type': 'application/json',
      authorization: 'Bearer sk-bench-upstream',
      'x-portkey-provider': 'openai',
      'x-portkey-custom-host': upstreamBaseUrl,
    },
  };
}

/**
 * tollgate from `root` (this checkout, or `--baseline DIR`: another checkout, e.g. `git archive` of an earlier
 * commit with this bench/support/tollgate-child.ts and a node_modules link, measured in the same rounds).
 */
async function startTollgate(upstreamBaseUrl: string, profileDir: string | undefined, root = ROOT, name = 'tollgate'): Promise<Target> {
  const child = spawn(
    process.execPath,
    [
      ...profileFlags(profileDir, 'tollgate'),
      '--import',
      join(__dirname, 'support', 'cpu-probe.mjs'),
      '--import',
      'tsx',
      join(root, 'bench', 'support', 'tollgate-child.ts'),
    ],
    {
      cwd: root,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: {
        ...process.env,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        TOLLGATE_STAGE: 'benchportkey',
        OPENAI_BASE_URL: upstreamBaseUrl,
      },
    },
  );
  const ready = await readyOf<{ url: string; key: string; dynamoPid: number }>(child, name, 240_000);
  return {
    name,
    child,
    pid: child.pid!,
    jvmPid: ready.dynamoPid,
    url: `${ready.url}/v1/chat/completions`,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ready.key}` },
    storeCalls: () => storeCallsOf(child),
  };
}

/** Per target, over all measured rounds. */
interface Figures {
  seqMs: number[];
  rps: number[];
  seqRequests: number;
  concRequests: number;
  /** CPU µs per process role, sequential phase and concurrent phase. */
  cpu: Record<'node' | 'jvm' | 'fake' | 'load', { seq: number; conc: number }>;
  failures: Map<string, number>;
  /** DynamoDB calls per command over the measured phases. */
  storeCalls: Map<string, number>;
}

function emptyFigures(): Figures {
  const z = () => ({ seq: 0, conc: 0 });
  return { seqMs: [], rps: [], seqRequests: 0, concRequests: 0, cpu: { node: z(), jvm: z(), fake: z(), load: z() }, failures: new Map(), storeCalls: new Map() };
}

let seq = 0;
async function load(gen: LoadGenerator, t: Target, n: number, concurrency: number): Promise<LoadResult> {
  const result = await gen.run({ url: t.url, headers: t.headers, bodyPrefix: BODY_PREFIX, bodySuffix: BODY_SUFFIX, start: seq, n, concurrency });
  seq += n;
  return result;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').trim().split(' ').slice(0, 3).join(' ');

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      requests: { type: 'string', default: '600' },
      'concurrent-requests': { type: 'string', default: '2400' },
      rounds: { type: 'string', default: '3' },
      profile: { type: 'string' },
      stream: { type: 'boolean', default: false },
      baseline: { type: 'string' },
    },
  });
  BODY_SUFFIX = bodySuffix(values.stream === true);
  const n = Math.ceil(Number(values.requests) / Number(values.rounds));
  const nc = Math.ceil(Number(values['concurrent-requests']) / Number(values.rounds));
  const rounds = Number(values.rounds);
  const loadBefore = loadavg();
  const upstream = await startFakeUpstreamProcess();
  const gen = await startLoadGenerator();
  const started: Target[] = [];
  const figures = new Map<string, Figures>();
  try {
    const ceiling: Target = {
      name: 'harness ceiling',
      pid: upstream.pid,
      url: `${upstream.openaiBaseUrl}/chat/completions`,
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-bench-upstream' },
    };
    started.push(await startPortkey(upstream.openaiBaseUrl, values.profile));
    started.push(await startTollgate(upstream.openaiBaseUrl, values.profile));
    if (values.baseline) started.push(await startTollgate(upstream.openaiBaseUrl, undefined, resolve(values.baseline), 'tollgate before'));
    const targets = [ceiling, ...started];
    for (const t of targets) figures.set(t.name, emptyFigures());
    // Warm-up: JIT, connections, caches.
    for (const t of targets) {
      await load(gen, t, 100, 1);
      await load(gen, t, 400, CONCURRENCY);
    }
    await upstream.reset();
    /** CPU µs of each process role now. */
    const cpuNow = (t: Target) => ({
      node: t === ceiling ? 0 : (procCpuUs(t.pid) ?? 0),
      jvm: t.jvmPid === undefined ? 0 : (procCpuUs(t.jvmPid) ?? 0),
      fake: procCpuUs(upstream.pid) ?? 0,
      load: procCpuUs(gen.pid) ?? 0,
    });
    const addCpu = (f: Figures, phase: 'seq' | 'conc', a: ReturnType<typeof cpuNow>, b: ReturnType<typeof cpuNow>) => {
      for (const role of ['node', 'jvm', 'fake', 'load'] as const) f.cpu[role][phase] += b[role] - a[role];
    };
    const addFailures = (f: Figures, r: LoadResult) => {
      for (const [status, count] of Object.entries(r.statuses)) f.failures.set(status, (f.failures.get(status) ?? 0) + count);
    };
    // Interleaved: each round measures all three, rotating which goes first.
    for (let r = 0; r < rounds; r++) {
      const order = targets.map((_, i) => targets[(i + r) % targets.length]!);
      for (const t of order) {
        const f = figures.get(t.name)!;
        const calls0 = await t.storeCalls?.();
        const c0 = cpuNow(t);
        const s = await load(gen, t, n, 1);
        // Let tollgate's settlements (after each response) finish inside the measured CPU.
        await sleep(300);
        const c1 = cpuNow(t);
        const c = await load(gen, t, nc, CONCURRENCY);
        await sleep(500);
        const c2 = cpuNow(t);
        const calls1 = await t.storeCalls?.();
        if (calls0 && calls1) {
          for (const [name, count] of Object.entries(calls1)) f.storeCalls.set(name, (f.storeCalls.get(name) ?? 0) + count - (calls0[name] ?? 0));
        }
        addCpu(f, 'seq', c0, c1);
        addCpu(f, 'conc', c1, c2);
        f.seqMs.push(...s.latenciesMs);
        f.seqRequests += n;
        f.concRequests += nc;
        f.rps.push((c.ok / c.elapsedMs) * 1000);
        addFailures(f, s);
        addFailures(f, c);
        await upstream.reset();
      }
    }
  } finally {
    // Waits for the exits (bounded): a profiled process writes its profile as it exits.
    await Promise.all(started.map((t) => stopChild(t.child!)));
    await gen.close();
    await upstream.close();
  }

  const row = (name: string) => {
    const f = figures.get(name)!;
    const sorted = [...f.seqMs].sort((a, b) => a - b);
    const rps = [...f.rps].sort((a, b) => a - b);
    const perReq = (us: { seq: number; conc: number }) => ({
      seq: us.seq / f.seqRequests / 1000,
      conc: us.conc / f.concRequests / 1000,
      all: (us.seq + us.conc) / (f.seqRequests + f.concRequests) / 1000,
    });
    return {
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      rps: percentile(rps, 50),
      node: perReq(f.cpu.node),
      jvm: perReq(f.cpu.jvm),
      fake: perReq(f.cpu.fake),
      load: perReq(f.cpu.load),
      failures: f.failures,
    };
  };
  const h = row('harness ceiling');
  const p = row('Portkey');
  const t = row('tollgate');
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const ms = (x: number) => `${x.toFixed(2)} ms`;
  const cols = [46, 15, 12, 12];
  const line = (cells: string[]) => console.log(`| ${cells.map((c, i) => (i < cols.length ? c.padEnd(cols[i]!) : c)).join(' | ')} |`);
  console.log(
    `\nbench:portkey${values.stream ? ' --stream' : ''}, ${rounds} interleaved rounds, per target ${n * rounds} sequential + ${nc * rounds} at ${CONCURRENCY} concurrent, ` +
      `node ${process.version}, @portkey-ai/gateway ${JSON.parse(readFileSync(join(ROOT, 'node_modules/@portkey-ai/gateway/package.json'), 'utf8')).version}`,
  );
  console.log(`load average before: ${loadBefore}; after: ${loadavg()} (2-core machine: prefer the ratios)\n`);
  line(['', 'harness ceiling', 'Portkey', 'tollgate', 'tollgate / Portkey']);
  line(cols.map((w) => '-'.repeat(w)).concat('------------------'));
  line([`throughput at ${CONCURRENCY} concurrent (median round)`, `${h.rps.toFixed(0)} req/s`, `${p.rps.toFixed(0)} req/s`, `${t.rps.toFixed(0)} req/s`,
    `${(t.rps / p.rps).toFixed(2)}× (≥ ${TARGETS.throughput.want}×: ${verdict(t.rps / p.rps >= TARGETS.throughput.want)}; must ≥ ${TARGETS.throughput.must}×: ${verdict(t.rps / p.rps >= TARGETS.throughput.must)})`]);
  line(['Node CPU per request (all measured requests)', '—', ms(p.node.all), ms(t.node.all),
    `${(t.node.all / p.node.all).toFixed(2)}× (≤ ${TARGETS.cpu.want}×: ${verdict(t.node.all / p.node.all <= TARGETS.cpu.want)})`]);
  const cpuVerdict = (r: number) => `${r.toFixed(2)}× (≤ ${TARGETS.cpu.want}×: ${verdict(r <= TARGETS.cpu.want)})`;
  line(['  sequential', '—', ms(p.node.seq), ms(t.node.seq), cpuVerdict(t.node.seq / p.node.seq)]);
  line([`  at ${CONCURRENCY} concurrent`, '—', ms(p.node.conc), ms(t.node.conc), cpuVerdict(t.node.conc / p.node.conc)]);
  line(['sequential latency p50', ms(h.p50), ms(p.p50), ms(t.p50), `${(t.p50 / p.p50).toFixed(2)}× (≤ ${TARGETS.p50.want}×: ${verdict(t.p50 / p.p50 <= TARGETS.p50.want)})`]);
  line(['sequential latency p99', ms(h.p99), ms(p.p99), ms(t.p99), `${(t.p99 / p.p99).toFixed(2)}×`]);
  line(["DynamoDB Local's JVM CPU per request", '—', '—', ms(t.jvm.all), `(seq ${ms(t.jvm.seq)}, at ${CONCURRENCY} ${ms(t.jvm.conc)})`]);
  line(['fake upstream CPU per request', ms(h.fake.all), ms(p.fake.all), ms(t.fake.all), '']);
  line(['load generator CPU per request', ms(h.load.all), ms(p.load.all), ms(t.load.all), '']);
  const rows: Array<[string, ReturnType<typeof row>]> = [['harness ceiling', h], ['Portkey', p], ['tollgate', t]];
  if (figures.has('tollgate before')) {
    const b = row('tollgate before');
    rows.push(['tollgate before', b]);
    console.log(`\n--baseline ${values.baseline} ("tollgate before"), measured in the same rounds:\n`);
    line(['', 'tollgate before', 'tollgate', 'Portkey', 'before / Portkey → now / Portkey']);
    line(cols.map((w) => '-'.repeat(w)).concat('------------------'));
    const cmp = (label: string, bv: number, tv: number, pv: number, f: (x: number) => string) =>
      line([label, f(bv), f(tv), f(pv), `${(bv / pv).toFixed(2)}× → ${(tv / pv).toFixed(2)}×`]);
    cmp(`throughput at ${CONCURRENCY} concurrent`, b.rps, t.rps, p.rps, (x) => `${x.toFixed(0)} req/s`);
    cmp('Node CPU per request (all)', b.node.all, t.node.all, p.node.all, ms);
    cmp('  sequential', b.node.seq, t.node.seq, p.node.seq, ms);
    cmp(`  at ${CONCURRENCY} concurrent`, b.node.conc, t.node.conc, p.node.conc, ms);
    cmp('sequential latency p50', b.p50, t.p50, p.p50, ms);
    line(["DynamoDB Local's JVM CPU per request", ms(b.jvm.all), ms(t.jvm.all), '—', '']);
  }
  for (const name of ['tollgate', 'tollgate before']) {
    const f = figures.get(name);
    if (!f || f.storeCalls.size === 0) continue;
    const perRequest = (count: number) => (count / (f.seqRequests + f.concRequests)).toFixed(2);
    const calls = [...f.storeCalls].filter(([, c]) => c > 0).sort((x, y) => y[1] - x[1]);
    const total = calls.filter(([call]) => !call.endsWith(' items')).reduce((x, [, c]) => x + c, 0);
    console.log(`\n${name}: DynamoDB calls per request: ${perRequest(total)} (${calls.map(([call, c]) => `${call} ${perRequest(c)}`).join(', ')})`);
  }
  for (const [name, r] of rows) {
    if (r.failures.size > 0) {
      console.log(`${name}: answers other than 200: ${[...r.failures].map(([st, c]) => `${c}× ${st === '0' ? 'connection error' : st}`).join(', ')} (left out of latency and throughput)`);
    }
  }
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
