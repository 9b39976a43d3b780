import { spawn } from 'node:child_process';
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

describe('agent worker', () => {
  it('when the bundled agent starts, it logs a ready line, and on SIGTERM it logs and exits with status 0', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-agent-'));
    try {
      const main = bundleAgent(dir);
      const child = spawn(process.execPath, [main], { env: { ...process.env, TOLLGATE_STAGE: 'test' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      const ready = new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString('utf8');
          if (out.includes('agent ready')) resolve();
        });
        child.on('exit', () => reject(new Error(`agent exited before ready: ${out}`)));
      });
      await ready;
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { message: string; stage?: string; signal?: string });
      expect(lines.map((l) => l.message)).toEqual(['agent ready', 'agent stopping', 'agent stopped']);
      expect(lines[0].stage).toBe('test');
      expect(lines[1].signal).toBe('SIGTERM');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
