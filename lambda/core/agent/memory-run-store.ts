/**
 * {@link RunStore} in process memory, with the same optimistic-concurrency contract as the DynamoDB store
 * (tests of the worker and the memory bench; nothing survives a restart).
 */
import { type AgentRun, RunConflictError, type RunStore } from './run';

export class InMemoryRunStore implements RunStore {
  private readonly runs = new Map<string, AgentRun>();

  async create(run: AgentRun): Promise<void> {
    if (this.runs.has(run.id)) throw new RunConflictError(`Run ${run.id} exists already.`, { code: 'run_conflict' });
    this.runs.set(run.id, run);
  }

  async get(id: string): Promise<AgentRun | undefined> {
    return this.runs.get(id);
  }

  async save(run: AgentRun): Promise<AgentRun> {
    const stored = this.runs.get(run.id);
    if (!stored || stored.version !== run.version) {
      throw new RunConflictError(`Run ${run.id} was changed by another writer.`, { code: 'run_conflict' });
    }
    const next = { ...run, version: run.version + 1 };
    this.runs.set(run.id, next);
    return next;
  }

  /** Forgets every run (a long bench keeps only what it measures). */
  clear(): void {
    this.runs.clear();
  }
}
