/**
 * What the real-agent suites (claude-code, codex) share: temporary folders removed after the suite, one CLI run
 * with its exit code and output, and what a user spent according to the gateway's usage records.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Harness } from '../support/gateway-harness';
import { TEST_NOW } from '../support/clock';
import { recentRange } from '../support/usage-records';

export interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Temporary folders made with `make`, all removed by `removeAll` (call it in afterAll). */
export function tempDirs(): { make(prefix: string): string; removeAll(): void } {
  const dirs: string[] = [];
  return {
    make(prefix) {
      const d = mkdtempSync(join(tmpdir(), prefix));
      dirs.push(d);
      return d;
    },
    removeAll() {
      for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
    },
  };
}

/** Runs a CLI to its end (stdin closed) and collects its exit code and output. */
export function runCli(command: string, args: readonly string[], options: { readonly cwd: string; readonly env: NodeJS.ProcessEnv }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The last part of a run's output, for a failing assertion's message. */
export function runReport(run: Run, stderrChars = 2000): string {
  return `exit ${run.code}\nstdout: ${run.stdout.slice(-2000)}\nstderr: ${run.stderr.slice(-stderrChars)}`;
}

/** What a user spent, from the usage records, once every request so far has settled. */
export async function spentBy(h: Harness, userId: string): Promise<number> {
  await h.settled();
  const records = await h.gateway.usage.query({ by: 'user', id: userId, ...recentRange(TEST_NOW) });
  return records.reduce((n, r) => n + r.costMicros, 0);
}

export const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface RecordingProxy {
  /** Base URL to give the agent in place of the gateway's. */
  readonly url: string;
  /** What the agent sent, in order: path and raw body. */
  readonly sent: { readonly path: string; readonly rawBody: string; readonly headers: Readonly<Record<string, string>> }[];
  close(): Promise<void>;
}

/**
 * A plain HTTP relay between an agent and the gateway that keeps each request the agent sent, so a test can
 * compare it with what reached the provider. Answers (streams included) are piped back as they come.
 */
export function recordingProxy(target: string): Promise<RecordingProxy> {
  const sent: { path: string; rawBody: string; headers: Record<string, string> }[] = [];
  const base = new URL(target);
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers[k] = v;
      sent.push({ path: req.url ?? '', rawBody: body.toString(), headers });
      const out = httpRequest(
        { host: base.hostname, port: base.port, method: req.method, path: req.url, headers: { ...req.headers, host: base.host } },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      out.on('error', () => res.destroy());
      out.end(body);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        sent,
        close: () => new Promise<void>((done) => { server.closeAllConnections(); server.close(() => done()); }),
      });
    });
  });
}

/** One line of the agents table (bench/agent-table.ts prints it): what one e2e case showed. */
export interface AgentRow {
  readonly agent: string;
  readonly model: string;
  /** `tool`: a completed tool turn; `runaway`: a stuck agent and where the gateway stopped it. */
  readonly kind: 'tool' | 'runaway';
  readonly ok: boolean;
  /** Model calls that reached the provider (runaway). */
  readonly calls?: number;
  /** Wall-clock seconds of the agent's run: printed, never asserted. */
  readonly seconds?: number;
  /** What the user was charged, micro-USD. */
  readonly micros?: number;
  readonly note?: string;
}

/** Where rows are kept: `.bench/agent-runs.jsonl` (ignored by git), one JSON object a line, newest last. */
export const AGENT_ROWS_FILE = join(__dirname, '..', '..', '.bench', 'agent-runs.jsonl');

/** Appends one row to {@link AGENT_ROWS_FILE} (the table keeps the newest row per agent, model and kind). */
export function recordAgentRow(row: AgentRow): void {
  mkdirSync(dirname(AGENT_ROWS_FILE), { recursive: true });
  appendFileSync(AGENT_ROWS_FILE, `${JSON.stringify(row)}\n`);
}

/** Seconds since `startedMs` (performance.now()), one decimal. */
export const secondsSince = (startedMs: number): number => Math.round((performance.now() - startedMs) / 100) / 10;
