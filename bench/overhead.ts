/**
 * The gateway's client-visible overhead: the same chat completion sent N times straight to the fake upstream
 * and N times through the local gateway (real HTTP, DynamoDB Local, a key with rpm/tpm limits and budgets at
 * key, user and platform scope, so the full path runs). Also counts the DynamoDB calls made before the
 * upstream sees the request (sequential round trips on the hot path), with a warm and a cold key cache.
 *
 *   npm run bench:overhead [-- --requests 300]
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { createGateway } from '../lambda/compose';
import { loadConfig } from '../lambda/config';
import { systemClock } from '../lambda/core/clock';
import { createApiKey } from '../lambda/core/key-admin';
import { silentLogger } from '../lambda/core/log';
import { startDynamoDbLocal } from '../lambda/local/dynamodb-local';
import { createLocalServer } from '../lambda/local/server';
import { createDynamoDbClient } from '../lambda/store/dynamodb/client';
import { ensureTables } from '../lambda/store/dynamodb/create-tables';
import { startFakeUpstream } from '../test/support/fake-upstream';

interface Call {
  readonly command: string;
  readonly start: number;
  end: number;
}

/** Records every DynamoDB command with its start and end time. */
function instrument(client: DynamoDBClient, calls: Call[]): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const call: Call = { command: String(context.commandName), start: performance.now(), end: 0 };
      calls.push(call);
      try {
        return await next(args);
      } finally {
        call.end = performance.now();
      }
    },
    { step: 'initialize', name: 'benchTiming' },
  );
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function timeRequests(n: number, send: () => Promise<Response>): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const res = await send();
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`request ${i} answered ${res.status}`);
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { requests: { type: 'string', default: '300' } } });
  const n = Number(values.requests);
  const dynamo = await startDynamoDbLocal({ port: 0, inMemory: true });
  const upstream = await startFakeUpstream();
  // When the upstream received each request (it runs in this process): what ends before is on the critical path.
  const arrivals: number[] = [];
  const record = upstream.requests.push.bind(upstream.requests);
  upstream.requests.push = (...items) => {
    arrivals.push(performance.now());
    return record(...items);
  };
  try {
    const run = async (label: string, authCacheMs: string) => {
      const config = loadConfig({
        TOLLGATE_STAGE: `bench${authCacheMs}`,
        OPENAI_BASE_URL: upstream.openaiBaseUrl,
        TOLLGATE_AUTH_CACHE_MS: authCacheMs,
      });
      const dynamodb = createDynamoDbClient({ region: 'us-east-1', endpoint: dynamo.endpoint });
      await ensureTables(dynamodb, config.tables);
      const calls: Call[] = [];
      instrument(dynamodb, calls);
      const gw = createGateway({ config, secrets: { keyPepper: 'bench', openaiApiKey: 'sk-bench' }, dynamodb, log: silentLogger });
      const { raw, record } = await createApiKey(
        gw,
        { userId: 'bench', rpm: 1_000_000, tpm: 1_000_000_000, budget: { window: 'day', limit: 1_000_000_000 } },
        { pepper: 'bench', clock: systemClock },
      );
      await gw.ledger.setLimit('user:bench', 'month', 1_000_000_000);
      await gw.ledger.setLimit('platform', 'month', 10_000_000_000);
      let inFlight: Promise<void> = Promise.resolve();
      const server = createLocalServer({
        app: gw.app,
        maxBodyBytes: config.maxBodyBytes,
        log: silentLogger,
        onRequest: (done) => {
          inFlight = done;
        },
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      // Each request differs (a counter in the prompt): identical copies would be stopped by the loop guard.
      let seq = 0;
      const body = () =>
        JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `Say hello #${seq++}.` }], max_tokens: 50 });
      const direct = () =>
        fetch(`${upstream.openaiBaseUrl}/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: 'Bearer sk-bench' },
          body: body(),
        });
      const viaGateway = () =>
        fetch(`${url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${raw}` },
          body: body(),
        });
      // Warm up both paths (JIT, connections, the key cache when enabled).
      await timeRequests(30, direct);
      await timeRequests(30, viaGateway);
      const directTimes = await timeRequests(n, direct);
      calls.length = 0;
      const gatewayTimes: number[] = [];
      const before: number[] = [];
      const callsBefore: number[] = [];
      let leased = 0;
      const toUpstream: number[] = [];
      const inStore: number[] = [];
      for (let i = 0; i < n; i++) {
        const mark = calls.length;
        const arrivalMark = arrivals.length;
        const t0 = performance.now();
        const res = await viaGateway();
        await res.arrayBuffer();
        gatewayTimes.push(performance.now() - t0);
        // Let this request's settlement finish so the next request's DynamoDB calls are its own.
        await inFlight;
        const mine = calls.slice(mark);
        const arrival = arrivals[arrivalMark];
        if (arrival === undefined) throw new Error('the upstream never saw the request');
        // Calls before the upstream call: everything that ended by the time the upstream received the request
        // (the budget read for the response header runs alongside the upstream call). Sequential round trips:
        // calls that overlap in time (the limits and loop-settings reads run in parallel) count once.
        const pre = mine.filter((c) => c.end <= arrival).sort((a, b) => a.start - b.start);
        if (!pre.some((c) => c.command === 'TransactWriteItemsCommand')) leased++;
        toUpstream.push(arrival - t0);
        inStore.push(pre.reduce((a, c) => a + (c.end - c.start), 0));
        let rounds = 0;
        let lastEnd = -Infinity;
        for (const c of pre) {
          if (c.start >= lastEnd) {
            rounds++;
            lastEnd = c.end;
          } else lastEnd = Math.max(lastEnd, c.end);
        }
        callsBefore.push(pre.length);
        before.push(rounds);
      }
      gatewayTimes.sort((a, b) => a - b);
      before.sort((a, b) => a - b);
      const med = (xs: number[]) => percentile(xs, 50);
      console.log(`\n${label} (${n} sequential requests, key ${record.prefix})`);
      console.log(`  direct to upstream : median ${med(directTimes).toFixed(2)} ms, p99 ${percentile(directTimes, 99).toFixed(2)} ms`);
      console.log(`  through tollgate   : median ${med(gatewayTimes).toFixed(2)} ms, p99 ${percentile(gatewayTimes, 99).toFixed(2)} ms`);
      console.log(
        `  overhead           : median ${(med(gatewayTimes) - med(directTimes)).toFixed(2)} ms, p99 ${(percentile(gatewayTimes, 99) - percentile(directTimes, 99)).toFixed(2)} ms`,
      );
      callsBefore.sort((a, b) => a - b);
      console.log(
        `  DynamoDB before the upstream call: sequential round trips median ${med(before)}, max ${before[before.length - 1]}; calls median ${med(callsBefore)}, max ${callsBefore[callsBefore.length - 1]}`,
      );
      toUpstream.sort((a, b) => a - b);
      inStore.sort((a, b) => a - b);
      console.log(`  until the upstream has the request: median ${med(toUpstream).toFixed(2)} ms, of which DynamoDB calls ${med(inStore).toFixed(2)} ms`);
      console.log(`  admitted against a budget lease (no reserve transaction before the upstream): ${leased} of ${n}`);
      await gw.leases?.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      dynamodb.destroy();
    };
    await run('warm key cache (TOLLGATE_AUTH_CACHE_MS=5000)', '5000');
    await run('key-cache miss on every request, limits known here (TOLLGATE_AUTH_CACHE_MS=1: the key read on every request)', '1');
    await run('nothing cached (TOLLGATE_AUTH_CACHE_MS=0: key, limits and loop settings read on every request)', '0');
  } finally {
    await upstream.close();
    await dynamo.stop();
  }
}

void main();
