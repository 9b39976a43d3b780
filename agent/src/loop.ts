/**
 * The ReAct loop of one run: ask the model (through the gateway) → run the tool calls it makes → give it the
 * results → repeat, until it answers without a tool call or a guard stops it (guards.ts). Progress is saved
 * after every step, so a run that stops — or a worker that dies — keeps its steps, tokens, cost and outputs.
 *
 *   ┌──▶ guards (deadline, cost, iterations, stopping?) ──▶ prune ──▶ POST /v1/chat/completions
 *   │        │ stop: final status                                      │ cost += x-tollgate-cost-usd
 *   │                                                                  ▼
 *   └── save progress ◀── tool results (retry guard, backoff) ◀── tool calls?  ── none ──▶ succeeded
 */
import type { AgentRun, FinalRunStatus, RunOutput } from '../../lambda/core/agent/run';
import type { Clock } from '../../lambda/core/clock';
import type { Logger } from '../../lambda/core/log';
import { type ChatMessage, pruneConversation } from './conversation';
import { GatewayCallError, type GatewayClient, type ChatReply } from './gateway-client';
import { checkBeforeCall, type GuardLimits, toolCallSignature, ToolRetryGuard } from './guards';
import { BUILT_IN_TOOLS, type Tool, toolDefinitions, ToolError } from './tools';

export interface RunExecutorOptions {
  readonly gateway: GatewayClient;
  readonly clock: Clock;
  readonly log: Logger;
  /** Model calls per attempt. */
  readonly maxIterations: number;
  /** Wall-clock limit of an attempt. */
  readonly runTimeoutMs: number;
  /** First tool-retry backoff (doubles per retry). @default 250 */
  readonly toolRetryBaseMs?: number;
  /** Retries of a gateway call that failed in a retryable way (429 rate limit, 502/503/504). @default 3 */
  readonly maxCallRetries?: number;
  /** First backoff of a retried gateway call, when it sent no Retry-After. @default 500 */
  readonly callRetryBaseMs?: number;
  /** `max_tokens` of every call, bounding what one call can cost. @default none (the model's cap) */
  readonly maxTokensPerCall?: number;
  /** @default BUILT_IN_TOOLS */
  readonly tools?: readonly Tool[];
}

/** What the worker gives the loop for one run. */
export interface RunHooks {
  /** Records progress (the worker writes the runs table) and returns the saved run. */
  progress(run: AgentRun): Promise<AgentRun>;
  /** True once the worker is stopping: no new step starts. */
  stopRequested(): boolean;
  /** Aborted when the worker must stop at once: the in-flight call is cut. */
  readonly abort: AbortSignal;
}

export type RunOutcome =
  /** The run reached a final status (not saved yet: the worker records it, then deletes the message). */
  | { readonly kind: 'finished'; readonly run: AgentRun }
  /** The worker is stopping; the run goes back to the queue as it is. */
  | { readonly kind: 'interrupted'; readonly run: AgentRun };

/** Input up to this size is put in the task message; larger input is read with `get_item`. */
const INLINE_INPUT_BYTES = 16 * 1024;

const SYSTEM_PROMPT = [
  'You are the tollgate agent. You work through a task step by step, using the tools when they help.',
  'Record each result the task asks for with record_output. An empty tool result is a valid result: use it, do not retry.',
  'When the task is done, answer with your final summary and no tool call.',
].join(' ');

/** The task message: instructions and the input items (inline when small). */
export function taskMessage(run: Pick<AgentRun, 'instructions' | 'input'>): string {
  const bytes = run.input.reduce((n, i) => n + Buffer.byteLength(i), 0);
  if (run.input.length === 0) return run.instructions;
  if (bytes > INLINE_INPUT_BYTES) {
    return `${run.instructions}\n\nThe input has ${run.input.length} items (0 to ${run.input.length - 1}); read them with get_item.`;
  }
  return `${run.instructions}\n\nInput items (${run.input.length}):\n${run.input.map((item, i) => `[${i}] ${item}`).join('\n')}`;
}

class Interrupted extends Error {}
class TimedOut extends Error {}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class RunExecutor {
  private readonly tools: ReadonlyMap<string, Tool>;
  private readonly toolSpecs: unknown[];

  constructor(private readonly o: RunExecutorOptions) {
    const tools = o.tools ?? BUILT_IN_TOOLS;
    this.tools = new Map(tools.map((t) => [t.name, t]));
    this.toolSpecs = toolDefinitions(tools);
  }

  /** Executes one attempt of `run` (already marked running by the worker). */
  async execute(run: AgentRun, hooks: RunHooks): Promise<RunOutcome> {
    const { clock, log } = this.o;
    const startedAt = clock.now();
    const limits: GuardLimits = {
      maxIterations: this.o.maxIterations,
      maxCostMicros: run.maxCostMicros,
      deadline: startedAt + this.o.runTimeoutMs,
    };
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), this.o.runTimeoutMs);
    timer.unref?.();
    const signal = AbortSignal.any([hooks.abort, deadline.signal]);
    const retries = new ToolRetryGuard(this.o.toolRetryBaseMs ?? 250);
    // A new attempt starts the conversation again, so it records its outputs afresh.
    const outputs: RunOutput[] = [];
    let messages: ChatMessage[] = [
      // The run id makes every run's conversation its own (the gateway's loop guard counts identical requests).
      { role: 'system', content: `${SYSTEM_PROMPT} (Run ${run.id}.)` },
      { role: 'user', content: taskMessage(run) },
    ];
    let current = run;
    let iterations = 0;
    const finish = (status: FinalRunStatus, error?: string): RunOutcome => ({
      kind: 'finished',
      run: { ...current, status, outputs: [...outputs], ...(error ? { error } : {}), finishedAt: new Date(clock.now()).toISOString() },
    });
    const interrupted = (): RunOutcome => ({ kind: 'interrupted', run: { ...current, outputs: [...outputs] } });
    try {
      for (;;) {
        if (hooks.stopRequested()) return interrupted();
        const stop = checkBeforeCall({ iterations, spentMicros: current.costMicros, now: clock.now() }, limits);
        if (stop === 'timed_out') return finish(stop, `The run passed its wall-clock limit of ${this.o.runTimeoutMs} ms.`);
        if (stop === 'stopped_cost') return finish(stop, 'The run reached its cost cap.');
        if (stop === 'stopped_iterations') return finish(stop, `The run reached its limit of ${this.o.maxIterations} model calls.`);

        messages = [...pruneConversation(messages)];
        let reply: ChatReply;
        try {
          reply = await this.call(current, messages, signal, deadline.signal, hooks.abort);
        } catch (err) {
          if (err instanceof Interrupted) return interrupted();
          if (err instanceof TimedOut) return finish('timed_out', `The run passed its wall-clock limit of ${this.o.runTimeoutMs} ms.`);
          if (err instanceof GatewayCallError) {
            if (err.code === 'insufficient_quota') return finish('stopped_cost', `The gateway refused the call: ${err.message}`);
            if (err.code === 'loop_detected') return finish('stopped_loop', `The gateway's loop guard refused the call: ${err.message}`);
            return finish('failed', `The gateway answered ${err.status}: ${err.message}`);
          }
          throw err;
        }
        iterations += 1;
        current = {
          ...current,
          steps: current.steps + 1,
          inputTokens: current.inputTokens + reply.inputTokens,
          outputTokens: current.outputTokens + reply.outputTokens,
          costMicros: current.costMicros + reply.costMicros,
          ...(reply.content ? { result: reply.content } : {}),
        };
        messages.push({ role: 'assistant', content: reply.content || null, ...(reply.toolCalls.length ? { tool_calls: reply.toolCalls } : {}) });
        if (reply.toolCalls.length === 0) return finish('succeeded');

        for (const call of reply.toolCalls) {
          const outcome = await this.runTool(call.function.name, call.function.arguments, { input: run.input, outputs }, retries, signal);
          if (outcome.kind === 'refused') {
            return finish('stopped_loop', `The tool call ${call.function.name}(${call.function.arguments}) kept failing; it was refused after ${outcome.failures} attempts.`);
          }
          if (outcome.kind === 'aborted') return deadline.signal.aborted ? finish('timed_out', `The run passed its wall-clock limit of ${this.o.runTimeoutMs} ms.`) : interrupted();
          messages.push({ role: 'tool', tool_call_id: call.id, content: outcome.content });
        }
        current = await hooks.progress({ ...current, outputs: [...outputs] });
      }
    } catch (err) {
      log.log('error', 'agent run failed', { runId: run.id, error: errorMessage(err) });
      return finish('failed', `The agent hit an unexpected error: ${errorMessage(err)}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** One model call, retried (bounded, with backoff) when the gateway says a short wait fixes it. */
  private async call(run: AgentRun, messages: readonly ChatMessage[], signal: AbortSignal, deadline: AbortSignal, abort: AbortSignal): Promise<ChatReply> {
    const maxRetries = this.o.maxCallRetries ?? 3;
    const base = this.o.callRetryBaseMs ?? 500;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.o.gateway.chat(
          { model: run.model, messages, tools: this.toolSpecs, ...(this.o.maxTokensPerCall ? { maxTokens: this.o.maxTokensPerCall } : {}) },
          { userId: run.userId, ...(run.orgId ? { orgId: run.orgId } : {}), signal },
        );
      } catch (err) {
        if (deadline.aborted) throw new TimedOut();
        if (abort.aborted) throw new Interrupted();
        if (!(err instanceof GatewayCallError) || !err.retryable || attempt >= maxRetries) throw err;
        const waitMs = err.retryAfterMs ?? base * 2 ** attempt;
        this.o.log.log('warn', 'agent gateway call retried', { runId: run.id, status: err.status, code: err.code, waitMs });
        if (!(await sleep(waitMs, signal))) throw deadline.aborted ? new TimedOut() : new Interrupted();
      }
    }
  }

  private async runTool(
    name: string,
    rawArgs: string,
    context: { readonly input: readonly string[]; readonly outputs: RunOutput[] },
    retries: ToolRetryGuard,
    signal: AbortSignal,
  ): Promise<{ kind: 'result'; content: string } | { kind: 'refused'; failures: number } | { kind: 'aborted' }> {
    let args: unknown;
    try {
      args = rawArgs.trim() === '' ? {} : JSON.parse(rawArgs);
    } catch {
      args = rawArgs;
    }
    const signature = toolCallSignature(name, args);
    const admitted = retries.admit(signature);
    if (admitted.kind === 'refuse') return { kind: 'refused', failures: admitted.failures };
    if (admitted.waitMs > 0 && !(await sleep(admitted.waitMs, signal))) return { kind: 'aborted' };
    try {
      const tool = this.tools.get(name);
      if (!tool) throw new ToolError(`There is no tool "${name}"; use one of ${[...this.tools.keys()].join(', ')}.`);
      if (typeof args !== 'object' || args === null || Array.isArray(args)) throw new ToolError('The arguments must be a JSON object.');
      const content = await tool.run(args as Record<string, unknown>, context);
      retries.succeeded(signature);
      // An empty result is an answer: it goes back to the model as it is.
      return { kind: 'result', content };
    } catch (err) {
      if (!(err instanceof ToolError)) throw err;
      retries.failed(signature);
      return { kind: 'result', content: `Error: ${err.message}` };
    }
  }
}

/** Waits `ms`; false when `signal` aborted first. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
