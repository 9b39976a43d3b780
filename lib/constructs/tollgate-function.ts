import * as path from 'node:path';
import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { LAMBDA_BUNDLE_TARGET, LAMBDA_EXTERNAL_MODULES, LAMBDA_MAIN_FIELDS, TOKENIZER_PACKAGE } from './bundling';

/** The repository root (the folder holding package.json); Lambda entries are resolved from it. */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

/** The runtime every tollgate function uses; the gateway code is tested against Node 22 semantics. */
export const TOLLGATE_RUNTIME = lambda.Runtime.NODEJS_22_X;

export interface TollgateFunctionOptions {
  /** What the function is for, shown in the console. */
  readonly description: string;
  /**
   * @default 256
   */
  readonly memoryMb?: number;
  /**
   * @default Duration.seconds(30)
   */
  readonly timeout?: Duration;
  /**
   * Non-secret configuration only (secrets come from SSM at runtime).
   * @default {}
   */
  readonly environment?: Readonly<Record<string, string>>;
  readonly logRetentionDays: number;
  /**
   * Where asynchronous invocations (SNS, EventBridge) that failed every retry are kept.
   * @default none
   */
  readonly deadLetterQueue?: sqs.IQueue;
  /**
   * The tokenizer layer (lib/constructs/tokenizer-layer.ts): attached, and the tokenizer package left out of
   * this function's bundle. Without it the function bundles the tokenizer if its code uses it.
   * @default none
   */
  readonly tokenizerLayer?: lambda.ILayerVersion;
}

export interface TollgateFunctionProps extends TollgateFunctionOptions {
  /** Entry file relative to the repository root, e.g. `lambda/handlers/gateway.ts`. */
  readonly entry: string;
}

/**
 * A NodejsFunction with tollgate's defaults written once: the local esbuild (never Docker), Node 22 on arm64,
 * minified with source maps, X-Ray tracing, and its own log group with the configured retention.
 */
export class TollgateFunction extends Construct {
  readonly fn: nodejs.NodejsFunction;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: TollgateFunctionProps) {
    super(scope, id);
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.fn = new nodejs.NodejsFunction(this, 'Function', {
      entry: path.join(REPO_ROOT, props.entry),
      handler: 'handler',
      projectRoot: REPO_ROOT,
      depsLockFilePath: path.join(REPO_ROOT, 'package-lock.json'),
      runtime: TOLLGATE_RUNTIME,
      architecture: lambda.Architecture.ARM_64,
      description: props.description,
      memorySize: props.memoryMb ?? 256,
      timeout: props.timeout ?? Duration.seconds(30),
      tracing: lambda.Tracing.ACTIVE,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      environment: { ...props.environment },
      ...(props.deadLetterQueue ? { deadLetterQueue: props.deadLetterQueue } : {}),
      ...(props.tokenizerLayer ? { layers: [props.tokenizerLayer] } : {}),
      bundling: {
        forceDockerBundling: false,
        minify: true,
        sourceMap: true,
        target: LAMBDA_BUNDLE_TARGET,
        externalModules: [...LAMBDA_EXTERNAL_MODULES, ...(props.tokenizerLayer ? [TOKENIZER_PACKAGE] : [])],
        mainFields: [...LAMBDA_MAIN_FIELDS],
        format: nodejs.OutputFormat.CJS,
      },
    });

    Validations.of(this.fn).acknowledge({
      id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
      reason: 'AWSLambdaBasicExecutionRole only lets the function write its own CloudWatch Logs; it is the documented minimum for Lambda.',
    });
    Validations.of(this.fn).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'X-Ray PutTraceSegments/PutTelemetryRecords (added by active tracing) do not support resource-level permissions.',
    });
    Validations.of(this.fn).acknowledge({
      id: 'AwsSolutions-L1',
      reason: 'Pinned to nodejs22.x, the runtime the handlers are built and tested for (esbuild target node22); moving to a newer runtime is a deliberate, tested change.',
    });
  }
}
