/**
 * The agent worker's entry point (the agent issue fills in the work loop). Today it proves the container's
 * lifecycle: it starts, logs one ready line, stays up, and on SIGTERM (what ECS sends before stopping a task)
 * or SIGINT it logs and exits with status 0 so deployments drain cleanly.
 */
import { jsonLogger, type Logger } from '../../lambda/core/log';

export interface AgentWorker {
  /** Resolves when the worker has stopped. */
  readonly stopped: Promise<void>;
  stop(signal: string): void;
}

/** Starts the worker: logs readiness and keeps the process alive until {@link AgentWorker.stop}. */
export function startAgent(options: { readonly log: Logger; readonly stage: string }): AgentWorker {
  let release: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => {
    release = resolve;
  });
  // Keeps the event loop alive until stopped; the agent's work loop replaces this.
  const keepAlive = setInterval(() => undefined, 60_000);
  options.log.log('info', 'agent ready', { stage: options.stage, pid: process.pid });
  let stopping = false;
  return {
    stopped,
    stop(signal) {
      if (stopping) return;
      stopping = true;
      options.log.log('info', 'agent stopping', { signal });
      clearInterval(keepAlive);
      release();
    },
  };
}

if (require.main === module) {
  const log = jsonLogger();
  // Handlers go in before the ready line: a supervisor may signal as soon as it sees it.
  let worker: AgentWorker | undefined;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => worker?.stop(signal));
  worker = startAgent({ log, stage: process.env.TOLLGATE_STAGE ?? 'local' });
  void worker.stopped.then(() => {
    log.log('info', 'agent stopped');
    process.exitCode = 0;
  });
}
