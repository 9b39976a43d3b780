/**
 * The tokenizer layer: OpenAI's o200k encoding (gpt-tokenizer, pure JS, ~2.3 MB of vocabulary) bundled by
 * esbuild into one file at the path the gateway requires it from (`gpt-tokenizer/cjs/encoding/o200k_base`,
 * under `/opt/nodejs/node_modules`, which is on the Lambda Node.js runtime's module path). The gateway bundle
 * leaves `gpt-tokenizer` out ({@link TOKENIZER_PACKAGE}), so a cold start neither downloads nor parses the
 * vocabulary; the gateway builds it after the first request's estimate (lambda/core/tokens.ts).
 */
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { buildSync } from 'esbuild';
import { AssetHashType, DockerImage } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import type { Construct } from 'constructs';
import { LAMBDA_BUNDLE_TARGET, TOKENIZER_MODULE_PATH, TOKENIZER_PACKAGE } from './bundling';
import { TOLLGATE_RUNTIME } from './tollgate-function';

/** The installed gpt-tokenizer's folder (holding its package.json). */
function packageDir(): string {
  return path.dirname(require.resolve(`${TOKENIZER_PACKAGE}/package.json`));
}

/**
 * Writes the layer's content into `outputDir`: `nodejs/node_modules/<TOKENIZER_MODULE_PATH>.js` (the encoding
 * and its code, minified), the package's licence, and a package.json naming the version. Returns the bundle's
 * path. Used by the CDK asset and by bench/bundle.ts.
 */
export function buildTokenizerLayer(outputDir: string): string {
  const dir = packageDir();
  const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string; license?: string };
  const target = path.join(outputDir, 'nodejs', 'node_modules', TOKENIZER_PACKAGE);
  const outfile = path.join(target, `${TOKENIZER_MODULE_PATH}.js`);
  buildSync({
    entryPoints: [require.resolve(`${TOKENIZER_PACKAGE}/${TOKENIZER_MODULE_PATH}`)],
    bundle: true,
    platform: 'node',
    target: LAMBDA_BUNDLE_TARGET,
    format: 'cjs',
    minify: true,
    outfile,
    logLevel: 'warning',
  });
  // No "exports" map: the subpath resolves to the file as written.
  const meta = { name: TOKENIZER_PACKAGE, version: pkg.version, license: pkg.license, private: true };
  writeFileSync(path.join(target, 'package.json'), `${JSON.stringify(meta, null, 2)}\n`);
  copyFileSync(path.join(dir, 'LICENSE'), path.join(target, 'LICENSE'));
  return outfile;
}

/** A Lambda layer holding the o200k tokenizer, bundled locally with esbuild (never Docker). */
export function tokenizerLayer(scope: Construct, id: string): lambda.LayerVersion {
  const dir = packageDir();
  const version = (JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;
  return new lambda.LayerVersion(scope, id, {
    description: `o200k tokenizer (${TOKENIZER_PACKAGE} ${version}) for the gateway's input estimates`,
    compatibleRuntimes: [TOLLGATE_RUNTIME],
    compatibleArchitectures: [lambda.Architecture.ARM_64],
    code: lambda.Code.fromAsset(dir, {
      // The content depends only on the package's version and how it is bundled.
      assetHashType: AssetHashType.CUSTOM,
      assetHash: `${TOKENIZER_PACKAGE}@${version}/${TOKENIZER_MODULE_PATH}/${LAMBDA_BUNDLE_TARGET}/min`,
      bundling: {
        // Required by the type; local bundling always succeeds, so no image is ever pulled.
        image: DockerImage.fromRegistry('public.ecr.aws/docker/library/node:22-slim'),
        local: {
          tryBundle(outputDir: string): boolean {
            buildTokenizerLayer(outputDir);
            return true;
          },
        },
      },
    }),
  });
}
