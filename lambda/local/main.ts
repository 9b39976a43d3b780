/**
 * `npm start`: the whole gateway on one machine. Starts DynamoDB Local (the AWS jar, with Java), creates the
 * tables, and serves the same GatewayApp the Lambda runs on http://127.0.0.1:$PORT.
 *
 *   npm start                     data kept in .tollgate/dynamodb
 *   npm start -- --in-memory      nothing kept
 *   npm start -- --log-format json   JSON log lines (default: one readable line per request; or TOLLGATE_LOG_FORMAT)
 *   PORT=8080 npm start
 *
 * The admin token is kept in .tollgate/admin-token (a bookmarked dashboard link survives restarts). The first
 * run creates a demo key; the lines to use it are printed last, once the startup logs have settled.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createGateway } from '../compose';
import { loadConfig } from '../config';
import { systemClock } from '../core/clock';
import { audited, createKeyAudited } from '../core/audit';
import { jsonLogger } from '../core/log';
import { usdToMicros } from '../core/money';
import { createDynamoDbClient } from '../store/dynamodb/client';
import { ensureTables } from '../store/dynamodb/create-tables';
import { LocalDataKeyProvider } from '../core/byok/crypto';
import { loadOrCreateByokMasterKey } from '../admin/local-identity';
import { InMemoryRunQueue } from '../core/agent/queue';
import { registerService, serviceKeyId } from '../core/auth';
import { DEFAULT_KEY_SCOPES } from '../core/key-admin';
import { AGENT_SERVICE, AGENT_TOKEN_SCOPES, createAgentWorker, serviceTokens } from '../../agent/src/service';
import { createDashboardRoutes, DASHBOARD_PATH } from './dashboard/routes';
import { DynamoDbDriftStore } from '../store/dynamodb/reconcile-store';
import { consoleAlertSink } from '../core/guardrails/alerts';
import { checkLedgerSpend, KillSwitch } from '../core/guardrails/kill-switch';
import { DynamoDbKeyStatusBatch } from '../store/dynamodb/key-status-batch';
import { startDynamoDbLocal } from './dynamodb-local';
import { createLocalServer } from './server';
import { clearRunning, loadOrCreateAdminToken, loadOrCreatePepper, stateDir, writeRunning } from './state';
import { textLogger } from './text-log';

const SWEEP_EVERY_MS = 60_000;
/** Who the audit log names for the changes `npm start` makes itself (the first-run key, the agent service). */
const STARTUP_ACTOR = { actor: 'npm start', via: 'cli' as const };
/** The banner waits for this long without a log line… */
const BANNER_QUIET_MS = 400;
/** …but never longer than this. */
const BANNER_MAX_WAIT_MS = 4_000;

/** Resolves once `lastAt()` is `quietMs` in the past, or after `maxMs`. */
async function settled(lastAt: () => number, quietMs: number, maxMs: number): Promise<void> {
  const start = Date.now();
  while (Date.now() - lastAt() < quietMs && Date.now() - start < maxMs) {
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    strict: true,
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      'in-memory': { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      'dynamodb-endpoint': { type: 'string' },
      'log-format': { type: 'string' },
    },
  });
  const env = process.env;
  const port = Number(values.port ?? env.PORT ?? 3000);
  const host = values.host ?? env.HOST ?? '127.0.0.1';
  const logFormat = values['log-format'] ?? env.TOLLGATE_LOG_FORMAT ?? 'text';
  if (logFormat !== 'text' && logFormat !== 'json') {
    process.stderr.write(`tollgate: --log-format must be text or json, got ${JSON.stringify(logFormat)}\n`);
    process.exit(2);
  }
  // The banner waits for the startup logs to settle: every line written moves this mark.
  let lastLogAt = Date.now();
  const sink = (line: string) => {
    lastLogAt = Date.now();
    process.stdout.write(`${line}\n`);
  };
  const level = values.quiet ? 'warn' : ((env.TOLLGATE_LOG_LEVEL as 'info' | undefined) ?? 'info');
  const log = logFormat === 'json' ? jsonLogger({ level, sink }) : textLogger({ level, sink });
  const dir = stateDir();
  const inMemory = values['in-memory'] || env.TOLLGATE_IN_MEMORY === 'true';

  // JVM options of DynamoDB Local: its defaults (C1 only, serial GC) unless the variable says otherwise ('' = the JVM's own).
  const javaOptions = env.TOLLGATE_DYNAMODB_LOCAL_JAVA_OPTS?.split(/\s+/).filter((o) => o !== '');
  // `--dynamodb-endpoint URL` (or TOLLGATE_DYNAMODB_ENDPOINT): an existing DynamoDB or DynamoDB Local, its tables
  // created if missing, so several gateway processes share one store as Lambda instances do. Not stopped here.
  const external = values['dynamodb-endpoint'] ?? (env.TOLLGATE_DYNAMODB_ENDPOINT || undefined);
  if (external !== undefined && !/^https?:\/\/[^\s/]+/.test(external)) {
    throw new Error(`--dynamodb-endpoint must be a URL such as http://127.0.0.1:8000, got ${JSON.stringify(external)}`);
  }
  const dynamo =
    external !== undefined
      ? { endpoint: external, stop: async (): Promise<void> => undefined }
      : await startDynamoDbLocal({ port: 0, inMemory, dataDir: join(dir, 'dynamodb'), ...(javaOptions ? { javaOptions } : {}) });
  // The in-process agent worker, once started (stopped first, so its current run is recorded).
  let stopAgent: (() => Promise<void>) | undefined;
  // Budget leases still open are returned before DynamoDB Local stops (else the sweeper charges them in full).
  let closeLeases: (() => Promise<void>) | undefined;
  const stopAll = async (code: number): Promise<never> => {
    clearRunning(dir);
    await stopAgent?.();
    await closeLeases?.().catch(() => undefined);
    await dynamo.stop();
    process.exit(code);
  };
  process.once('SIGINT', () => void stopAll(0));
  process.once('SIGTERM', () => void stopAll(0));

  try {
    // Locally /admin/* accepts the admin token printed below (explicit: never inferred from the environment).
    const config = { ...loadConfig(env), dynamodbEndpoint: dynamo.endpoint, adminAuth: 'local-token' as const };
    const dynamodb = createDynamoDbClient({ region: config.region, endpoint: dynamo.endpoint, cacheMiddleware: true, directCalls: true });
    await ensureTables(dynamodb, config.tables);
    const keyPepper = loadOrCreatePepper(dir);
    // Agent runs locally: an in-memory queue, and service tokens signed with a per-process secret.
    const runQueue = new InMemoryRunQueue();
    const jwtSecret = env.TOLLGATE_SECRET_JWT_SECRET || `local:${randomBytes(32).toString('hex')}`;
    const adminToken = loadOrCreateAdminToken(dir);
    const gateway = createGateway({
      config,
      adminToken,
      byokDataKeys: new LocalDataKeyProvider(loadOrCreateByokMasterKey(dir)),
      secrets: { keyPepper, openaiApiKey: env.OPENAI_API_KEY, anthropicApiKey: env.ANTHROPIC_API_KEY, jwtSecret },
      dynamodb,
      log,
      // Guardrail alerts are printed here (and kept in the table: `npm run admin -- alerts`).
      alertSink: consoleAlertSink(),
      runQueue,
      batchUsageWrites: true,
    });
    const leases = gateway.leases;
    if (leases) {
      closeLeases = () => leases.close();
      // Leases whose window passed while their key went quiet are returned within a second.
      const returner = setInterval(() => void leases.maintain().catch(() => undefined), 1_000);
      returner.unref();
    }

    // First run: hand the newcomer a key to try, with a small daily budget.
    let demoKey: string | undefined;
    const existing = gateway.keys.listAll();
    let anyKey = false;
    for await (const page of existing) {
      if (page.length > 0) anyKey = true;
      break;
    }
    if (!anyKey) {
      // Audited like any key creation: the audit log then holds every key there is.
      const created = await createKeyAudited(
        gateway,
        {
          userId: 'demo',
          name: 'first-run demo key',
          scopes: [...DEFAULT_KEY_SCOPES, 'ai:agent'],
          budget: { window: 'day', limit: usdToMicros('5') },
        },
        { pepper: keyPepper, clock: systemClock, sink: gateway.audit, who: { ...STARTUP_ACTOR, reason: 'first run: a key to try the gateway with' } },
      );
      demoKey = created.raw;
    }

    const dashboard = createDashboardRoutes({
      adminToken,
      usage: gateway.usage,
      ledger: gateway.ledger,
      keys: gateway.keys,
      defaults: config.defaults,
      refusals: gateway.refusals.store,
      guardrails: gateway.guardrails,
      savings: gateway.cache,
      drift: new DynamoDbDriftStore(dynamodb, { table: config.tables.reconcile }),
      clock: systemClock,
      log,
    });
    const server = createLocalServer({ app: gateway.app, maxBodyBytes: config.maxBodyBytes, log, extraRoutes: dashboard });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const address = server.address();
    const actualPort = typeof address === 'object' && address ? address.port : port;
    const url = `http://${host}:${actualPort}`;
    writeRunning(dir, { pid: process.pid, url, dynamodbEndpoint: dynamo.endpoint, adminToken });

    // The agent worker, in process, calling this gateway over HTTP as the Fargate task calls the API.
    if (gateway.runs) {
      const service = { service: AGENT_SERVICE, scopes: [...AGENT_TOKEN_SCOPES] };
      const register = () => registerService(gateway.keys, service, { clock: systemClock });
      // Registered on every start (idempotent); audited the first time, when it is a change.
      if (await gateway.keys.get(serviceKeyId(AGENT_SERVICE))) await register();
      else {
        await audited(
          gateway.audit,
          { ...STARTUP_ACTOR, action: 'services.register', target: serviceKeyId(AGENT_SERVICE), after: { service: AGENT_SERVICE, scopes: service.scopes.join(','), rpm: 'default', tpm: 'default' }, reason: 'npm start runs the agent worker in process' },
          systemClock,
          register,
        );
      }
      const agent = createAgentWorker({
        settings: config.agent,
        gatewayUrl: url,
        queue: runQueue,
        runs: gateway.runs,
        tokens: serviceTokens(gateway.tokens),
        clock: systemClock,
        log,
        // Ctrl-C should not wait long: an unfinished run goes back to the (in-memory) queue.
        worker: { shutdownGraceMs: 2_000 },
      });
      void agent.start();
      stopAgent = () => agent.stop();
    }

    // The kill switch on the ledger's platform spend, checked with every sweep (as the AWS sweeper does).
    const sink = consoleAlertSink();
    const killSwitch = new KillSwitch({
      keys: gateway.keys,
      bulk: new DynamoDbKeyStatusBatch(dynamodb, config.tables),
      store: gateway.guardrails,
      budgets: { describe: async () => undefined },
      reporter: {
        report: async (alert) => {
          await gateway.guardrails.recordAlert(alert, { dedupeKey: `kill-switch#${alert.id}`, dedupeUntil: alert.at + 86_400_000 });
          await sink.publish(alert);
        },
      },
      // An activation is an administrative change by `kill-switch`: it goes to the audit log.
      ...(gateway.audit ? { audit: gateway.audit } : {}),
      clock: systemClock,
      log,
      budgetName: '',
    });
    const sweeper = setInterval(() => {
      const now = Date.now();
      gateway.ledger
        .sweepExpired(now)
        .then(() => checkLedgerSpend(killSwitch, { ledger: gateway.ledger, defaults: config.defaults, percent: config.killSwitch.ledgerPercent, now }))
        .catch((err: unknown) => {
          log.log('warn', 'hold sweep or ledger kill-switch check failed', { error: err instanceof Error ? err.message : String(err) });
        });
    }, SWEEP_EVERY_MS);
    sweeper.unref();

    const providers = gateway.providers.ids();
    const adminHint = `npm run admin -- --url ${url} --admin-token ${adminToken} keys list`;
    const lines = [
      '',
      `tollgate listening on ${url}   (OpenAI base URL ${url}/v1 · Anthropic base URL ${url})`,
      external !== undefined
        ? `DynamoDB at ${dynamo.endpoint} (--dynamodb-endpoint; shared with whoever else uses it)`
        : `DynamoDB Local on ${dynamo.endpoint} (${inMemory ? 'in memory' : `data in ${join(dir, 'dynamodb')}`})`,
      `dashboard:  ${url}${DASHBOARD_PATH}?token=${adminToken}`,
      `            (the admin token is kept in ${join(dir, 'admin-token')}: the link survives restarts)`,
      `admin CLI:  npm run admin -- keys list          (finds this gateway by itself; --help lists every command)`,
      `admin API:  ${adminHint}`,
      ...(stopAgent ? [`agent runs: POST ${url}/v1/agent/runs (key scope ai:agent; worker in process, in-memory queue)`] : []),
      `providers:  ${providers.join(', ')}${providers.includes('openai') ? '' : '  (set OPENAI_API_KEY / ANTHROPIC_API_KEY for real ones)'}`,
      `logs:       one line per request (method path model status ms cost key); --log-format json for JSON`,
      '',
      ...(demoKey
        ? [
            'A first API key was created for user "demo" with a $5/day budget. It is shown only this once; copy it now:',
            '',
            `  export TOLLGATE_KEY=${demoKey}`,
          ]
        : ['Use a key you created (npm run admin -- keys create --user <you>), then:', '', '  export TOLLGATE_KEY=sk-tg-…']),
      '',
      'Try it:',
      `  curl ${url}/v1/chat/completions -H "Authorization: Bearer $TOLLGATE_KEY" \\`,
      `    -H 'content-type: application/json' -d '{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'`,
      '',
      'Claude Code:',
      `  ANTHROPIC_BASE_URL=${url} ANTHROPIC_AUTH_TOKEN=$TOLLGATE_KEY claude`,
      '',
      'Codex (~/.codex/config.toml, then run codex in a shell where TOLLGATE_KEY is exported):',
      '  model_provider = "tollgate"',
      '  [model_providers.tollgate]',
      '  name = "tollgate"',
      `  base_url = "${url}/v1"`,
      '  env_key = "TOLLGATE_KEY"',
      '  wire_api = "responses"',
      '',
      'ready',
    ];
    // Printed last, once the startup logs have been quiet for a moment (at most a few seconds), so the key
    // and the lines to use it do not scroll away under them.
    await settled(() => lastLogAt, BANNER_QUIET_MS, BANNER_MAX_WAIT_MS);
    process.stdout.write(`${lines.join('\n')}\n`);
  } catch (err) {
    process.stderr.write(`tollgate failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
    await stopAll(1);
  }
}

void main().catch((err: unknown) => {
  // A mistake in the command line (an unknown option): one line, not a stack.
  process.stderr.write(`tollgate: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}\n`);
  process.exit(2);
});
