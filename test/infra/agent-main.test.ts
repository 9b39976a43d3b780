import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildSync } from 'esbuild';

const REPO = path.join(__dirname, '..', '..');

/** The same esbuild invocation as agent/Dockerfile's build stage. */
function bundleAgent(outdir: string): string {
  const dockerfile = fs.readFileSync(path.join(REPO, 'agent', 'Dockerfile'), 'utf8');
  expect(dockerfile).toContain('esbuild agent/src/main.ts --bundle --platform=node --target=node22 --format=cjs');
  const outfile = path.join(outdir, 'main.js');
  buildSync({
    entryPoints: [path.join(REPO, 'agent', 'src', 'main.ts')],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    minify: true,
    sourcemap: true,
    outfile,
    logLevel: 'silent',
  });
  return outfile;
}

/** A fake SQS endpoint (AWS JSON protocol): every ReceiveMessage long-polls a little and finds nothing. */
async function startFakeSqs(): Promise<{ url: string; targets: string[]; close: () => Promise<void> }> {
  const targets: string[] = [];
  const server = createServer((req, res) => {
    targets.push(String(req.headers['x-amz-target'] ?? ''));
    req.resume();
    req.on('end', () => {
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' });
        res.end('{}');
      }, 50);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/123456789012/tollgate-test-agent-runs`,
    targets,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('agent worker', () => {
  it('when the bundled agent starts, it polls its queue, logs a ready line, and on SIGTERM it logs and exits with status 0', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-agent-'));
    const sqs = await startFakeSqs();
    try {
      const main = bundleAgent(dir);
      const child = spawn(process.execPath, [main], {
        env: {
          PATH: process.env.PATH,
          TOLLGATE_STAGE: 'test',
          AWS_REGION: 'eu-west-1',
          AWS_ACCESS_KEY_ID: 'test',
          AWS_SECRET_ACCESS_KEY: 'test',
          TOLLGATE_AGENT_QUEUE_URL: sqs.url,
          TOLLGATE_GATEWAY_URL: 'http://127.0.0.1:9',
          TOLLGATE_JWT_SECRET: `test:${'s'.repeat(40)}`,
          TOLLGATE_TABLE_RUNS: 'tollgate-test-runs',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      const ready = new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString('utf8');
          if (out.includes('agent ready')) resolve();
        });
        child.on('exit', () => reject(new Error(`agent exited before ready: ${out}`)));
      });
      await ready;
      while (!sqs.targets.some((t) => t.endsWith('ReceiveMessage'))) await new Promise((resolve) => setTimeout(resolve, 20));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { message: string; stage?: string; signal?: string });
      expect(lines.map((l) => l.message)).toEqual(['agent ready', 'agent stopping', 'agent stopped']);
      expect(lines[0].stage).toBe('test');
      expect(lines[1].signal).toBe('SIGTERM');
      expect(out).not.toContain('s'.repeat(40));
    } finally {
      await sqs.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('when a required setting is missing, the bundled agent exits with status 1 naming it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-agent-'));
    try {
      const main = bundleAgent(dir);
      const child = spawn(process.execPath, [main], { env: { PATH: process.env.PATH, TOLLGATE_STAGE: 'test' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
      const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
      expect(code).toBe(1);
      expect(out).toContain('TOLLGATE_AGENT_QUEUE_URL');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
