/**
 * The tokenizer layer and the gateway bundle without it: the layer's one file answers the same counts as the
 * package when required by the gateway's module name from the layer's folder (as the Lambda runtime's module
 * path finds it), the gateway bundle built as the CDK builds it carries no vocabulary, and the tokens module
 * bundled the same way counts bytes ÷ 3 until the deferred load is over, then the tokenizer's own count.
 * esbuild runs locally; nothing is deployed.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';
import { countTokens } from 'gpt-tokenizer/cjs/encoding/o200k_base';
import { LAMBDA_BUNDLE_TARGET, LAMBDA_EXTERNAL_MODULES, LAMBDA_MAIN_FIELDS, TOKENIZER_MODULE_PATH, TOKENIZER_PACKAGE } from '../../lib/constructs/bundling';
import { buildTokenizerLayer } from '../../lib/constructs/tokenizer-layer';
import { TOKENIZER_MODULE } from '../../lambda/core/tokens';

jest.setTimeout(120_000);

const ROOT = resolve(__dirname, '..', '..');
const SAMPLE = 'export const value = compute(input, { retries: 3 }); // 日本語のテキスト <|endoftext|>\n'.repeat(40);
const exact = (text: string) => countTokens(text, { disallowedSpecial: new Set() });

let dir: string;
let layerModules: string;
beforeAll(() => {
  // Outside the repository: no node_modules above it, so only NODE_PATH (the layer) can serve the tokenizer.
  dir = mkdtempSync(join(tmpdir(), 'tollgate-layer-'));
  buildTokenizerLayer(join(dir, 'layer'));
  layerModules = join(dir, 'layer', 'nodejs', 'node_modules');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `code` in a fresh node in `dir` with the layer's folder as the module path (what Lambda sets up). */
function node(code: string, modulePath = layerModules): string {
  const file = join(dir, `probe-${Math.random().toString(36).slice(2)}.js`);
  writeFileSync(file, code);
  return execFileSync(process.execPath, [file], { cwd: dir, env: { PATH: process.env.PATH, NODE_PATH: modulePath }, stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim();
}

describe('tokenizer layer', () => {
  it('when the gateway requires the tokenizer by its module name, the layer serves it and counts as the package does', () => {
    expect(TOKENIZER_MODULE).toBe(`${TOKENIZER_PACKAGE}/${TOKENIZER_MODULE_PATH}`);
    const n = node(`process.stdout.write(String(require(${JSON.stringify(TOKENIZER_MODULE)}).countTokens(${JSON.stringify(SAMPLE)}, { disallowedSpecial: new Set() })));`);
    expect(Number(n)).toBe(exact(SAMPLE));
    // Without the layer nothing else in the folder could have answered.
    expect(() => node(`require(${JSON.stringify(TOKENIZER_MODULE)});`, join(dir, 'nowhere'))).toThrow();
  });

  it('when the gateway is bundled as the CDK bundles it, the bundle carries no tokenizer and stays under a megabyte', async () => {
    const outfile = join(dir, 'gateway', 'index.js');
    const result = await build({
      entryPoints: [join(ROOT, 'lambda/handlers/gateway.ts')],
      bundle: true,
      platform: 'node',
      target: LAMBDA_BUNDLE_TARGET,
      format: 'cjs',
      minify: true,
      external: [...LAMBDA_EXTERNAL_MODULES, TOKENIZER_PACKAGE],
      mainFields: [...LAMBDA_MAIN_FIELDS],
      metafile: true,
      outfile,
      logLevel: 'silent',
    });
    expect(Object.keys(result.metafile.inputs).filter((p) => p.includes(`node_modules/${TOKENIZER_PACKAGE}/`))).toEqual([]);
    // With the vocabulary it was 3,287 KiB; without it ~620 KiB (npm run bench:bundle prints the figure).
    expect(statSync(outfile).size).toBeLessThan(1024 * 1024);
  });

  it('when the tokens module is bundled the same way and loading is deferred, the first estimate is bytes ÷ 3 and, once loaded, the tokenizer count', async () => {
    const outfile = join(dir, 'tokens', 'index.js');
    await build({
      entryPoints: [join(ROOT, 'lambda/core/tokens.ts')],
      bundle: true,
      platform: 'node',
      target: LAMBDA_BUNDLE_TARGET,
      format: 'cjs',
      external: [TOKENIZER_PACKAGE],
      outfile,
      logLevel: 'silent',
    });
    const out = node(`
const t = require(${JSON.stringify(outfile)});
t.deferTokenizerLoad();
const text = ${JSON.stringify(SAMPLE)};
const first = t.textTokens(text);
const readyAtFirst = t.tokenizerReady();
t.tokenizerLoading().then(() => {
  process.stdout.write(JSON.stringify({ first, readyAtFirst, ready: t.tokenizerReady(), after: t.textTokens(text), error: String(t.tokenizerLoadError() ?? '') }));
});`);
    expect(JSON.parse(out)).toEqual({ first: Math.ceil(Buffer.byteLength(SAMPLE) / 3), readyAtFirst: false, ready: true, after: exact(SAMPLE), error: '' });
  });

  it('when the layer is missing and loading is deferred, estimates stay at bytes ÷ 3 and the load error is kept', async () => {
    const outfile = join(dir, 'tokens-nolayer', 'index.js');
    await build({ entryPoints: [join(ROOT, 'lambda/core/tokens.ts')], bundle: true, platform: 'node', target: LAMBDA_BUNDLE_TARGET, format: 'cjs', external: [TOKENIZER_PACKAGE], outfile, logLevel: 'silent' });
    const out = node(
      `
const t = require(${JSON.stringify(outfile)});
t.deferTokenizerLoad();
t.textTokens('x'.repeat(300));
t.tokenizerLoading().then(() => process.stdout.write(JSON.stringify({ ready: t.tokenizerReady(), n: t.textTokens('x'.repeat(300)), error: /Cannot find module/.test(String(t.tokenizerLoadError())) })));`,
      join(dir, 'nowhere'),
    );
    expect(JSON.parse(out)).toEqual({ ready: false, n: 100, error: true });
  });
});
