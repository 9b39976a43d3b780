/**
 * The process plumbing of bench:portkey: the fake upstream (fake-upstream-child.ts) and the load generator
 * (load-generator.mjs) each in a Node process of its own, driven over IPC, and the CPU a process has used, read
 * from /proc/<pid>/stat (any process: a Node gateway, DynamoDB Local's JVM, the fake, the load generator).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const ROOT = resolve(__dirname, '..', '..');

/** CPU µs (user + system, all threads) a process has used so far, from /proc; undefined where /proc is absent. */
export function procCpuUs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After "pid (comm) " come state (field 3) …; utime and stime are fields 14 and 15, in clock ticks (100/s).
    const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return undefined;
  }
}

/** Waits for the child's first `{ ready: … }` message; rejects when it exits first or takes longer than timeoutMs. */
export function readyOf<T>(child: ChildProcess, what: string, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start within ${timeoutMs / 1000} s`)), timeoutMs);
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}`));
    };
    child.once('exit', onExit);
    const onMessage = (m: unknown) => {
      const ready = (m as { ready?: T } | null)?.ready;
      if (ready === undefined) return;
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolveReady(ready);
    };
    child.on('message', onMessage);
  });
}

/** Stops a child with SIGTERM and waits (at most waitMs) for it to exit. */
export function stopChild(child: ChildProcess, waitMs = 30_000): Promise<void> {
  return new Promise<void>((resolveExit) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolveExit();
    const timer = setTimeout(resolveExit, waitMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolveExit();
    });
    child.kill('SIGTERM');
  });
}

export interface FakeUpstreamProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** `http://127.0.0.1:PORT/v1` */
  readonly openaiBaseUrl: string;
  /** Forgets the requests the fake recorded (they would pile up in its memory over a long run). */
  reset(): Promise<void>;
  close(): Promise<void>;
}

/** Starts test/support/fake-upstream.ts in its own Node process (under tsx). */
export async function startFakeUpstreamProcess(): Promise<FakeUpstreamProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'fake-upstream-child.ts')], {
    cwd: ROOT,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const ready = await readyOf<{ openaiBaseUrl: string }>(child, 'the fake upstream', 60_000);
  return {
    child,
    pid: child.pid!,
    openaiBaseUrl: ready.openaiBaseUrl,
    reset: () =>
      new Promise<void>((resolveReset) => {
        const onMessage = (m: unknown) => {
          if (!(m as { reset?: boolean } | null)?.reset) return;
          child.off('message', onMessage);
          resolveReset();
        };
        child.on('message', onMessage);
        child.send('reset');
      }),
    close: () => stopChild(child),
  };
}

/** What the load generator runs: n POSTs to url, `concurrency` in flight; body i is bodyPrefix + (start + i) + bodySuffix. */
export interface LoadSpec {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly bodyPrefix: string;
  readonly bodySuffix: string;
  readonly start: number;
  readonly n: number;
  readonly concurrency: number;
}

/** What it reports back (as JSON over IPC). */
export interface LoadResult {
  /** Answers with status 200. */
  readonly ok: number;
  /** Count per other status (0: the connection failed). */
  readonly statuses: Readonly<Record<string, number>>;
  /** Latency of each 200, ms, in completion order. */
  readonly latenciesMs: readonly number[];
  /** Wall time of the whole run, ms. */
  readonly elapsedMs: number;
}

export interface LoadGenerator {
  readonly child: ChildProcess;
  readonly pid: number;
  run(spec: LoadSpec): Promise<LoadResult>;
  close(): Promise<void>;
}

/** Starts bench/support/load-generator.mjs in its own Node process. */
export async function startLoadGenerator(): Promise<LoadGenerator> {
  const child = spawn(process.execPath, [join(__dirname, 'load-generator.mjs')], {
    cwd: ROOT,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  await readyOf<boolean>(child, 'the load generator', 30_000);
  let nextId = 0;
  return {
    child,
    pid: child.pid!,
    run: (spec) =>
      new Promise<LoadResult>((resolveRun, reject) => {
        const id = nextId++;
        const onExit = (code: number | null) => reject(new Error(`the load generator exited with ${code}`));
        const onMessage = (m: unknown) => {
          const answer = m as { id?: number; result?: LoadResult; error?: string } | null;
          if (answer?.id !== id) return;
          child.off('message', onMessage);
          child.off('exit', onExit);
          if (answer.error !== undefined) reject(new Error(answer.error));
          else resolveRun(answer.result!);
        };
        child.on('message', onMessage);
        child.once('exit', onExit);
        child.send({ id, run: spec });
      }),
    close: () => {
      if (child.connected) child.disconnect();
      return stopChild(child);
    },
  };
}
