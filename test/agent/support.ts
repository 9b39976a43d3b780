/**
 * A real local gateway with agent routes (runs table in the run's DynamoDB Local, an in-memory run queue,
 * service JWTs on), a fake upstream scripted per request, and agent workers built by the same factory as the
 * container's, calling the gateway over real HTTP.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGateway, type Gateway } from '../../lambda/compose';
import { type GatewayConfig, loadConfig } from '../../lambda/config';
import { InMemoryRunQueue } from '../../lambda/core/agent/queue';
import type { AgentRun, RunStore } from '../../lambda/core/agent/run';
import { registerService } from '../../lambda/core/auth';
import { systemClock } from '../../lambda/core/clock';
import { createApiKey } from '../../lambda/core/key-admin';
import { jsonLogger } from '../../lambda/core/log';
import { createLocalServer } from '../../lambda/local/server';
import { AGENT_SERVICE, AGENT_TOKEN_SCOPES, createAgentWorker, type CreateAgentWorkerOptions, serviceTokens } from '../../agent/src/service';
import type { AgentWorker } from '../../agent/src/worker';
import { createTestTables, type TestTables } from '../support/dynamo';
import { type FakeUpstream, type RecordedRequest, startFakeUpstream } from '../support/fake-upstream';
import { trackInFlight } from '../support/in-flight';
import { TEST_JWT_SECRET, TEST_PEPPER, UPSTREAM_OPENAI_KEY } from '../support/gateway-harness';

export interface AgentHarness {
  readonly url: string;
  readonly gateway: Gateway;
  readonly runs: RunStore;
  readonly queue: InMemoryRunQueue;
  readonly upstream: FakeUpstream;
  readonly config: GatewayConfig;
  readonly logs: string[];
  /** A raw API key of user alice with scopes ai:complete and ai:agent. */
  readonly key: string;
  /** A worker with short backoffs and receive waits (not started). */
  worker(overrides?: Partial<Pick<CreateAgentWorkerOptions, 'executor' | 'worker' | 'settings'>>): AgentWorker;
  /** POST /v1/agent/runs with alice's key; returns the response. */
  submit(body: unknown, key?: string): Promise<Response>;
  /** Submits a run and returns its id (asserting 202). */
  createRun(body?: Record<string, unknown>): Promise<string>;
  /** Polls the runs table until `done(run)` holds. */
  waitFor(id: string, done: (run: AgentRun) => boolean, timeoutMs?: number): Promise<AgentRun>;
  /** Chat completion requests the fake upstream received. */
  chatRequests(): RecordedRequest[];
  /** Resolves when every gateway request so far has finished, settlement (usage records) included. */
  settled(): Promise<void>;
  close(): Promise<void>;
}

export async function startAgentHarness(options: { readonly env?: Record<string, string>; readonly captureLogs?: boolean } = {}): Promise<AgentHarness> {
  const upstream = await startFakeUpstream();
  const tables: TestTables = await createTestTables();
  const config: GatewayConfig = {
    ...loadConfig({
      TOLLGATE_MOCK_PROVIDER: 'true',
      OPENAI_BASE_URL: upstream.openaiBaseUrl,
      TOLLGATE_AUTH_CACHE_MS: '0',
      ...options.env,
    }),
    tables: tables.tables,
  };
  const logs: string[] = [];
  const log = jsonLogger({ level: 'info', sink: options.captureLogs === false ? () => undefined : (line) => logs.push(line) });
  const queue = new InMemoryRunQueue();
  const gateway = createGateway({
    config,
    secrets: { keyPepper: TEST_PEPPER, openaiApiKey: UPSTREAM_OPENAI_KEY, jwtSecret: TEST_JWT_SECRET },
    dynamodb: tables.client,
    log,
    runQueue: queue,
  });
  const runs = gateway.runs;
  if (!runs) throw new Error('the gateway built no run store');
  const inFlight = trackInFlight();
  const server: Server = createLocalServer({ app: gateway.app, maxBodyBytes: config.maxBodyBytes, log, onRequest: inFlight.onRequest });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  await registerService(gateway.keys, { service: AGENT_SERVICE, scopes: [...AGENT_TOKEN_SCOPES] }, { clock: systemClock });
  const { raw: key } = await createApiKey(
    gateway,
    { userId: 'alice', name: 'agent test', scopes: ['ai:complete', 'ai:agent'] },
    { pepper: TEST_PEPPER, clock: systemClock },
  );
  const submit = (body: unknown, k = key) =>
    fetch(`${url}/v1/agent/runs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${k}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  return {
    url,
    gateway,
    runs,
    queue,
    upstream,
    config,
    logs,
    key,
    worker(overrides = {}) {
      return createAgentWorker({
        settings: { ...config.agent, ...overrides.settings },
        gatewayUrl: url,
        queue,
        runs,
        tokens: serviceTokens(gateway.tokens),
        clock: systemClock,
        log,
        executor: { toolRetryBaseMs: 5, callRetryBaseMs: 5, ...overrides.executor },
        worker: { receiveWaitMs: 100, errorBackoffMs: 20, ...overrides.worker },
      });
    },
    submit,
    async createRun(body = {}) {
      const res = await submit({ instructions: 'Classify each review as positive or negative.', input: ['Great!', 'Awful.'], model: 'gpt-4o-mini', ...body });
      if (res.status !== 202) throw new Error(`POST /v1/agent/runs answered ${res.status}: ${await res.text()}`);
      return ((await res.json()) as { id: string }).id;
    },
    // The default only catches a run that never gets there (a hang), well inside jest's testTimeout; it is no
    // judgement of speed, which on a loaded machine can be anything.
    async waitFor(id, done, timeoutMs = 240_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const run = await runs.get(id);
        if (run && done(run)) return run;
        if (Date.now() > deadline) throw new Error(`run ${id} did not get there in time: ${JSON.stringify(run)}`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    },
    chatRequests() {
      return upstream.requests.filter((r) => r.path === '/v1/chat/completions');
    },
    settled: () => inFlight.settled(),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await upstream.close();
      await tables.cleanup();
    },
  };
}

/** The messages of a recorded chat request. */
export function messagesOf(request: RecordedRequest): Array<{ role: string; content?: string | null; tool_call_id?: string; tool_calls?: Array<{ id: string }> }> {
  return (request.body as { messages: Array<{ role: string; content?: string | null }> }).messages;
}

/** True when the last message of a chat body is a tool result (the model has seen a tool's answer). */
export function lastIsTool(body: Record<string, unknown>): boolean {
  const messages = body.messages as Array<{ role: string }>;
  return messages[messages.length - 1]?.role === 'tool';
}
