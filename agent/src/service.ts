/**
 * Builds an agent worker from settings: the gateway client (service JWTs on behalf of each run's user), the
 * ReAct executor and the queue loop. The container entry (main.ts) and the local server (`npm start`, with an
 * in-memory queue) both call {@link createAgentWorker}, so they run the same code.
 */
import type { AgentSettings } from '../../lambda/config';
import type { RunQueue } from '../../lambda/core/agent/queue';
import type { RunStore } from '../../lambda/core/agent/run';
import type { Clock } from '../../lambda/core/clock';
import type { TokenIssuer } from '../../lambda/core/jwt';
import type { Logger } from '../../lambda/core/log';
import { GatewayClient, type ServiceTokenSource } from './gateway-client';
import { RunExecutor, type RunExecutorOptions } from './loop';
import { AgentWorker, type AgentWorkerOptions } from './worker';

/** The service the agent's JWTs name (`sub`); it must be registered (`svc:agent` in the keys table). */
export const AGENT_SERVICE = 'agent';

/** The scopes the agent's tokens ask for: model calls only. */
export const AGENT_TOKEN_SCOPES = ['ai:complete'] as const;

/** Short-lived tokens, one per call: a leaked one is worth minutes, and a rotated secret is picked up at once. */
export function serviceTokens(issuer: TokenIssuer, options: { readonly ttlSeconds?: number } = {}): ServiceTokenSource {
  return async ({ userId, orgId }) => {
    const { token } = await issuer.issue({
      service: AGENT_SERVICE,
      scopes: AGENT_TOKEN_SCOPES,
      onBehalfOf: userId,
      ...(orgId ? { orgId } : {}),
      ttlSeconds: options.ttlSeconds ?? 300,
    });
    return token;
  };
}

export interface CreateAgentWorkerOptions {
  readonly settings: Pick<AgentSettings, 'maxIterations' | 'runTimeoutMs' | 'shutdownGraceMs'>;
  /** The gateway's base URL (without `/v1`). */
  readonly gatewayUrl: string;
  readonly queue: RunQueue;
  readonly runs: RunStore;
  readonly tokens: ServiceTokenSource;
  /** Called when the gateway refuses a token (401), before one retry: re-read the `jwt-secret`. */
  readonly onUnauthorized?: () => void | Promise<void>;
  readonly clock: Clock;
  readonly log: Logger;
  /** @default globalThis.fetch */
  readonly fetch?: typeof fetch;
  /** Finer loop settings (tests use short backoffs). */
  readonly executor?: Partial<Omit<RunExecutorOptions, 'gateway' | 'clock' | 'log'>>;
  /** Finer worker settings (tests use short receive waits). */
  readonly worker?: Partial<Omit<AgentWorkerOptions, 'queue' | 'runs' | 'executor' | 'clock' | 'log'>>;
}

export function createAgentWorker(options: CreateAgentWorkerOptions): AgentWorker {
  const { settings, clock, log } = options;
  const gateway = new GatewayClient({
    baseUrl: options.gatewayUrl,
    token: options.tokens,
    ...(options.onUnauthorized ? { onUnauthorized: options.onUnauthorized } : {}),
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const executor = new RunExecutor({
    gateway,
    clock,
    log,
    maxIterations: settings.maxIterations,
    runTimeoutMs: settings.runTimeoutMs,
    ...options.executor,
  });
  return new AgentWorker({
    queue: options.queue,
    runs: options.runs,
    executor,
    clock,
    log,
    shutdownGraceMs: settings.shutdownGraceMs,
    ...options.worker,
  });
}
