/**
 * The agent run model (issue 6). A run is instructions, input items, a model and a cost cap, executed by the
 * agent worker as a ReAct loop through the gateway's own `/v1/chat/completions`, on behalf of the user who
 * created it. The gateway stores it `queued`; the worker moves it to `running` and then to a final status:
 *
 *   queued ─▶ running ─┬─▶ succeeded
 *      ▲               ├─▶ failed                 (the gateway refused, the model is unusable, too many attempts)
 *      │               ├─▶ stopped_iterations     (the iteration guard)
 *      │               ├─▶ stopped_cost           (the run's cost cap, or the user's budget)
 *      │               ├─▶ stopped_loop           (the same failing tool call past its retries)
 *      │               └─▶ timed_out              (the wall-clock guard)
 *      └──────────────────  a worker stopping (SIGTERM) returns an unfinished run to the queue
 *
 * A run that stops on a guard keeps what it produced (steps, tokens, cost, recorded outputs, the last answer).
 * Money is integer micro-USD.
 */
import { InternalError, InvalidRequestError } from '../errors';
import { type MicroUsd, usdToMicros } from '../money';

export const RUN_STATUSES = [
  'queued',
  'running',
  'succeeded',
  'failed',
  'stopped_iterations',
  'stopped_cost',
  'stopped_loop',
  'timed_out',
] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

/** A status a run never leaves. */
export type FinalRunStatus = Exclude<RunStatus, 'queued' | 'running'>;

export function isFinalStatus(status: RunStatus): status is FinalRunStatus {
  return status !== 'queued' && status !== 'running';
}

/** One thing the run produced with the `record_output` tool (e.g. a review's label). */
export interface RunOutput {
  /** The input item it is about (0-based), when it is about one. */
  readonly item?: number;
  readonly value: string;
}

/** A run as stored. */
export interface AgentRun {
  readonly id: string;
  /** Whose budgets the run's calls are charged to (the caller's user). */
  readonly userId: string;
  readonly orgId?: string;
  /** The key (or `svc:<service>`) that created the run. */
  readonly createdByKeyId: string;
  readonly status: RunStatus;
  readonly instructions: string;
  readonly input: readonly string[];
  /** The model as the caller named it (any model the gateway serves). */
  readonly model: string;
  /** The run's cost cap. */
  readonly maxCostMicros: MicroUsd;
  /** Model calls made so far (across attempts). */
  readonly steps: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
  /** Sum of the gateway's `x-tollgate-cost-usd` over every call (across attempts). */
  readonly costMicros: MicroUsd;
  /** The final answer, or the last answer a stopped run gave. */
  readonly result?: string;
  readonly outputs: readonly RunOutput[];
  /** Why a run failed or stopped, for people. */
  readonly error?: string;
  /** How many times a worker has started it. */
  readonly attempts: number;
  /** ISO-8601. */
  readonly createdAt: string;
  readonly startedAt?: string;
  readonly finishedAt?: string;
  /** Optimistic concurrency: every save increments it, conditional on the value read. */
  readonly version: number;
}

/** What a caller sends to create a run. */
export interface RunRequest {
  readonly instructions: string;
  readonly input: readonly string[];
  readonly model: string;
  readonly maxCostMicros?: MicroUsd;
}

/** Limits on a run's request, so a run item stays far below DynamoDB's 400 KB. */
export const RUN_LIMITS = {
  maxInputItems: 1_000,
  /** Instructions plus every input item, in UTF-8 bytes. */
  maxRequestBytes: 256 * 1024,
  maxOutputs: 1_000,
  /** Recorded outputs plus the result, in UTF-8 bytes. */
  maxProducedBytes: 64 * 1024,
} as const;

function bad(message: string, param: string): InvalidRequestError {
  return new InvalidRequestError(message, { code: 'invalid_agent_run', param });
}

/**
 * Validates a `POST /v1/agent/runs` body (`{"instructions", "input", "model", "maxCostUsd"}`); throws
 * {@link InvalidRequestError} naming the field.
 */
export function parseRunRequest(body: Readonly<Record<string, unknown>>): RunRequest {
  const { instructions, input, model, maxCostUsd } = body;
  if (typeof instructions !== 'string' || instructions.trim() === '') {
    throw bad('"instructions" must be a non-empty string.', 'instructions');
  }
  const items = input === undefined ? [] : input;
  if (!Array.isArray(items) || !items.every((i): i is string => typeof i === 'string')) {
    throw bad('"input" must be a list of strings.', 'input');
  }
  if (items.length > RUN_LIMITS.maxInputItems) {
    throw bad(`"input" has ${items.length} items; at most ${RUN_LIMITS.maxInputItems} are accepted.`, 'input');
  }
  const bytes = Buffer.byteLength(instructions) + items.reduce((n, i) => n + Buffer.byteLength(i), 0);
  if (bytes > RUN_LIMITS.maxRequestBytes) {
    throw bad(`The run's instructions and input are ${bytes} bytes; at most ${RUN_LIMITS.maxRequestBytes} are accepted.`, 'input');
  }
  if (typeof model !== 'string' || model.trim() === '' || model.length > 256) {
    throw bad('"model" must name a model, e.g. "gpt-4o".', 'model');
  }
  let maxCostMicros: MicroUsd | undefined;
  if (maxCostUsd !== undefined && maxCostUsd !== null) {
    if (typeof maxCostUsd !== 'number' && typeof maxCostUsd !== 'string') {
      throw bad('"maxCostUsd" must be a dollar amount such as 1 or "0.50".', 'maxCostUsd');
    }
    try {
      maxCostMicros = usdToMicros(maxCostUsd);
    } catch {
      throw bad('"maxCostUsd" must be a positive dollar amount with at most 6 decimals.', 'maxCostUsd');
    }
    if (maxCostMicros <= 0) throw bad('"maxCostUsd" must be more than 0.', 'maxCostUsd');
  }
  return { instructions, input: items, model: model.trim(), ...(maxCostMicros !== undefined ? { maxCostMicros } : {}) };
}

/** A new `queued` run. */
export function newRun(
  request: RunRequest,
  owner: { readonly id: string; readonly userId: string; readonly orgId?: string; readonly keyId: string },
  options: { readonly now: number; readonly defaultMaxCostMicros: MicroUsd },
): AgentRun {
  return {
    id: owner.id,
    userId: owner.userId,
    ...(owner.orgId ? { orgId: owner.orgId } : {}),
    createdByKeyId: owner.keyId,
    status: 'queued',
    instructions: request.instructions,
    input: request.input,
    model: request.model,
    maxCostMicros: request.maxCostMicros ?? options.defaultMaxCostMicros,
    steps: 0,
    inputTokens: 0,
    outputTokens: 0,
    costMicros: 0,
    outputs: [],
    attempts: 0,
    createdAt: new Date(options.now).toISOString(),
    version: 0,
  };
}

/** A save lost the race for a run: another writer changed it since it was read. */
export class RunConflictError extends InternalError {}

/** The runs table. */
export interface RunStore {
  /** Stores a new run; fails if the id exists. */
  create(run: AgentRun): Promise<void>;
  get(id: string): Promise<AgentRun | undefined>;
  /**
   * Writes `run` if the stored version is still `run.version`, and returns it with the version incremented.
   * Throws {@link RunConflictError} when another writer got there first.
   */
  save(run: AgentRun): Promise<AgentRun>;
}

/** A run id: `run_` and 32 hex digits. */
export const RUN_ID_PATTERN = /^run_[0-9a-f]{32}$/;
