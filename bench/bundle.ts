/**
 * Bundles the gateway Lambda exactly as the CDK does (esbuild, node22, arm64-agnostic CJS, minified, source
 * maps) and prints its size and its module init time in fresh Node processes.
 *
 *   npm run bench:bundle [-- --runs 10]
 */
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '10' } } });
  const runs = Number(values.runs);
  const root = resolve(__dirname, '..');
  const out = join(root, '.bench', 'gateway');
  mkdirSync(out, { recursive: true });
  const outfile = join(out, 'index.js');
  await build({
    entryPoints: [join(root, 'lambda/handlers/gateway.ts')],
    bundle: true,
    platform: 'node',
    target: 'node22',
    format: 'cjs',
    minify: true,
    sourcemap: true,
    outfile,
    logLevel: 'warning',
  });
  const size = statSync(outfile).size;
  const gz = gzipSync(readFileSync(outfile)).length;

  // Lambda's runtime provides `awslambda`; a minimal stand-in lets the module load outside Lambda.
  const probe = join(out, 'init-probe.js');
  writeFileSync(
    probe,
    `globalThis.awslambda = { streamifyResponse: (f) => f, HttpResponseStream: { from: (s) => s } };
const t0 = process.hrtime.bigint();
require(${JSON.stringify(outfile)});
const ms = Number(process.hrtime.bigint() - t0) / 1e6;
process.stdout.write(String(ms));
process.exit(0);`,
  );
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const env = { ...process.env, AWS_REGION: 'us-east-1', TOLLGATE_STAGE: 'bench', TOLLGATE_SSM_PREFIX: '' };
    times.push(Number(execFileSync(process.execPath, [probe], { env }).toString()));
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)]!;
  console.log(`gateway bundle: ${(size / 1024).toFixed(0)} KiB minified (${(gz / 1024).toFixed(0)} KiB gzipped)`);
  console.log(`module init (require of the bundle, fresh node ${process.version}, ${runs} runs): median ${median.toFixed(1)} ms, min ${times[0]!.toFixed(1)} ms, max ${times[times.length - 1]!.toFixed(1)} ms`);
}

void main();
