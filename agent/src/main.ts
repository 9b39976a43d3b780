/**
 * The agent container's entry point (Fargate). Reads its settings with loadConfig, takes runs from the SQS
 * queue and executes them through the gateway (see worker.ts). On SIGTERM — what ECS sends before stopping a
 * task — or SIGINT it stops gracefully: the current run finishes within the grace period or goes back to the
 * queue, then the process exits with status 0.
 *
 * Environment (set by the agent stack): TOLLGATE_STAGE, TOLLGATE_TABLE_RUNS, TOLLGATE_AGENT_QUEUE_URL,
 * TOLLGATE_GATEWAY_URL, TOLLGATE_AGENT_* limits, and TOLLGATE_JWT_SECRET_PARAMETER: the SSM SecureString the
 * `jwt-secret` is read from (cached 5 minutes and re-read when the gateway refuses a token, so a rotation reaches
 * a running task; see jwt-secret.ts). Locally TOLLGATE_JWT_SECRET may carry the value itself.
 */
import { SQSClient } from '@aws-sdk/client-sqs';
import { SSMClient } from '@aws-sdk/client-ssm';
import { ConfigError, type GatewayConfig, loadConfig } from '../../lambda/config';
import { SqsRunQueue } from '../../lambda/core/agent/sqs-queue';
import { systemClock } from '../../lambda/core/clock';
import { JwtKeyRingSource, TokenIssuer } from '../../lambda/core/jwt';
import { jsonLogger, type Logger } from '../../lambda/core/log';
import { createDynamoDbClient } from '../../lambda/store/dynamodb/client';
import { DynamoDbRunStore } from '../../lambda/store/dynamodb/runs-store';
import { RefreshingSecret, ssmParameterReader } from './jwt-secret';
import { createAgentWorker, serviceTokens } from './service';

/** A running agent process. */
export interface AgentProcess {
  /** Resolves when the worker has stopped. */
  readonly stopped: Promise<void>;
  stop(signal: string): void;
}

function required<T>(value: T | undefined, setting: string): T {
  if (value === undefined) throw new ConfigError(setting, 'is required by the agent worker');
  return value;
}

/** Starts the worker from configuration; logs `agent ready` once it takes runs. */
export function startAgent(options: {
  readonly log: Logger;
  readonly config: GatewayConfig;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** @default an SSMClient in the configured region */
  readonly ssm?: Pick<SSMClient, 'send'>;
}): AgentProcess {
  const { log, config } = options;
  const queueUrl = required(config.agent.queueUrl, 'TOLLGATE_AGENT_QUEUE_URL');
  const gatewayUrl = required(config.agent.gatewayUrl, 'TOLLGATE_GATEWAY_URL');
  const table = required(config.tables.runs, 'TOLLGATE_TABLE_RUNS');
  const parameter = options.env.TOLLGATE_JWT_SECRET_PARAMETER || undefined;
  const secret = parameter
    ? new RefreshingSecret(ssmParameterReader(options.ssm ?? new SSMClient({ region: config.region }), parameter), { clock: systemClock })
    : undefined;
  const jwtSecret = secret ? () => secret.get() : required(options.env.TOLLGATE_JWT_SECRET || undefined, 'TOLLGATE_JWT_SECRET_PARAMETER or TOLLGATE_JWT_SECRET');
  const issuer = new TokenIssuer({
    keys: new JwtKeyRingSource(jwtSecret),
    clock: systemClock,
    ...config.jwt,
  });
  const dynamodb = createDynamoDbClient({ region: config.region, ...(config.dynamodbEndpoint ? { endpoint: config.dynamodbEndpoint } : {}) });
  const worker = createAgentWorker({
    settings: config.agent,
    gatewayUrl,
    queue: new SqsRunQueue({ client: new SQSClient({ region: config.region }), queueUrl, log }),
    runs: new DynamoDbRunStore(dynamodb, { table, retentionDays: config.agent.runRetentionDays }),
    tokens: serviceTokens(issuer),
    ...(secret ? { onUnauthorized: () => secret.invalidate() } : {}),
    clock: systemClock,
    log,
  });
  const stopped = worker.start();
  log.log('info', 'agent ready', { stage: config.stage, pid: process.pid, maxIterations: config.agent.maxIterations });
  let stopping = false;
  return {
    stopped,
    stop(signal) {
      if (stopping) return;
      stopping = true;
      log.log('info', 'agent stopping', { signal });
      void worker.stop();
    },
  };
}

if (require.main === module) {
  const log = jsonLogger();
  // Handlers go in before the ready line: a supervisor may signal as soon as it sees it.
  let agent: AgentProcess | undefined;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => agent?.stop(signal));
  try {
    agent = startAgent({ log, config: loadConfig(process.env), env: process.env });
    void agent.stopped.then(() => {
      log.log('info', 'agent stopped');
      process.exit(0);
    });
  } catch (err) {
    log.log('error', 'agent failed to start', { error: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  }
}
