/**
 * Side by side with Portkey's OSS gateway (@portkey-ai/gateway, which enforces no budget): both in front of
 * the same fake OpenAI upstream, each in its own Node process on loopback, measured interleaved in one run so
 * both see the same machine load.
 *
 *   npm run bench:portkey [-- --requests 400 --concurrent-requests 800 --rounds 3 --profile .bench/profiles]
 *
 * tollgate runs as `npm start` assembles it (bench/support/tollgate-child.ts: createGateway + the local server +
 * DynamoDB Local in memory). Portkey runs its own start-server (headless) with `x-portkey-custom-host` pointing
 * at the fake. Prints sequential p50/p99, throughput at 16 concurrent, Node CPU per request of each gateway
 * process (process.cpuUsage, read over IPC), DynamoDB Local's JVM CPU per request, and the ratios.
 *
 * `--profile DIR` runs both gateway processes under `node --cpu-prof` and leaves their .cpuprofile files in
 * DIR/portkey and DIR/tollgate
 * (open them in Chrome DevTools, or summarise with `tsx bench/support/cpuprofile-top.ts FILE`). Profiling slows
 * both sides, so figures of a profiled run are not comparable with an unprofiled one.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startFakeUpstream } from '../test/support/fake-upstream';

const ROOT = resolve(__dirname, '..');
const CONCURRENCY = 16;

/** Targets from issue 14 (tollgate relative to Portkey). */
const TARGETS = { p50: { want: 2, must: 3 }, throughput: { want: 0.5, must: 0.3 }, cpu: { want: 2 } } as const;

interface Gateway {
  readonly name: string;
  readonly child: ChildProcess;
  readonly send: (n: number) => Promise<Response>;
  readonly cpu: () => Promise<number>;
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

/** Microseconds of user + system CPU the child reports for itself. */
function cpuOf(child: ChildProcess): Promise<number> {
  return new Promise((resolveCpu, reject) => {
    const timer = setTimeout(() => reject(new Error('no CPU answer from child')), 10_000);
    const onMessage = (m: unknown) => {
      const cpu = (m as { cpu?: NodeJS.CpuUsage }).cpu;
      if (!cpu) return;
      clearTimeout(timer);
      child.off('message', onMessage);
      resolveCpu(cpu.user + cpu.system);
    };
    child.on('message', onMessage);
    child.send('cpu');
  });
}

/** CPU µs of a non-Node process (DynamoDB Local's JVM) from /proc, or undefined where /proc is absent. */
function procCpuUs(pid: number): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the "pid (comm) " prefix), in clock ticks (100/s).
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return undefined;
  }
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function body(n: number): string {
  // Each request differs: identical copies would (rightly) be stopped by tollgate's loop guard.
  return JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `Say hello #${n}.` }], max_tokens: 50 });
}

/**
 * Node flags that write CPU profiles of the process into dir/name on exit (none without a dir): one file per
 * thread, named by Node (tsx's loader runs on a thread of its own; the main thread's file is the largest).
 */
function profileFlags(dir: string | undefined, name: string): string[] {
  return dir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${resolve(dir, name)}`];
}

async function startPortkey(upstreamBaseUrl: string, profileDir: string | undefined): Promise<Gateway> {
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
    cpu: () => cpuOf(child),
    send: (n) =>
      fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          authorization: 'Bearer sk-bench-upstream',
          'x-portkey-provider': 'openai',
          'x-portkey-custom-host': upstreamBaseUrl,
        },
        body: body(n),
      }),
  };
}

async function startTollgate(upstreamBaseUrl: string, profileDir: string | undefined): Promise<Gateway & { dynamoPid: number }> {
  const child = spawn(
    process.execPath,
    [
      ...profileFlags(profileDir, 'tollgate'),
      '--import',
      join(__dirname, 'support', 'cpu-probe.mjs'),
      '--import',
      'tsx',
      join(__dirname, 'support', 'tollgate-child.ts'),
    ],
    {
      cwd: ROOT,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: {
        ...process.env,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        TOLLGATE_STAGE: 'benchportkey',
        OPENAI_BASE_URL: upstreamBaseUrl,
      },
    },
  );
  const ready = await new Promise<{ url: string; key: string; dynamoPid: number }>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error('tollgate did not start within 240 s')), 240_000);
    child.on('message', (m) => {
      const r = (m as { ready?: { url: string; key: string; dynamoPid: number } }).ready;
      if (r) {
        clearTimeout(timer);
        resolveReady(r);
      }
    });
    child.once('exit', (code) => reject(new Error(`tollgate exited with ${code}`)));
  });
  return {
    name: 'tollgate',
    child,
    dynamoPid: ready.dynamoPid,
    cpu: () => cpuOf(child),
    send: (n) =>
      fetch(`${ready.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${ready.key}` },
        body: body(n),
      }),
  };
}

let seq = 0;
/** Answers other than 200 per gateway (counted, not thrown: a starved DynamoDB Local answers 503). */
const failures = new Map<string, Map<number, number>>();
/** One request; its latency in ms, or undefined when it was not a 200. */
async function one(gw: Gateway): Promise<number | undefined> {
  const t0 = performance.now();
  const res = await gw.send(seq++);
  await res.arrayBuffer();
  if (res.status !== 200) {
    const byStatus = failures.get(gw.name) ?? new Map<number, number>();
    byStatus.set(res.status, (byStatus.get(res.status) ?? 0) + 1);
    failures.set(gw.name, byStatus);
    return undefined;
  }
  return performance.now() - t0;
}

async function sequential(gw: Gateway, n: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const ms = await one(gw);
    if (ms !== undefined) times.push(ms);
  }
  return times;
}

/** n requests with 16 in flight; returns successful requests per second. */
async function concurrent(gw: Gateway, n: number): Promise<number> {
  let next = 0;
  let ok = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < n) {
        next++;
        if ((await one(gw)) !== undefined) ok++;
      }
    }),
  );
  return (ok / (performance.now() - t0)) * 1000;
}

interface Figures {
  seq: number[];
  rps: number[];
  cpuUs: number;
  requests: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      requests: { type: 'string', default: '300' },
      'concurrent-requests': { type: 'string', default: '600' },
      rounds: { type: 'string', default: '3' },
      profile: { type: 'string' },
    },
  });
  const n = Number(values.requests);
  const nc = Number(values['concurrent-requests']);
  const rounds = Number(values.rounds);
  const upstream = await startFakeUpstream();
  const portkey = await startPortkey(upstream.openaiBaseUrl, values.profile);
  const tollgate = await startTollgate(upstream.openaiBaseUrl, values.profile);
  const gateways = [portkey, tollgate];
  const figures = new Map<string, Figures>(gateways.map((g) => [g.name, { seq: [], rps: [], cpuUs: 0, requests: 0 }]));
  let jvmUs = 0;
  try {
    // Warm-up: JIT, connections, caches.
    for (const gw of gateways) {
      await sequential(gw, 50);
      await concurrent(gw, 100);
    }
    failures.clear();
    upstream.reset();
    // Interleaved: each round measures both, alternating which goes first.
    for (let r = 0; r < rounds; r++) {
      for (const gw of r % 2 === 0 ? gateways : [...gateways].reverse()) {
        const f = figures.get(gw.name)!;
        const jvm0 = gw === tollgate ? procCpuUs(tollgate.dynamoPid) : undefined;
        const cpu0 = await gw.cpu();
        f.seq.push(...(await sequential(gw, Math.ceil(n / rounds))));
        f.rps.push(await concurrent(gw, Math.ceil(nc / rounds)));
        // Let tollgate's settlements (after each response) finish inside the measured CPU.
        await new Promise((r2) => setTimeout(r2, 500));
        f.cpuUs += (await gw.cpu()) - cpu0;
        f.requests += Math.ceil(n / rounds) + Math.ceil(nc / rounds);
        const jvm1 = gw === tollgate ? procCpuUs(tollgate.dynamoPid) : undefined;
        if (jvm0 !== undefined && jvm1 !== undefined) jvmUs += jvm1 - jvm0;
        upstream.reset();
      }
    }
  } finally {
    // Waits for the exits (bounded): a profiled process writes its profile as it exits.
    const exits = gateways.map(
      (gw) =>
        new Promise<void>((resolveExit) => {
          if (gw.child.exitCode !== null) return resolveExit();
          const timer = setTimeout(resolveExit, 30_000);
          gw.child.once('exit', () => {
            clearTimeout(timer);
            resolveExit();
          });
        }),
    );
    for (const gw of gateways) gw.child.kill('SIGTERM');
    await Promise.all(exits);
    await upstream.close();
  }

  const row = (name: string) => {
    const f = figures.get(name)!;
    const sorted = [...f.seq].sort((a, b) => a - b);
    const rps = [...f.rps].sort((a, b) => a - b);
    return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), rps: percentile(rps, 50), cpuMs: f.cpuUs / f.requests / 1000 };
  };
  const p = row('Portkey');
  const t = row('tollgate');
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const pad = (s: string, w: number) => s.padEnd(w);
  console.log(`\nside by side, ${rounds} interleaved rounds, ${n} sequential + ${nc} at ${CONCURRENCY} concurrent per gateway, node ${process.version}`);
  console.log(`| ${pad('', 44)} | ${pad('Portkey', 10)} | ${pad('tollgate', 10)} | tollgate / Portkey |`);
  console.log(`| ${'-'.repeat(44)} | ${'-'.repeat(10)} | ${'-'.repeat(10)} | ------------------ |`);
  const line = (label: string, a: string, b: string, ratio: string) => console.log(`| ${pad(label, 44)} | ${pad(a, 10)} | ${pad(b, 10)} | ${ratio} |`);
  line('sequential latency p50', `${p.p50.toFixed(1)} ms`, `${t.p50.toFixed(1)} ms`, `${(t.p50 / p.p50).toFixed(2)}× (≤ ${TARGETS.p50.want}×: ${verdict(t.p50 / p.p50 <= TARGETS.p50.want)}; must ≤ ${TARGETS.p50.must}×: ${verdict(t.p50 / p.p50 <= TARGETS.p50.must)})`);
  line('sequential latency p99', `${p.p99.toFixed(1)} ms`, `${t.p99.toFixed(1)} ms`, `${(t.p99 / p.p99).toFixed(2)}×`);
  line(`throughput at ${CONCURRENCY} concurrent (median round)`, `${p.rps.toFixed(0)} req/s`, `${t.rps.toFixed(0)} req/s`, `${(t.rps / p.rps).toFixed(2)}× (≥ ${TARGETS.throughput.want}×: ${verdict(t.rps / p.rps >= TARGETS.throughput.want)}; must ≥ ${TARGETS.throughput.must}×: ${verdict(t.rps / p.rps >= TARGETS.throughput.must)})`);
  line('Node CPU per request', `${p.cpuMs.toFixed(2)} ms`, `${t.cpuMs.toFixed(2)} ms`, `${(t.cpuMs / p.cpuMs).toFixed(2)}× (≤ ${TARGETS.cpu.want}×: ${verdict(t.cpuMs / p.cpuMs <= TARGETS.cpu.want)})`);
  const tf = figures.get('tollgate')!;
  for (const [name, byStatus] of failures) {
    console.log(`${name}: answers other than 200: ${[...byStatus.entries()].map(([st, c]) => `${c}× ${st}`).join(', ')} (left out of the latency and throughput figures)`);
  }
  if (jvmUs > 0) console.log(`DynamoDB Local's JVM (tollgate's store, not Node): ${(jvmUs / tf.requests / 1000).toFixed(2)} ms CPU per request`);
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
