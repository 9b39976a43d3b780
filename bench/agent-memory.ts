/**
 * `npx tsx bench/agent-memory.ts [--runs 200]`: runs N agent runs in a row through ONE worker, end to end —
 * POST /v1/agent/runs on a real local gateway (DynamoDB Local in memory, in-memory queue), the worker calling
 * /v1/chat/completions over HTTP with service JWTs, a fake upstream answering a tool call and then a final
 * answer — and prints the heap before and after (after a forced GC), plus the time per run.
 *
 * The heap is the whole process's (gateway and worker share it here), so flat means neither keeps per-run state.
 */
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { AGENT_SERVICE, AGENT_TOKEN_SCOPES, createAgentWorker, serviceTokens } from '../agent/src/service';
import { createGateway } from '../lambda/compose';
import { loadConfig } from '../lambda/config';
import { InMemoryRunQueue } from '../lambda/core/agent/queue';
import { registerService } from '../lambda/core/auth';
import { systemClock } from '../lambda/core/clock';
import { createApiKey } from '../lambda/core/key-admin';
import { silentLogger } from '../lambda/core/log';
import { startDynamoDbLocal } from '../lambda/local/dynamodb-local';
import { createLocalServer } from '../lambda/local/server';
import { createDynamoDbClient } from '../lambda/store/dynamodb/client';
import { ensureTables } from '../lambda/store/dynamodb/create-tables';
import { startFakeUpstream } from '../test/support/fake-upstream';

const PEPPER = 'bench-pepper';
const JWT_SECRET = `bench:${'b'.repeat(40)}`;

function heapMb(): number {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  return process.memoryUsage().heapUsed / 1024 / 1024;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '200' }, warmup: { type: 'string', default: '20' } } });
  const total = Number(values.runs);
  const warmup = Number(values.warmup);
  const dynamo = await startDynamoDbLocal({ port: 0, inMemory: true });
  const upstream = await startFakeUpstream();
  try {
    const config = {
      ...loadConfig({ TOLLGATE_MOCK_PROVIDER: 'false', OPENAI_BASE_URL: upstream.openaiBaseUrl, TOLLGATE_STAGE: 'bench' }),
      dynamodbEndpoint: dynamo.endpoint,
    };
    const dynamodb = createDynamoDbClient({ region: config.region, endpoint: dynamo.endpoint });
    await ensureTables(dynamodb, config.tables);
    const queue = new InMemoryRunQueue();
    const gateway = createGateway({
      config,
      secrets: { keyPepper: PEPPER, openaiApiKey: 'sk-bench-upstream', jwtSecret: JWT_SECRET },
      dynamodb,
      log: silentLogger,
      runQueue: queue,
    });
    const server = createLocalServer({ app: gateway.app, maxBodyBytes: config.maxBodyBytes, log: silentLogger });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await registerService(gateway.keys, { service: AGENT_SERVICE, scopes: [...AGENT_TOKEN_SCOPES] }, { clock: systemClock });
    const { raw: key } = await createApiKey(gateway, { userId: 'bench', name: 'bench', scopes: ['ai:agent'] }, { pepper: PEPPER, clock: systemClock });
    upstream.scriptEach((body) =>
      (body.messages as Array<{ role: string }>).some((m) => m.role === 'tool')
        ? { replyText: 'positive' }
        : { toolCall: { id: 'c1', name: 'get_item', input: { index: 0 } } },
    );
    const worker = createAgentWorker({
      settings: config.agent,
      gatewayUrl: url,
      queue,
      runs: gateway.runs!,
      tokens: serviceTokens(gateway.tokens),
      clock: systemClock,
      log: silentLogger,
      worker: { receiveWaitMs: 100 },
    });
    void worker.start();
    const review = 'The delivery was late but the product works. '.repeat(40);
    const runBatch = async (count: number) => {
      const target = worker.stats.processed + count;
      for (let i = 0; i < count; i++) {
        const res = await fetch(`${url}/v1/agent/runs`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ instructions: 'Classify the review.', input: [review], model: 'gpt-4o-mini' }),
        });
        if (res.status !== 202) throw new Error(`POST /v1/agent/runs answered ${res.status}: ${await res.text()}`);
        await res.arrayBuffer();
        // One run at a time, as one worker takes them; the upstream keeps no record across the bench.
        while (worker.stats.processed < target - (count - i - 1)) await new Promise((resolve) => setTimeout(resolve, 2));
        upstream.requests.length = 0;
      }
    };
    await runBatch(warmup);
    const before = heapMb();
    const started = Date.now();
    await runBatch(total);
    const elapsed = Date.now() - started;
    const after = heapMb();
    await worker.stop();
    const rss = process.memoryUsage().rss / 1024 / 1024;
    const lines = [
      `agent memory: ${total} runs in one worker (after ${warmup} warm-up runs), 2 gateway calls each, end to end`,
      `  heap before  ${before.toFixed(1)} MB`,
      `  heap after   ${after.toFixed(1)} MB   (${after - before >= 0 ? '+' : ''}${(after - before).toFixed(2)} MB, ${(((after - before) * 1024) / total).toFixed(2)} KB per run)`,
      `  rss          ${rss.toFixed(1)} MB`,
      `  time         ${(elapsed / total).toFixed(0)} ms per run`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    server.closeAllConnections();
    server.close();
  } finally {
    await upstream.close();
    await dynamo.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
