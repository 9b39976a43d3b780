/**
 * Bundles the gateway Lambda exactly as the CDK does (esbuild, node22 CJS, minified, source maps, ES module
 * builds preferred, the optional SDK clients left to the runtime: lib/constructs/bundling.ts) and prints its
 * size and module init time in fresh Node processes, next to a baseline bundled the same way in the same run:
 * a function that only creates a DynamoDB client (the least any DynamoDB-backed function loads).
 *
 *   npm run bench:bundle [-- --runs 15]
 *
 * The optional clients (SSM, Bedrock, KMS, SQS, SNS) are imported on first use, so they are in neither figure.
 * The tokenizer (gpt-tokenizer's o200k vocabulary) is in the gateway's layer, not its bundle, as the CDK
 * deploys it; its size and the time to build it (after the first request's estimate, not at init) are
 * printed apart.
 */
import { build, type BuildOptions } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { LAMBDA_BUNDLE_TARGET, LAMBDA_EXTERNAL_MODULES, LAMBDA_MAIN_FIELDS, TOKENIZER_PACKAGE } from '../lib/constructs/bundling';
import { buildTokenizerLayer } from '../lib/constructs/tokenizer-layer';

/** Targets from issue 14. */
const MAX_BUNDLE_KIB = 600;
const MAX_INIT_MS = 150;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '15' } } });
  const runs = Number(values.runs);
  const root = resolve(__dirname, '..');
  const out = join(root, '.bench', 'gateway');
  mkdirSync(out, { recursive: true });
  const outfile = join(out, 'index.js');
  const bundleOptions: BuildOptions = {
    bundle: true,
    platform: 'node',
    target: LAMBDA_BUNDLE_TARGET,
    format: 'cjs',
    minify: true,
    sourcemap: true,
    external: [...LAMBDA_EXTERNAL_MODULES],
    mainFields: [...LAMBDA_MAIN_FIELDS],
    logLevel: 'warning',
  };
  // The gateway function leaves the tokenizer to its layer (lib/stacks/gateway-stack.ts).
  const result = await build({
    ...bundleOptions,
    external: [...LAMBDA_EXTERNAL_MODULES, TOKENIZER_PACKAGE],
    entryPoints: [join(root, 'lambda/handlers/gateway.ts')],
    metafile: true,
    outfile,
  });
  const layerDir = join(out, 'tokenizer-layer');
  const layerFile = buildTokenizerLayer(layerDir);
  const layerSize = statSync(layerFile).size;
  const layerGz = gzipSync(readFileSync(layerFile)).length;
  const size = statSync(outfile).size;
  const gz = gzipSync(readFileSync(outfile)).length;

  // Lambda's runtime provides `awslambda`; a minimal stand-in lets the module load outside Lambda.
  const probe = (name: string, body: string): string => {
    const file = join(out, name);
    writeFileSync(
      file,
      `globalThis.awslambda = { streamifyResponse: (f) => f, HttpResponseStream: { from: (s) => s } };
const t0 = process.hrtime.bigint();
${body}
const ms = Number(process.hrtime.bigint() - t0) / 1e6;
process.stdout.write(String(ms));
process.exit(0);`,
    );
    return file;
  };
  const gatewayProbe = probe('init-gateway.js', `require(${JSON.stringify(outfile)});`);
  const baselineEntry = join(out, 'baseline-entry.ts');
  writeFileSync(baselineEntry, `import { DynamoDBClient } from '@aws-sdk/client-dynamodb';\nexport const client = new DynamoDBClient({ region: 'us-east-1' });\n`);
  const baselineFile = join(out, 'baseline.js');
  await build({ ...bundleOptions, entryPoints: [baselineEntry], outfile: baselineFile, metafile: false, sourcemap: false });
  const baselineSize = statSync(baselineFile).size;
  const baselineProbe = probe('init-baseline.js', `require(${JSON.stringify(baselineFile)});`);
  // The layer's tokenizer, built the way the gateway builds it after its first estimate.
  const tokenizerProbe = probe('init-tokenizer.js', `require(${JSON.stringify(layerFile)}).countTokens('warm up');`);
  const env = { ...process.env, AWS_REGION: 'us-east-1', TOLLGATE_STAGE: 'bench', TOLLGATE_SSM_PREFIX: '' };
  const gateway: number[] = [];
  const baseline: number[] = [];
  const tokenizerLoad: number[] = [];
  // Interleaved, so both see the same machine load.
  for (let i = 0; i < runs; i++) {
    gateway.push(Number(execFileSync(process.execPath, [gatewayProbe], { env }).toString()));
    baseline.push(Number(execFileSync(process.execPath, [baselineProbe], { env }).toString()));
    if (i < Math.min(runs, 5)) tokenizerLoad.push(Number(execFileSync(process.execPath, [tokenizerProbe], { env }).toString()));
  }
  const g = median(gateway);
  const b = median(baseline);

  const meta = result.metafile!;
  const inputs = Object.entries(meta.outputs[Object.keys(meta.outputs).find((k) => k.endsWith('index.js'))!]!.inputs);
  const byPackage = new Map<string, number>();
  for (const [path, info] of inputs) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path);
    const key = m ? m[1]! : path.split('/').slice(0, 2).join('/');
    byPackage.set(key, (byPackage.get(key) ?? 0) + info.bytesInOutput);
  }
  const top = [...byPackage.entries()].sort((x, y) => y[1] - x[1]).slice(0, 8);

  console.log(`gateway bundle (as the CDK builds it; external: ${[...LAMBDA_EXTERNAL_MODULES, `${TOKENIZER_PACKAGE} (its layer)`].join(', ')}):`);
  console.log(`  ${(size / 1024).toFixed(0)} KiB minified (${(gz / 1024).toFixed(0)} KiB gzipped); target ≤ ${MAX_BUNDLE_KIB} KiB: ${size / 1024 <= MAX_BUNDLE_KIB ? 'met' : 'NOT met'}`);
  console.log(`  largest parts: ${top.map(([k, v]) => `${k} ${(v / 1024).toFixed(0)} KiB`).join(', ')}`);
  console.log(`module init, fresh node ${process.version}, ${runs} interleaved runs each:`);
  console.log(`  gateway bundle:                       median ${g.toFixed(1)} ms (min ${Math.min(...gateway).toFixed(1)}, max ${Math.max(...gateway).toFixed(1)})`);
  console.log(`  baseline (${(baselineSize / 1024).toFixed(0)} KiB: a DynamoDB client): median ${b.toFixed(1)} ms (min ${Math.min(...baseline).toFixed(1)}, max ${Math.max(...baseline).toFixed(1)})`);
  console.log(`  gateway / baseline: ${(g / b).toFixed(2)}×; gateway target ≤ ${MAX_INIT_MS} ms: ${g <= MAX_INIT_MS ? 'met' : 'NOT met'}`);
  console.log(`tokenizer layer (not in the bundle): ${(layerSize / 1024).toFixed(0)} KiB minified (${(layerGz / 1024).toFixed(0)} KiB gzipped)`);
  console.log(
    `  built after the first estimate (not at init): median ${median(tokenizerLoad).toFixed(0)} ms over ${tokenizerLoad.length} runs = ${(median(tokenizerLoad) / b).toFixed(1)}× the baseline's init`,
  );
}

void main();
