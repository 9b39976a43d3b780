/**
 * The gateway's AWS SDK clients, built one way: without the SDK's logger middleware (with no logger set it
 * still builds redacted copies of every command's input and output, ~7% of the gateway's CPU), and, for the
 * clients a request may never need (SSM, Bedrock, KMS, SQS, SNS), created on first use through a dynamic
 * import so a cold start does not load their packages.
 */
import type { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
import type { KMSClient } from '@aws-sdk/client-kms';
import type { SNSClient } from '@aws-sdk/client-sns';
import type { SQSClient } from '@aws-sdk/client-sqs';
import type { SSMClient } from '@aws-sdk/client-ssm';
import { lazy } from '../core/lazy';

/** Anything with an SDK middleware stack (every v3 client). */
interface WithMiddlewareStack {
  readonly middlewareStack: { remove(toRemove: string): boolean };
}

/** Removes the SDK's logger middleware from `client` and returns it. */
export function withoutSdkLogger<C extends WithMiddlewareStack>(client: C): C {
  client.middlewareStack.remove('loggerMiddleware');
  return client;
}

/** Region (and optionally endpoint) of an optional client. */
export interface LazyClientOptions {
  readonly region: string;
}

/** An SSM client, created (and its package loaded) on the first call. */
export function lazySsmClient(options: LazyClientOptions): () => Promise<SSMClient> {
  return lazy(async () => withoutSdkLogger(new (await import('@aws-sdk/client-ssm')).SSMClient({ region: options.region })));
}

/** A Bedrock Runtime client, created on the first call. */
export function lazyBedrockClient(options: LazyClientOptions): () => Promise<BedrockRuntimeClient> {
  return lazy(async () =>
    withoutSdkLogger(new (await import('@aws-sdk/client-bedrock-runtime')).BedrockRuntimeClient({ region: options.region })),
  );
}

/** A KMS client, created on the first call. */
export function lazyKmsClient(options: LazyClientOptions): () => Promise<KMSClient> {
  return lazy(async () => withoutSdkLogger(new (await import('@aws-sdk/client-kms')).KMSClient({ region: options.region })));
}

/** An SQS client, created on the first call. */
export function lazySqsClient(options: LazyClientOptions): () => Promise<SQSClient> {
  return lazy(async () => withoutSdkLogger(new (await import('@aws-sdk/client-sqs')).SQSClient({ region: options.region })));
}

/** An SNS client, created on the first call. */
export function lazySnsClient(options: LazyClientOptions): () => Promise<SNSClient> {
  return lazy(async () => withoutSdkLogger(new (await import('@aws-sdk/client-sns')).SNSClient({ region: options.region })));
}
