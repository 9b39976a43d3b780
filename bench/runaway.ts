/**
 * Replays the $2,847 incident against the local gateway with default settings: an agent retries the same
 * ~4,000-token classification request to an expensive model (openai/o1-pro, $150 / $600 per million tokens)
 * whose upstream answers with an empty result (4,000 tokens in, 4,325 reasoning tokens out: $3.195, billed)
 * or fails (HTTP 500, not billed), alternately. The incident: 891 attempts overnight, $2,847.
 *
 *   1. tight loop, real time: the agent retries as soon as it has an answer, until the gateway stops it.
 *   2. the whole night, simulated clock: 891 attempts, one every 40 s (~10 h), as in the incident.
 *
 * Prints how many requests reached the provider, the dollars spent and the seconds until it was stopped.
 *
 *   npm run bench:runaway
 */
import type { AddressInfo } from 'node:net';
import { createGateway } from '../lambda/compose';
import { loadConfig } from '../lambda/config';
import { type Clock, ManualClock, systemClock } from '../lambda/core/clock';
import { createApiKey } from '../lambda/core/key-admin';
import { silentLogger } from '../lambda/core/log';
import { displayUsd } from '../lambda/core/money';
import { startDynamoDbLocal } from '../lambda/local/dynamodb-local';
import { createLocalServer } from '../lambda/local/server';
import { createDynamoDbClient } from '../lambda/store/dynamodb/client';
import { ensureTables } from '../lambda/store/dynamodb/create-tables';
import { type FakeUpstream, startFakeUpstream } from '../test/support/fake-upstream';

const INCIDENT_ATTEMPTS = 891;
const INCIDENT_USD = 2_847;
/** ~4,000 tokens by the gateway's estimate (UTF-8 bytes ÷ 3). */
const PROMPT = `Classify the following support ticket into one of: billing, shipping, refund, other.\n${'The customer writes about an order. '.repeat(340)}`;

interface Replay {
  readonly reachedProvider: number;
  readonly spentMicros: number;
  readonly secondsUntilStopped: number | undefined;
  readonly attempts: number;
  readonly statuses: Record<string, number>;
}

async function replay(options: {
  readonly dynamoEndpoint: string;
  readonly upstream: FakeUpstream;
  readonly stage: string;
  readonly clock: Clock;
  readonly attempts: number;
  /** Time between attempts on the simulated clock; 0 = tight loop in real time. */
  readonly gapMs: number;
}): Promise<Replay> {
  const { upstream, clock } = options;
  const config = loadConfig({ TOLLGATE_STAGE: options.stage, OPENAI_BASE_URL: upstream.openaiBaseUrl });
  const dynamodb = createDynamoDbClient({ region: 'us-east-1', endpoint: options.dynamoEndpoint });
  await ensureTables(dynamodb, config.tables);
  const gw = createGateway({ config, secrets: { keyPepper: 'bench', openaiApiKey: 'sk-bench' }, dynamodb, log: silentLogger, clock });
  const { raw, record } = await createApiKey(gw, { userId: 'agent' }, { pepper: 'bench', clock });
  const pending = new Set<Promise<void>>();
  const server = createLocalServer({
    app: gw.app,
    maxBodyBytes: config.maxBodyBytes,
    log: silentLogger,
    onRequest: (done) => {
      pending.add(done);
      void done.finally(() => pending.delete(done));
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`;
  const before = upstream.requests.length;
  const statuses: Record<string, number> = {};
  const started = Date.now();
  const simulatedStart = clock.now();
  let stoppedAt: number | undefined;
  try {
    for (let i = 0; i < options.attempts; i++) {
      if (i % 2 === 0) upstream.script({ replyText: '', usage: { inputTokens: 4_000, outputTokens: 4_325 } });
      else upstream.script({ status: 500, errorMessage: 'classifier overloaded' });
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${raw}` },
        body: JSON.stringify({ model: 'o1-pro', messages: [{ role: 'user', content: PROMPT }], max_tokens: 8_000 }),
      });
      const body = await res.text();
      while (pending.size > 0) await Promise.allSettled([...pending]);
      const code = res.status === 429 ? `429 ${(JSON.parse(body) as { error: { code: string } }).error.code}` : String(res.status);
      statuses[code] = (statuses[code] ?? 0) + 1;
      if (res.status === 429 && stoppedAt === undefined) {
        stoppedAt = options.gapMs > 0 ? clock.now() - simulatedStart : Date.now() - started;
        if (options.gapMs === 0) break;
      }
      if (options.gapMs > 0 && clock instanceof ManualClock) clock.advance(options.gapMs);
    }
    const records = await gw.usage.query({ by: 'key', id: record.keyId, from: '2000-01-01T00:00:00.000Z', to: '2100-01-01T00:00:00.000Z' });
    return {
      reachedProvider: upstream.requests.length - before,
      spentMicros: records.reduce((sum, r) => sum + r.costMicros, 0),
      secondsUntilStopped: stoppedAt === undefined ? undefined : stoppedAt / 1000,
      attempts: Object.values(statuses).reduce((a, b) => a + b, 0),
      statuses,
    };
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

function print(label: string, r: Replay): void {
  const lines = [
    label,
    `  attempts sent:               ${r.attempts}`,
    `  requests reached provider:   ${r.reachedProvider}`,
    `  dollars spent:               ${displayUsd(r.spentMicros)}  (incident: $${INCIDENT_USD.toLocaleString('en-US')})`,
    `  seconds until stopped:       ${r.secondsUntilStopped === undefined ? 'never' : r.secondsUntilStopped.toFixed(2)}`,
    `  responses:                   ${Object.entries(r.statuses).map(([k, v]) => `${k}×${v}`).join(', ')}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function main(): Promise<void> {
  const dynamo = await startDynamoDbLocal({ port: 0, inMemory: true });
  const upstream = await startFakeUpstream();
  try {
    process.stdout.write('Runaway replay: o1-pro, ~4,000-token request, upstream answering empty ($3.195 billed) / failed, default settings\n\n');
    const tight = await replay({ dynamoEndpoint: dynamo.endpoint, upstream, stage: 'bench-tight', clock: systemClock, attempts: INCIDENT_ATTEMPTS, gapMs: 0 });
    print('1. agent retrying in a tight loop (real time)', tight);
    const night = await replay({
      dynamoEndpoint: dynamo.endpoint,
      upstream,
      stage: 'bench-night',
      clock: new ManualClock(Date.parse('2026-11-23T00:00:00.000Z')),
      attempts: INCIDENT_ATTEMPTS,
      gapMs: 40_000,
    });
    print(`\n2. the whole night: ${INCIDENT_ATTEMPTS} attempts, one every 40 s (simulated clock, ~${((INCIDENT_ATTEMPTS * 40) / 3600).toFixed(1)} h)`, night);
  } finally {
    await upstream.close();
    await dynamo.stop();
  }
}

void main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
