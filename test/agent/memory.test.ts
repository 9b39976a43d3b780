/**
 * 200 runs in a row in one worker: the worker, the loop, the conversation and the tools are the real ones;
 * the gateway is answered in process (a scripted `fetch`), so the figure is the worker's own memory. The
 * end-to-end figure through a real gateway and DynamoDB Local is printed by `npx tsx bench/agent-memory.ts`.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createAgentWorker } from '../../agent/src/service';
import { InMemoryRunQueue } from '../../lambda/core/agent/queue';
import { InMemoryRunStore } from '../../lambda/core/agent/memory-run-store';
import { newRun } from '../../lambda/core/agent/run';
import { systemClock } from '../../lambda/core/clock';
import { silentLogger } from '../../lambda/core/log';

function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
}

/** A gateway in process: the first call asks for a tool, the second answers; each is billed $0.00001. */
const scriptedGateway: typeof fetch = async (_url, init) => {
  const body = JSON.parse(String(init?.body)) as { messages: Array<{ role: string }> };
  const answered = body.messages.some((m) => m.role === 'tool');
  const message = answered
    ? { role: 'assistant', content: 'positive' }
    : { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_item', arguments: '{"index":0}' } }] };
  return new Response(JSON.stringify({ choices: [{ index: 0, message }], usage: { prompt_tokens: 4_000, completion_tokens: 3 } }), {
    status: 200,
    headers: { 'content-type': 'application/json', 'x-tollgate-cost-usd': '0.000010' },
  });
};

describe('agent worker memory', () => {
  it('when one worker executes 200 runs in a row, its heap does not grow with the number of runs', async () => {
    const queue = new InMemoryRunQueue();
    const runs = new InMemoryRunStore();
    const worker = createAgentWorker({
      settings: { maxIterations: 20, runTimeoutMs: 60_000, shutdownGraceMs: 1_000 },
      gatewayUrl: 'http://gateway.invalid',
      queue,
      runs,
      tokens: async () => 'token',
      clock: systemClock,
      log: silentLogger,
      fetch: scriptedGateway,
      worker: { receiveWaitMs: 50 },
    });
    void worker.start();
    // Each run carries 16 KB of input, so a worker that kept runs or conversations would grow by megabytes.
    const review = 'This product is fine. '.repeat(745);
    let created = 0;
    const batch = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const run = newRun(
          { instructions: 'Classify the review.', input: [review], model: 'gpt-4o-mini' },
          { id: `run_${(created++).toString(16).padStart(32, '0')}`, userId: 'alice', keyId: 'k' },
          { now: Date.now(), defaultMaxCostMicros: 1_000_000 },
        );
        await runs.create(run);
        await queue.enqueue(run.id);
      }
      while (worker.stats.processed < created) await new Promise((resolve) => setTimeout(resolve, 5));
      runs.clear();
    };
    try {
      await batch(20); // warm-up: JIT, lazily built modules
      collectGarbage();
      const before = process.memoryUsage().heapUsed;
      for (let i = 0; i < 10; i++) await batch(20);
      collectGarbage();
      const after = process.memoryUsage().heapUsed;
      const growthMb = (after - before) / 1024 / 1024;
      process.stdout.write(`agent worker heap: ${(before / 1048576).toFixed(1)} MB before, ${(after / 1048576).toFixed(1)} MB after 200 runs (${growthMb >= 0 ? '+' : ''}${growthMb.toFixed(2)} MB)\n`);
      expect(worker.stats.processed).toBe(220);
      // 200 runs × (16 KB input + conversation copies) would be several MB if anything were kept per run.
      expect(growthMb).toBeLessThan(2);
    } finally {
      await worker.stop();
    }
  });
});
