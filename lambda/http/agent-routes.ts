/**
 * Agent runs over HTTP (scope `ai:agent`), for the caller's own user:
 *
 *   POST /v1/agent/runs        {"instructions", "input": [...], "model", "maxCostUsd"?}  → 202 {"id"}
 *   GET  /v1/agent/runs/{id}   status, steps, tokens, cost, result and outputs
 *
 * A run is stored `queued` and then put on the run queue; the agent worker executes it. A run that cannot be
 * queued is recorded as failed and the caller gets 503. Another user's run is a 404, as a missing one.
 */
import { randomUUID } from 'node:crypto';
import type { Authenticator } from '../core/auth';
import type { Clock } from '../core/clock';
import { type AgentRun, newRun, parseRunRequest, RUN_ID_PATTERN, type RunStore } from '../core/agent/run';
import type { RunQueue } from '../core/agent/queue';
import { NotFoundError } from '../core/errors';
import type { Logger } from '../core/log';
import { formatUsd, type MicroUsd } from '../core/money';
import type { Route, RouteContext } from './app';
import { jsonResponse } from './dialects';
import { parseJsonBody } from './schemas';

export interface AgentRoutesOptions {
  readonly runs: RunStore;
  readonly queue: RunQueue;
  readonly authenticator: Authenticator;
  readonly clock: Clock;
  readonly log: Logger;
  /** The cap of a run that names none. */
  readonly defaultMaxCostMicros: MicroUsd;
  /** Throws (400) when the gateway cannot serve the model, so a doomed run is refused before it is queued. */
  readonly checkModel?: (model: string) => void;
  /** @default `run_` + a random UUID without dashes */
  readonly newRunId?: () => string;
}

/** The public view of a run (snake_case, money as USD strings as the gateway's headers print it). */
export function renderRun(run: AgentRun): Record<string, unknown> {
  return {
    id: run.id,
    object: 'agent.run',
    status: run.status,
    model: run.model,
    steps: run.steps,
    usage: { input_tokens: run.inputTokens, output_tokens: run.outputTokens, total_tokens: run.inputTokens + run.outputTokens },
    cost_usd: formatUsd(run.costMicros),
    max_cost_usd: formatUsd(run.maxCostMicros),
    result: run.result ?? null,
    outputs: run.outputs.map((o) => ({ ...(o.item !== undefined ? { item: o.item } : {}), value: o.value })),
    error: run.error ?? null,
    attempts: run.attempts,
    created_at: run.createdAt,
    started_at: run.startedAt ?? null,
    finished_at: run.finishedAt ?? null,
  };
}

/** The agent routes, for GatewayApp's `routes` option. */
export function createAgentRoutes(options: AgentRoutesOptions): Route[] {
  const { runs, queue, authenticator, clock, log } = options;
  const newRunId = options.newRunId ?? (() => `run_${randomUUID().replace(/-/g, '')}`);
  const caller = async (ctx: RouteContext) => {
    const principal = await ctx.authenticate();
    authenticator.authorize(principal, 'ai:agent');
    return principal;
  };
  const notFound = (id: string) => new NotFoundError(`No agent run ${id}.`, { code: 'run_not_found', param: 'id' });
  return [
    {
      method: 'POST',
      path: '/v1/agent/runs',
      handler: async (ctx) => {
        const principal = await caller(ctx);
        const request = parseRunRequest(parseJsonBody(ctx.req.body));
        options.checkModel?.(request.model);
        const run = newRun(
          request,
          { id: newRunId(), userId: principal.userId, orgId: principal.orgId, keyId: principal.keyId },
          { now: clock.now(), defaultMaxCostMicros: options.defaultMaxCostMicros },
        );
        await runs.create(run);
        try {
          await queue.enqueue(run.id);
        } catch (err) {
          // Nobody will ever take it: say so on the run rather than leave it queued forever.
          await runs
            .save({ ...run, status: 'failed', error: 'The run could not be queued.', finishedAt: new Date(clock.now()).toISOString() })
            .catch((saveErr: unknown) => {
              log.log('error', 'agent run left queued without a message', {
                runId: run.id,
                error: saveErr instanceof Error ? saveErr.message : String(saveErr),
              });
            });
          throw err;
        }
        log.log('info', 'agent run queued', { requestId: ctx.requestId, runId: run.id, userId: run.userId, model: run.model });
        return jsonResponse(202, { id: run.id, object: 'agent.run', status: run.status }, { location: `/v1/agent/runs/${run.id}` });
      },
    },
    {
      method: 'GET',
      path: '/v1/agent/runs/:id',
      handler: async (ctx) => {
        const principal = await caller(ctx);
        const id = ctx.params.id ?? '';
        if (!RUN_ID_PATTERN.test(id)) throw notFound(id);
        const run = await runs.get(id);
        if (!run || run.userId !== principal.userId) throw notFound(id);
        return jsonResponse(200, renderRun(run));
      },
    },
  ];
}
