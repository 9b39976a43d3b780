/**
 * The composition root: builds the gateway from configuration, secrets and a DynamoDB client. The Lambda
 * handler and the local server both call {@link createGateway}, so they run the same code.
 */
import { randomBytes } from 'node:crypto';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
import { ConfigError, type GatewayConfig } from './config';
import { Authenticator } from './core/auth';
import { JwtKeyRingSource, type JwtSecretSource, TokenIssuer, TokenVerifier } from './core/jwt';
import { ByokCipher, type DataKeyProvider, KmsDataKeyProvider } from './core/byok/crypto';
import { ByokService } from './core/byok/service';
import { HttpProviderKeyValidator, type ProviderKeyValidator } from './core/byok/validate';
import { createAdminRoutes } from './http/admin-routes';
import { createByokRoutes } from './http/byok-routes';
import { type AuditLog, DynamoDbAuditLog } from './store/dynamodb/audit-store';
import { DynamoDbByokStore } from './store/dynamodb/byok-store';
import { type Clock, systemClock } from './core/clock';
import { StoreUnavailableError } from './core/errors';
import { jsonLogger, type Logger } from './core/log';
import type { SecretSource } from './core/secrets';
import { type PipelineOptions, RequestPipeline } from './core/pipeline';
import { AdmissionGate, AdmittingLedger } from './core/admission';
import { PriceBook } from './core/pricing';
import { GatewayApp, type RequestObserver } from './http/app';
import { createMetricsObserver } from './observability/metrics-observer';
import { RefusalRecorder } from './observability/refusals';
import { circuitOpenedRecorder } from './observability/guardrail-events';
import { createRequestLogObserver } from './observability/request-log';
import { createProviders, type ProviderRegistry } from './providers/registry';
import { DynamoDbKeyStore } from './store/dynamodb/key-store';
import { DynamoDbLedger } from './store/dynamodb/ledger';
import type { PoolOptions } from './store/dynamodb/pools';
import { LeasingLedger } from './core/lease/leasing-ledger';
import type { AlertSink } from './core/guardrails/alerts';
import { DynamoDbGuardrailStore } from './store/dynamodb/guardrails-store';
import { DynamoDbRefusalStore } from './store/dynamodb/refusal-store';
import { DynamoDbUsageStore } from './store/dynamodb/usage-store';
import { lazyKmsClient, lazySqsClient } from './store/aws-clients';
import type { RunQueue } from './core/agent/queue';
import type { RunStore } from './core/agent/run';
import { SqsRunQueue } from './core/agent/sqs-queue';
import { createAgentRoutes } from './http/agent-routes';
import { DynamoDbRunStore } from './store/dynamodb/runs-store';
import { CredentialRedactor, jwtSecretParts } from './core/credential-redactor';
import { DynamoDbCacheStore } from './store/dynamodb/cache-store';
import { SpendLayer } from './core/routing/spend-layer';
import { checkRouteDialects } from './core/routing/rules';

/** Secret values the gateway needs at runtime. Never logged, never in env vars in AWS (SSM at cold start). */
export interface GatewaySecrets {
  /** HMAC pepper for API key hashes. */
  readonly keyPepper: string;
  readonly openaiApiKey?: string;
  readonly anthropicApiKey?: string;
  /**
   * The `jwt-secret` value (`kid:secret[,kid:secret…]`), or a function reading it from the cached secret source
   * so a rotation is picked up. Absent: service tokens are refused (401 `service_tokens_disabled`).
   */
  readonly jwtSecret?: JwtSecretSource;
}

/**
 * Reads the gateway's secrets from a source (SSM in AWS). Without a pepper no key can be checked, so that
 * failure is a 503 for every request (fail closed), never an open door.
 */
export async function loadGatewaySecrets(source: SecretSource): Promise<GatewaySecrets> {
  const [keyPepper, openaiApiKey, anthropicApiKey] = await Promise.all([
    source.get('key-pepper'),
    source.get('openai-api-key'),
    source.get('anthropic-api-key'),
  ]);
  if (!keyPepper) {
    throw new StoreUnavailableError('The gateway is not configured yet (its key pepper secret is missing).', {
      code: 'gateway_not_configured',
    });
  }
  // Read through the (cached) source on use, so a rotated jwt-secret reaches a warm instance.
  return { keyPepper, openaiApiKey, anthropicApiKey, jwtSecret: () => source.get('jwt-secret') };
}

export interface GatewayDependencies {
  readonly config: GatewayConfig;
  readonly secrets: GatewaySecrets;
  readonly dynamodb: DynamoDBClient;
  readonly clock?: Clock;
  /**
   * Usage records of leased requests go out with BatchWriteItem (the local server; the Lambda role may not
   * batch-write, and one request per instance leaves nothing to batch). @default false
   */
  readonly batchUsageWrites?: boolean;
  readonly log?: Logger;
  readonly bedrockClient?: BedrockRuntimeClient;
  /** Replace the provider registry (tests of routing). */
  readonly providers?: ProviderRegistry;
  /**
   * Told of every guardrail alert as it is recorded (locally: printed). Alerts are kept in the budgets table
   * and its outbox either way; in AWS the alert dispatcher publishes the outbox to the alerts topic.
   */
  readonly alertSink?: AlertSink;
  /**
   * Publish per-request CloudWatch metrics and one `CircuitOpened` per circuit a guard opens (EMF lines on stdout,
   * see lambda/observability/metrics-observer.ts and guardrail-events.ts).
   * @default false (the Lambda handler turns it on; locally the dashboard reads the tables instead)
   */
  readonly emitMetrics?: boolean;
  /**
   * More request observers, after the request log line and the metrics.
   * @default []
   */
  readonly observers?: readonly RequestObserver[];
  /**
   * The local admin token `/admin/*` accepts when `config.adminAuth` is `local-token` (printed by `npm start`).
   */
  readonly adminToken?: string;
  /**
   * Wraps BYOK data keys. @default KMS with `config.dataKeyArn` when set; otherwise BYOK is off. The local server
   * and tests pass a {@link LocalDataKeyProvider}.
   */
  readonly byokDataKeys?: DataKeyProvider;
  /** Checks a BYOK key with its provider before storing it. @default HTTP calls to the configured endpoints */
  readonly byokValidator?: ProviderKeyValidator;
  /**
   * The queue agent runs go on. @default SQS at `config.agent.queueUrl` when set; the local server passes an
   * in-memory queue. Agent routes are served when there is a queue and `config.tables.runs` is named.
   */
  readonly runQueue?: RunQueue;
}

export interface Gateway {
  readonly app: GatewayApp;
  readonly keys: DynamoDbKeyStore;
  readonly ledger: DynamoDbLedger;
  /** The budget leases in front of `ledger` (absent when `config.leases.enabled` is false). */
  readonly leases?: LeasingLedger;
  /** Circuits, alerts and the kill switch's state. */
  readonly guardrails: DynamoDbGuardrailStore;
  readonly usage: DynamoDbUsageStore;
  readonly pipeline: RequestPipeline;
  readonly authenticator: Authenticator;
  readonly prices: PriceBook;
  readonly providers: ProviderRegistry;
  /** Issues service JWTs with the gateway's own `jwt-secret` (tests, the local admin API). */
  readonly tokens: TokenIssuer;
  /** BYOK keys; absent when no data-key provider is configured (then BYOK routes answer 404). */
  readonly byok?: ByokService;
  /** The admin audit log; absent when `config.tables.audit` is not set (then admin changes are refused). */
  readonly audit?: AuditLog;
  /** Agent runs and their queue; absent when either is not configured (then agent routes answer 404). */
  readonly runs?: RunStore;
  readonly runQueue?: RunQueue;
  /** The response cache's table (answers and daily savings counters). */
  readonly cache: DynamoDbCacheStore;
  /** Daily refusal counters (usage table) and the observer that fills them off the request path. */
  readonly refusals: { readonly store: DynamoDbRefusalStore; readonly recorder: RefusalRecorder };
}

/**
 * The redactor for every credential this gateway holds: provider keys, the key pepper, the JWT secret (when
 * given as a value) and the local admin token. A JWT secret read through a function is rotated at run time
 * and is covered only by the key-shape pattern.
 */
export function gatewayCredentialRedactor(secrets: GatewaySecrets, adminToken?: string): CredentialRedactor {
  return new CredentialRedactor([
    secrets.keyPepper,
    secrets.openaiApiKey,
    secrets.anthropicApiKey,
    ...(typeof secrets.jwtSecret === 'string' ? jwtSecretParts(secrets.jwtSecret) : []),
    adminToken,
  ]);
}

/** The request pipeline's options that come from the configuration alone (bench:scale builds its pipelines alike). */
export function pipelineSettings(config: GatewayConfig) {
  return {
    settleRetry: config.settleRetry,
    limitsCacheMs: config.authCacheMs,
    holdTtlMs: config.holdTtlMs,
    platformShards: config.platformShards,
    upstreamTimeoutMs: config.upstreamTimeoutMs,
    defaults: config.defaults,
    minOutputTokens: config.minOutputTokens,
  } satisfies Partial<PipelineOptions>;
}

/** The ledger's scope pools as configured (false: off). */
export function poolOptionsOf(config: GatewayConfig): PoolOptions | false {
  const { enabled, ...options } = config.pools;
  return enabled ? options : false;
}

/** The ledger's allowance pools of shared scopes as configured (false: off). */
export function sharedPoolOptionsOf(config: GatewayConfig): PoolOptions | false {
  const { enabled, ...options } = config.sharedPools;
  return enabled ? options : false;
}

/** Budget leases over `ledger` with the configured settings (whether to use them is `config.leases.enabled`). */
export function leasingLedgerFor(
  ledger: DynamoDbLedger,
  config: GatewayConfig,
  ctx: { readonly clock: Clock; readonly instanceId: string; readonly onError?: (what: string, err: unknown) => void },
): LeasingLedger {
  return new LeasingLedger(ledger, {
    ...config.leases,
    clock: ctx.clock,
    instanceId: ctx.instanceId,
    holdTtlMs: config.holdTtlMs,
    platformShards: config.platformShards,
    ...(ctx.onError ? { onError: ctx.onError } : {}),
  });
}

export function createGateway(deps: GatewayDependencies): Gateway {
  const { config, secrets, dynamodb } = deps;
  const clock = deps.clock ?? systemClock;
  const log = deps.log ?? jsonLogger();
  const keys = new DynamoDbKeyStore(dynamodb, config.tables);
  const ledger = new DynamoDbLedger(dynamodb, {
    tables: config.tables,
    platformShards: config.platformShards,
    usageRetentionDays: config.usageRetentionDays,
    clock,
    batchUsageWrites: deps.batchUsageWrites ?? false,
    pools: poolOptionsOf(config),
    sharedPools: sharedPoolOptionsOf(config),
  });
  const leases = config.leases.enabled
    ? leasingLedgerFor(ledger, config, {
        clock,
        instanceId: randomBytes(6).toString('base64url'),
        onError: (what, err) => log.log('warn', what, { error: err instanceof Error ? err.message : String(err) }),
      })
    : undefined;
  const usage = new DynamoDbUsageStore(dynamodb, config.tables, { now: () => clock.now(), retentionDays: config.usageRetentionDays });
  const dataKeys =
    deps.byokDataKeys ??
    (config.dataKeyArn ? new KmsDataKeyProvider({ client: lazyKmsClient({ region: config.region }), keyId: config.dataKeyArn }) : undefined);
  const providers =
    deps.providers ??
    createProviders(
      config.providers,
      { openaiApiKey: secrets.openaiApiKey, anthropicApiKey: secrets.anthropicApiKey },
      {
        defaultMaxTokens: config.defaultMaxOutputTokens,
        clock,
        byok: dataKeys !== undefined,
        ...(deps.bedrockClient ? { bedrockClient: deps.bedrockClient } : {}),
      },
    );
  const prices = new PriceBook({ overrides: config.priceOverrides, providers: providers.ids(), now: () => clock.now() });
  const jwtOptions = { keys: new JwtKeyRingSource(secrets.jwtSecret), clock, ...config.jwt };
  const tokens = new TokenIssuer(jwtOptions);
  const authenticator = new Authenticator({
    keys,
    pepper: secrets.keyPepper,
    cacheMs: config.authCacheMs,
    clock,
    tokens: new TokenVerifier(jwtOptions),
  });
  const guardrails = new DynamoDbGuardrailStore(dynamodb, {
    tables: config.tables,
    platformShards: config.platformShards,
    clock,
    // Every circuit a guard opens (overshoot, hourly spend, velocity, escalation) writes the metric the alarm watches.
    ...(deps.emitMetrics ? { onCircuitOpened: circuitOpenedRecorder(config.stage) } : {}),
  });
  const pipeline = new RequestPipeline({
    // Admission calls go through per-instance lanes that shed a burst with 429 before the store times out.
    ledger: new AdmittingLedger(leases ?? ledger, new AdmissionGate(config.admission)),
    ...pipelineSettings(config),
    keys,
    clock,
    log,
    guardrails: { store: guardrails, settings: config.guardrails, ...(deps.alertSink ? { sink: deps.alertSink } : {}) },
  });
  const audit = config.tables.audit
    ? new DynamoDbAuditLog(dynamodb, { table: config.tables.audit, retentionDays: config.usageRetentionDays })
    : undefined;
  const byok = dataKeys
    ? new ByokService({
        store: new DynamoDbByokStore(dynamodb, config.tables),
        cipher: new ByokCipher(dataKeys),
        validator: deps.byokValidator ?? new HttpProviderKeyValidator(config.providers),
        clock,
        log,
        ...(audit ? { audit } : {}),
        cacheMs: config.authCacheMs,
      })
    : undefined;
  const identityRoutes = [
    ...(byok ? createByokRoutes({ byok, authenticator }) : []),
    ...createAdminRoutes({
      mode: config.adminAuth,
      ...(deps.adminToken ? { localToken: deps.adminToken } : {}),
      keys,
      ledger,
      usage,
      ...(audit ? { audit } : {}),
      authenticator,
      pipeline,
      tokens,
      pepper: secrets.keyPepper,
      clock,
      defaults: config.defaults,
      platformShards: config.platformShards,
    }),
  ];
  const runQueue =
    deps.runQueue ??
    (config.agent.queueUrl ? new SqsRunQueue({ client: lazySqsClient({ region: config.region }), queueUrl: config.agent.queueUrl, log }) : undefined);
  const runs =
    config.tables.runs && runQueue
      ? new DynamoDbRunStore(dynamodb, { table: config.tables.runs, retentionDays: config.agent.runRetentionDays })
      : undefined;
  const agentRoutes =
    runs && runQueue
      ? createAgentRoutes({
          runs,
          queue: runQueue,
          authenticator,
          clock,
          log,
          defaultMaxCostMicros: config.agent.defaultMaxCostMicros,
          checkModel: (model) => void prices.resolve(model),
        })
      : [];
  const cache = new DynamoDbCacheStore(dynamodb, { table: config.tables.cache, maxItemBytes: config.responseCache.maxItemBytes });
  const spend = new SpendLayer({
    pipeline,
    routing: config.routing,
    clock,
    log,
    rates: ledger,
    ...(config.responseCache.enabled ? { cache: { store: cache, settings: config.responseCache } } : {}),
  });
  const refusalStore = new DynamoDbRefusalStore(dynamodb, { usage: config.tables.usage, retentionDays: config.usageRetentionDays });
  const refusals = { store: refusalStore, recorder: new RefusalRecorder({ store: refusalStore, clock, log }) };
  const app = new GatewayApp({
    authenticator,
    spend,
    ...(byok ? { byok } : {}),
    routes: [...identityRoutes, ...agentRoutes],
    usage,
    pipeline,
    prices,
    providers,
    clock,
    log,
    maxBodyBytes: config.maxBodyBytes,
    defaultMaxOutputTokens: config.defaultMaxOutputTokens,
    inputLimits: { maxJsonDepth: config.maxJsonDepth, maxOutputTokens: config.maxOutputTokens },
    redactor: gatewayCredentialRedactor(secrets, deps.adminToken),
    observers: [
      createRequestLogObserver(log),
      ...(deps.emitMetrics ? [createMetricsObserver({ stage: config.stage })] : []),
      refusals.recorder.observer,
      ...(deps.observers ?? []),
    ],
  });
  // A routing chain whose fallback cannot answer in the caller's dialect is refused here, at start.
  try {
    checkRouteDialects(config.routing, (model, endpoint) => app.serves(model, endpoint));
  } catch (err) {
    throw new ConfigError('TOLLGATE_ROUTES', err instanceof Error ? err.message : String(err));
  }
  return {
    app,
    keys,
    ledger,
    ...(leases ? { leases } : {}),
    usage,
    pipeline,
    authenticator,
    prices,
    providers,
    tokens,
    guardrails,
    cache,
    refusals,
    ...(byok ? { byok } : {}),
    ...(audit ? { audit } : {}),
    ...(runs && runQueue ? { runs, runQueue } : {}),
  };
}
