/**
 * The queue between the gateway (which enqueues a run id) and the agent worker (which takes runs one at a
 * time). SQS in AWS ({@link SqsRunQueue} in sqs-queue.ts), {@link InMemoryRunQueue} on one machine.
 *
 * Delivery is at least once: a received message stays invisible to other workers until it is deleted (the
 * run is recorded) or released (the worker is stopping), and comes back by itself if the worker dies.
 */

/** A received message: which run, and the handle to delete or release it with. */
export interface RunMessage {
  readonly runId: string;
  /** Opaque handle of this delivery (SQS receipt handle). */
  readonly receipt: string;
  /** How many times the message has been received, this time included. */
  readonly receiveCount: number;
}

export interface ReceiveOptions {
  /** Longest wait for a message (long polling); resolves undefined when none came. */
  readonly waitMs: number;
  /** Ends the wait early (resolves undefined). */
  readonly signal?: AbortSignal;
}

export interface RunQueue {
  enqueue(runId: string): Promise<void>;
  /** Takes the next message, waiting up to `waitMs`. */
  receive(options: ReceiveOptions): Promise<RunMessage | undefined>;
  /** The run is recorded: the message is done. */
  delete(message: RunMessage): Promise<void>;
  /** Gives the message back for another worker at once (a worker stopping mid-run). */
  release(message: RunMessage): Promise<void>;
}

interface Pending {
  readonly runId: string;
  receiveCount: number;
}

/**
 * A queue in process memory for `npm start` and tests, with the same contract as SQS: a received message is
 * in flight until deleted or released. Nothing survives a restart.
 */
export class InMemoryRunQueue implements RunQueue {
  private readonly pending: Pending[] = [];
  private readonly inFlight = new Map<string, Pending>();
  private readonly waiters = new Set<() => void>();
  private nextReceipt = 0;

  async enqueue(runId: string): Promise<void> {
    this.pending.push({ runId, receiveCount: 0 });
    this.wake();
  }

  async receive(options: ReceiveOptions): Promise<RunMessage | undefined> {
    const deadline = Date.now() + options.waitMs;
    for (;;) {
      const next = this.pending.shift();
      if (next) {
        next.receiveCount += 1;
        const receipt = `r${++this.nextReceipt}`;
        this.inFlight.set(receipt, next);
        return { runId: next.runId, receipt, receiveCount: next.receiveCount };
      }
      const left = deadline - Date.now();
      if (left <= 0 || options.signal?.aborted) return undefined;
      await this.waitForWork(left, options.signal);
    }
  }

  async delete(message: RunMessage): Promise<void> {
    this.inFlight.delete(message.receipt);
  }

  async release(message: RunMessage): Promise<void> {
    const entry = this.inFlight.get(message.receipt);
    if (!entry) return;
    this.inFlight.delete(message.receipt);
    this.pending.unshift(entry);
    this.wake();
  }

  /** Messages waiting to be received, oldest first (tests, the local status line). */
  waitingRunIds(): string[] {
    return this.pending.map((p) => p.runId);
  }

  /** Messages received and neither deleted nor released. */
  inFlightCount(): number {
    return this.inFlight.size;
  }

  private wake(): void {
    for (const wake of [...this.waiters]) wake();
  }

  private waitForWork(ms: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}
