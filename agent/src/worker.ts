/**
 * The agent worker: takes runs from the queue one at a time and executes them (loop.ts). A message is deleted
 * only after its run's final status is recorded; if the worker dies first, the queue delivers it again.
 *
 * Stopping (SIGTERM from ECS, Ctrl-C locally):
 *
 *   stop() ──▶ no new receive ──▶ current run may finish within `shutdownGraceMs`
 *                                   │ no new step starts after stop()
 *                                   ▼ grace over: the in-flight call is aborted
 *              run saved back as `queued` ──▶ message released (SQS visibility 0 / in-memory re-enqueue)
 */
import { type AgentRun, isFinalStatus, RunConflictError, type RunStore } from '../../lambda/core/agent/run';
import type { RunMessage, RunQueue } from '../../lambda/core/agent/queue';
import type { Clock } from '../../lambda/core/clock';
import type { Logger } from '../../lambda/core/log';
import type { RunExecutor } from './loop';

export interface AgentWorkerOptions {
  readonly queue: RunQueue;
  readonly runs: RunStore;
  readonly executor: RunExecutor;
  readonly clock: Clock;
  readonly log: Logger;
  /** How long one receive waits for a message. @default 20_000 */
  readonly receiveWaitMs?: number;
  /** How long a stopping worker lets its current run go on. @default 25_000 */
  readonly shutdownGraceMs?: number;
  /** Attempts (worker starts) of one run before it is recorded as failed. @default 3 */
  readonly maxAttempts?: number;
  /** Pause after the queue or the store failed, before trying again. @default 1_000 */
  readonly errorBackoffMs?: number;
}

/** Counters of what the worker did (logs, tests, the memory bench). */
export interface WorkerStats {
  readonly processed: number;
  readonly returned: number;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class AgentWorker {
  private stopping = false;
  private readonly receiveAbort = new AbortController();
  private runAbort: AbortController | undefined;
  private loop: Promise<void> | undefined;
  private processed = 0;
  private returned = 0;

  constructor(private readonly o: AgentWorkerOptions) {}

  /** Starts taking runs; resolves when the worker has stopped (after {@link stop}). */
  start(): Promise<void> {
    this.loop ??= this.work();
    return this.loop;
  }

  get stats(): WorkerStats {
    return { processed: this.processed, returned: this.returned };
  }

  /**
   * Stops gracefully: takes no new run, lets the current one finish within the grace period, then returns it
   * to the queue. Resolves when the worker has stopped.
   */
  async stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      this.receiveAbort.abort();
      const graceMs = this.o.shutdownGraceMs ?? 25_000;
      const hard = setTimeout(() => this.runAbort?.abort(), graceMs);
      hard.unref?.();
      void this.loop?.finally(() => clearTimeout(hard));
    }
    await this.loop;
  }

  private async work(): Promise<void> {
    const { queue, log } = this.o;
    while (!this.stopping) {
      let message: RunMessage | undefined;
      try {
        message = await queue.receive({ waitMs: this.o.receiveWaitMs ?? 20_000, signal: this.receiveAbort.signal });
      } catch (err) {
        log.log('error', 'agent queue receive failed', { error: errorMessage(err) });
        await this.pause();
        continue;
      }
      if (!message) continue;
      try {
        await this.process(message);
      } catch (err) {
        // The message is neither deleted nor released: the queue delivers it again after its timeout.
        log.log('error', 'agent run could not be recorded', { runId: message.runId, error: errorMessage(err) });
        await this.pause();
      }
    }
  }

  private async process(message: RunMessage): Promise<void> {
    const { queue, runs, log, clock } = this.o;
    const stored = await runs.get(message.runId);
    if (!stored) {
      log.log('warn', 'agent queue message for an unknown run', { runId: message.runId });
      await queue.delete(message);
      return;
    }
    if (isFinalStatus(stored.status)) {
      // Recorded already (a redelivery after the delete was lost): nothing to do.
      await queue.delete(message);
      return;
    }
    const now = new Date(clock.now()).toISOString();
    if (stored.attempts >= (this.o.maxAttempts ?? 3)) {
      await runs.save({ ...stored, status: 'failed', error: `The run was started ${stored.attempts} times without finishing.`, finishedAt: now });
      await queue.delete(message);
      return;
    }
    let run: AgentRun;
    try {
      run = await runs.save({ ...stored, status: 'running', attempts: stored.attempts + 1, startedAt: stored.startedAt ?? now });
    } catch (err) {
      if (!(err instanceof RunConflictError)) throw err;
      // Another worker holds this run (a duplicate delivery); its own message decides the run's fate.
      log.log('warn', 'agent run taken by another worker', { runId: stored.id });
      await queue.delete(message);
      return;
    }
    log.log('info', 'agent run started', { runId: run.id, attempt: run.attempts, model: run.model });
    this.runAbort = new AbortController();
    let latest = run;
    const outcome = await this.o.executor.execute(run, {
      progress: async (progress) => {
        latest = await runs.save(progress);
        return latest;
      },
      stopRequested: () => this.stopping,
      abort: this.runAbort.signal,
    });
    this.runAbort = undefined;
    if (outcome.kind === 'interrupted') {
      await runs.save({ ...outcome.run, version: latest.version, status: 'queued' });
      await queue.release(message);
      this.returned += 1;
      log.log('info', 'agent run returned to the queue', { runId: run.id, steps: outcome.run.steps });
      return;
    }
    const recorded = await runs.save({ ...outcome.run, version: latest.version });
    await queue.delete(message);
    this.processed += 1;
    log.log('info', 'agent run finished', {
      runId: run.id,
      status: recorded.status,
      steps: recorded.steps,
      costMicros: recorded.costMicros,
      ...(recorded.error ? { reason: recorded.error } : {}),
    });
  }

  private pause(): Promise<void> {
    const signal = this.receiveAbort.signal;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, this.o.errorBackoffMs ?? 1_000);
      signal.addEventListener('abort', done, { once: true });
    });
  }
}
