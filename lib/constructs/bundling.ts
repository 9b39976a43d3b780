/**
 * How the Lambda functions are bundled, shared by {@link TollgateFunction} and `bench/bundle.ts` so the bench
 * measures what the CDK deploys.
 *
 * The DynamoDB client (every request needs it) is bundled from its ES module build, which esbuild can
 * tree-shake: 322 KiB for a bare client instead of 513 KiB from the CommonJS build, and it loads faster
 * than the runtime's unbundled copy. The clients a request may never need are left to the runtime's copy of
 * the SDK and imported on first use (lambda/store/aws-clients.ts).
 */

/**
 * Left to the Node.js 22 Lambda runtime's copy of the SDK, so they cost neither bundle bytes nor init time:
 * the AWS SDK clients the gateway imports only on first use, and the credential providers the SDK's default
 * chain imports dynamically only when the environment holds no credentials (in Lambda it always does).
 */
export const LAMBDA_EXTERNAL_MODULES: readonly string[] = [
  '@aws-sdk/client-ssm',
  '@aws-sdk/client-bedrock-runtime',
  '@aws-sdk/client-kms',
  '@aws-sdk/client-sqs',
  '@aws-sdk/client-sns',
  '@aws-sdk/credential-provider-sso',
  '@aws-sdk/credential-provider-ini',
  '@aws-sdk/credential-provider-process',
  '@aws-sdk/credential-provider-web-identity',
  '@aws-sdk/credential-provider-http',
  '@smithy/credential-provider-imds',
];

/** Prefer packages' ES module builds (tree-shakeable) over their CommonJS builds. */
export const LAMBDA_MAIN_FIELDS: readonly string[] = ['module', 'main'];

/** esbuild's target for every function (the runtime is nodejs22.x). */
export const LAMBDA_BUNDLE_TARGET = 'node22';

/**
 * The tokenizer package: left out of the gateway's bundle (its o200k vocabulary is ~2.3 MB of code) and served
 * from the tokenizer layer instead (lib/constructs/tokenizer-layer.ts).
 */
export const TOKENIZER_PACKAGE = 'gpt-tokenizer';

/** The module inside {@link TOKENIZER_PACKAGE} the gateway requires (lambda/core/tokens.ts's TOKENIZER_MODULE). */
export const TOKENIZER_MODULE_PATH = 'cjs/encoding/o200k_base';
