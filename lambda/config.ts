/**
 * The gateway's runtime configuration, read from the environment once at cold start (or once by the local
 * server). Nothing else in lambda/ reads `process.env`. Secrets are NOT here: they come from a
 * {@link SecretSource} (SSM in AWS, the environment or a local file on one machine).
 */
import type { TableNames } from './store/dynamodb/schema';
import { type MicroUsd, usdToMicros } from './core/money';
import { DEFAULT_GUARDRAILS, DEFAULT_VELOCITY, type GuardrailSettings } from './core/guardrails/settings';
import { DEFAULT_LIMITS, type DefaultLimits, parseBudgetDefaults } from './core/guardrails/defaults';
import type { BudgetLimits } from './core/types';
import { type AdmissionOptions, DEFAULT_ADMISSION } from './core/admission';
import { DEFAULT_LEASES, type LeaseOptions } from './core/lease/leasing-ledger';
import { DEFAULT_POOLS, DEFAULT_SHARED_POOLS, type PoolOptions } from './store/dynamodb/pools';
import { DEFAULT_SETTLE_ATTEMPTS, DEFAULT_SETTLE_BASE_DELAY_MS } from './core/settle-retry';
import { parseRoutingRules, type RoutingSettings } from './core/routing/rules';

export interface ProviderEndpoints {
  /** OpenAI-compatible base URL, ending in `/v1` as the OpenAI SDK's `OPENAI_BASE_URL` does. */
  readonly openaiBaseUrl: string;
  /** Anthropic base URL without `/v1`, as the Anthropic SDK's `ANTHROPIC_BASE_URL`. */
  readonly anthropicBaseUrl: string;
  /** Region for Bedrock, when Bedrock is enabled. */
  readonly bedrockRegion?: string;
  /** Serve `mock/<model>` from the built-in mock provider (no network, deterministic). */
  readonly mockEnabled: boolean;
}

export interface GatewayConfig {
  readonly stage: string;
  readonly region: string;
  readonly tables: TableNames;
  /** DynamoDB endpoint override (DynamoDB Local); absent in AWS. */
  readonly dynamodbEndpoint?: string;
  /** Largest accepted request body; larger ones get 413 before anything else happens. */
  readonly maxBodyBytes: number;
  /** Deepest JSON nesting accepted in a request body; deeper ones get 400 `json_too_deep`. */
  readonly maxJsonDepth: number;
  /** Largest `max_tokens` (or equivalent) a request may ask of a model whose own output cap is unknown. */
  readonly maxOutputTokens: number;
  /** How long a key record and budget limits are cached in memory. Seconds, so a suspension bites fast. */
  readonly authCacheMs: number;
  /** How long a hold may live before the sweeper reclaims it (longer than the longest request). */
  readonly holdTtlMs: number;
  /** How many counter items the platform-wide budget is spread across. */
  readonly platformShards: number;
  /** Output tokens reserved when a request sets no max_tokens and the model has no known cap. */
  readonly defaultMaxOutputTokens: number;
  /**
   * When the caller sets no output cap, the gateway reserves (and sends upstream) the largest cap the tightest
   * remaining budget allows, but never less than this (core/output-cap.ts).
   */
  readonly minOutputTokens: number;
  /** Limits every key, user and the platform get unless an operator set their own (core/guardrails/defaults.ts). */
  readonly defaults: DefaultLimits;
  /** Operator price overrides and extra models (JSON, see README). */
  readonly priceOverrides: Readonly<Record<string, PriceOverride>>;
  readonly upstreamTimeoutMs: number;
  /** Load shedding at admission (core/admission.ts): bursts past these bounds get 429 `gateway_busy`. */
  readonly admission: Required<AdmissionOptions>;
  /** Budget leases (core/lease/leasing-ledger.ts): a busy key's requests admitted against a leased slice. */
  readonly leases: { readonly enabled: boolean; readonly exactLoopCounts: boolean } & Required<LeaseOptions>;
  /** Scope pools (store/dynamodb/pools.ts): a key busy across many instances admitted with single-item writes. */
  readonly pools: { readonly enabled: boolean } & Required<PoolOptions>;
  /** Allowance pools of shared scopes (org, platform) once they are busy (store/dynamodb/pools.ts). */
  readonly sharedPools: { readonly enabled: boolean } & Required<Omit<PoolOptions, 'quietEpochMs' | 'quietWarmupMs'>>;
  /** Settle retries when the store is unreachable, before the hold is left for the sweeper (core/settle-retry.ts). */
  readonly settleRetry: { readonly attempts: number; readonly baseDelayMs: number };
  /** How long usage records are kept (DynamoDB TTL). */
  readonly usageRetentionDays: number;
  readonly providers: ProviderEndpoints;
  /** SSM parameter prefix holding this stage's secrets, e.g. `/tollgate/prod/` (AWS only). */
  readonly ssmPrefix?: string;
  /** Loop guard, circuit breaker and alert spacing (docs/guardrails.md). */
  readonly guardrails: GuardrailSettings;
  /** The kill switch's budget and alerts topic (the kill-switch and alert-dispatcher Lambdas). */
  readonly killSwitch: KillSwitchConfig;
  /** Service JWTs: the `iss` and `aud` every token must carry. */
  readonly jwt: { readonly issuer: string; readonly audience: string };
  /** The KMS key BYOK provider keys are envelope-encrypted with (AWS); absent locally (a local key is used). */
  readonly dataKeyArn?: string;
  /**
   * Who may call `/admin/*`: `iam` (API Gateway's AWS_IAM authorizer vouched for the caller; the request must
   * carry its IAM ARN), `local-token` (the local admin token printed at start-up), or `off` (every admin
   * request is refused). Explicit, never guessed.
   */
  readonly adminAuth: AdminAuthMode;
  /** The agent service: its queue, the gateway URL its worker calls, and the loop guards of a run. */
  readonly agent: AgentSettings;
  /** The response cache (README "Response cache"). */
  readonly responseCache: ResponseCacheConfig;
  /** Aliases, routing rules, fallback lists and budget downgrades (`TOLLGATE_ROUTES`, README "Routing"). */
  readonly routing: RoutingSettings;
  /** Billing reconciliation (README "Billing reconciliation"). */
  readonly reconcile: ReconcileConfig;
}

/** The response cache's settings; whether a request uses it is the key's setting and the request's headers. */
export interface ResponseCacheConfig {
  /** Off: no request reads or writes the cache, whatever its key or headers say. */
  readonly enabled: boolean;
  /** How long an answer is kept when the request names no max-age. */
  readonly defaultTtlSeconds: number;
  /** The longest any answer is kept. */
  readonly maxTtlSeconds: number;
  /** Largest cache item (compressed answer + attributes); DynamoDB's item limit is 400 KB. */
  readonly maxItemBytes: number;
  /** Largest answer captured for storing before compression. */
  readonly maxCaptureBytes: number;
}

/** Where billing reconciliation reads the providers' own reports, and when drift alarms. */
export interface ReconcileConfig {
  /** OpenAI admin API base (`…/v1`), for `GET /organization/costs`. */
  readonly openaiAdminBaseUrl: string;
  /** Anthropic admin API base (no `/v1`), for `GET /v1/organizations/cost_report`. */
  readonly anthropicAdminBaseUrl: string;
  /** Cost Explorer endpoint override (tests); absent: the AWS endpoint of us-east-1. */
  readonly costExplorerEndpoint?: string;
  /** Compare Bedrock spend with Cost Explorer. */
  readonly bedrock: boolean;
  /** A day/provider/model whose drift is past this many micro-USD (either way) is an alarm. */
  readonly alarmDriftMicros: MicroUsd;
}

/** Settings of agent runs (issue 6), shared by the gateway (which queues runs) and the agent worker. */
export interface AgentSettings {
  /** The SQS queue of runs (AWS); absent: the gateway serves no agent routes unless given a queue. */
  readonly queueUrl?: string;
  /** The gateway the worker calls (`…/v1/chat/completions`), e.g. the API's base URL. */
  readonly gatewayUrl?: string;
  /** Model calls a run may make. */
  readonly maxIterations: number;
  /** Wall-clock limit of one run. */
  readonly runTimeoutMs: number;
  /** The cost cap of a run that names none (micro-USD). */
  readonly defaultMaxCostMicros: MicroUsd;
  /** How long finished runs are kept (DynamoDB TTL). */
  readonly runRetentionDays: number;
  /** How long a stopping worker lets its current run finish before returning it to the queue. */
  readonly shutdownGraceMs: number;
}

/** What the kill switch acts on; set by the guardrails stack. */
export interface KillSwitchConfig {
  /** The AWS Budgets budget whose notifications may stop the platform. */
  readonly budgetName?: string;
  /** The account owning that budget (DescribeBudget's AccountId). */
  readonly accountId?: string;
  /** Percent of the budget's limit that actual spend must reach before the kill switch acts. */
  readonly thresholdPercent: number;
  /** The alerts SNS topic the kill switch and the alert dispatcher publish to. */
  readonly alertsTopicArn?: string;
  /**
   * Percent of the platform's limit (explicit or default) that platform spend in the ledger must reach before
   * the kill switch stops everything (checked every minute by the sweeper).
   */
  readonly ledgerPercent: number;
}

/** How `/admin/*` requests are authorized; see {@link GatewayConfig.adminAuth}. */
export type AdminAuthMode = 'iam' | 'local-token' | 'off';

/** Prices in USD per million tokens, as price pages print them. */
export interface PriceOverride {
  readonly input: number;
  readonly output?: number;
  readonly cachedInput?: number;
  readonly cacheWrite?: number;
  readonly maxOutputTokens?: number;
}

export class ConfigError extends Error {
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super(`${setting}: ${message}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(name, `must be a whole number from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw new ConfigError(name, `must be true or false, got "${raw}"`);
}

function parsePriceOverrides(raw: string | undefined): Record<string, PriceOverride> {
  if (!raw) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError('TOLLGATE_PRICES', 'is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError('TOLLGATE_PRICES', 'must be an object of "provider/model": {input, output, …}');
  }
  const out: Record<string, PriceOverride> = {};
  for (const [model, value] of Object.entries(parsed as Record<string, unknown>)) {
    const v = value as Record<string, unknown>;
    for (const field of ['input', 'output', 'cachedInput', 'cacheWrite', 'maxOutputTokens']) {
      const n = v?.[field];
      if (n !== undefined && (typeof n !== 'number' || !(n >= 0))) {
        throw new ConfigError('TOLLGATE_PRICES', `${model}.${field} must be a non-negative number`);
      }
    }
    if (typeof v?.input !== 'number') throw new ConfigError('TOLLGATE_PRICES', `${model}.input is required`);
    out[model] = v as unknown as PriceOverride;
  }
  return out;
}

/** Reads and validates the configuration; throws {@link ConfigError} naming the bad setting. */
export function loadConfig(env: Env = process.env): GatewayConfig {
  const stage = env.TOLLGATE_STAGE || 'local';
  const prefix = env.TOLLGATE_TABLE_PREFIX || `tollgate-${stage}-`;
  return {
    stage,
    region: env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1',
    tables: {
      keys: env.TOLLGATE_TABLE_KEYS || `${prefix}keys`,
      budgets: env.TOLLGATE_TABLE_BUDGETS || `${prefix}budgets`,
      usage: env.TOLLGATE_TABLE_USAGE || `${prefix}usage`,
      byok: env.TOLLGATE_TABLE_BYOK || `${prefix}byok`,
      audit: env.TOLLGATE_TABLE_AUDIT || `${prefix}audit`,
      runs: env.TOLLGATE_TABLE_RUNS || `${prefix}runs`,
      cache: env.TOLLGATE_TABLE_CACHE || `${prefix}cache`,
      reconcile: env.TOLLGATE_TABLE_RECONCILE || `${prefix}reconcile`,
    },
    dynamodbEndpoint: env.TOLLGATE_DYNAMODB_ENDPOINT || undefined,
    maxBodyBytes: int(env, 'TOLLGATE_MAX_BODY_BYTES', 2 * 1024 * 1024, 1024, 10 * 1024 * 1024),
    maxJsonDepth: int(env, 'TOLLGATE_MAX_JSON_DEPTH', 64, 8, 1_000),
    maxOutputTokens: int(env, 'TOLLGATE_MAX_OUTPUT_TOKENS', 262_144, 1, 10_000_000),
    authCacheMs: int(env, 'TOLLGATE_AUTH_CACHE_MS', 5_000, 0, 60_000),
    holdTtlMs: int(env, 'TOLLGATE_HOLD_TTL_MS', 16 * 60_000, 60_000, 24 * 3_600_000),
    platformShards: int(env, 'TOLLGATE_PLATFORM_SHARDS', 8, 1, 64),
    defaultMaxOutputTokens: int(env, 'TOLLGATE_DEFAULT_MAX_OUTPUT_TOKENS', 32_000, 1, 1_000_000),
    minOutputTokens: int(env, 'TOLLGATE_MIN_OUTPUT_TOKENS', 1_024, 1, 1_000_000),
    defaults: {
      key: budgets(env, 'TOLLGATE_DEFAULT_KEY_BUDGETS', DEFAULT_LIMITS.key),
      user: budgets(env, 'TOLLGATE_DEFAULT_USER_BUDGETS', DEFAULT_LIMITS.user),
      platform: budgets(env, 'TOLLGATE_DEFAULT_PLATFORM_BUDGETS', DEFAULT_LIMITS.platform),
      ...optionalRate(env, 'TOLLGATE_DEFAULT_KEY_RPM', 'keyRpm', DEFAULT_LIMITS.keyRpm),
      ...optionalRate(env, 'TOLLGATE_DEFAULT_KEY_TPM', 'keyTpm', DEFAULT_LIMITS.keyTpm),
    },
    priceOverrides: parsePriceOverrides(env.TOLLGATE_PRICES),
    upstreamTimeoutMs: int(env, 'TOLLGATE_UPSTREAM_TIMEOUT_MS', 600_000, 1_000, 900_000),
    leases: {
      enabled: bool(env, 'TOLLGATE_LEASES', true),
      exactLoopCounts: bool(env, 'TOLLGATE_LEASE_EXACT_LOOP_COUNTS', false),
      ttlMs: int(env, 'TOLLGATE_LEASE_TTL_MS', DEFAULT_LEASES.ttlMs, 1_000, 300_000),
      minBusy: int(env, 'TOLLGATE_LEASE_MIN_BUSY', DEFAULT_LEASES.minBusy, 1, 10_000),
      maxShare: int(env, 'TOLLGATE_LEASE_MAX_SHARE_PERCENT', DEFAULT_LEASES.maxShare * 100, 1, 100) / 100,
      minHeadroom: int(env, 'TOLLGATE_LEASE_MIN_HEADROOM', DEFAULT_LEASES.minHeadroom, 1, 1_000_000),
    },
    pools: {
      enabled: bool(env, 'TOLLGATE_POOLS', true),
      shards: int(env, 'TOLLGATE_POOL_SHARDS', DEFAULT_POOLS.shards, 1, 256),
      epochMs: int(env, 'TOLLGATE_POOL_EPOCH_MS', DEFAULT_POOLS.epochMs, 1_000, 300_000),
      graceMs: int(env, 'TOLLGATE_POOL_GRACE_MS', DEFAULT_POOLS.graceMs, 0, 3_600_000),
      markMs: int(env, 'TOLLGATE_POOL_MARK_MS', DEFAULT_POOLS.markMs, 1_000, 3_600_000),
      quietEpochMs: int(env, 'TOLLGATE_QUIET_POOL_EPOCH_MS', DEFAULT_POOLS.quietEpochMs, 0, 600_000),
      quietWarmupMs: int(env, 'TOLLGATE_QUIET_POOL_WARMUP_MS', DEFAULT_POOLS.quietWarmupMs, 0, 600_000),
    },
    sharedPools: {
      enabled: bool(env, 'TOLLGATE_SHARED_POOLS', true),
      shards: int(env, 'TOLLGATE_SHARED_POOL_SHARDS', DEFAULT_SHARED_POOLS.shards, 1, 1_024),
      epochMs: int(env, 'TOLLGATE_SHARED_POOL_EPOCH_MS', DEFAULT_SHARED_POOLS.epochMs, 1_000, 300_000),
      graceMs: int(env, 'TOLLGATE_POOL_GRACE_MS', DEFAULT_SHARED_POOLS.graceMs, 0, 3_600_000),
      markMs: int(env, 'TOLLGATE_POOL_MARK_MS', DEFAULT_SHARED_POOLS.markMs, 1_000, 3_600_000),
    },
    admission: {
      maxInFlight: int(env, 'TOLLGATE_ADMISSION_MAX_IN_FLIGHT', DEFAULT_ADMISSION.maxInFlight, 1, 10_000),
      maxQueued: int(env, 'TOLLGATE_ADMISSION_MAX_QUEUED', DEFAULT_ADMISSION.maxQueued, 0, 100_000),
      perKeyInFlight: int(env, 'TOLLGATE_ADMISSION_PER_KEY_IN_FLIGHT', DEFAULT_ADMISSION.perKeyInFlight, 1, 1_000),
      perKeyQueued: int(env, 'TOLLGATE_ADMISSION_PER_KEY_QUEUED', DEFAULT_ADMISSION.perKeyQueued, 0, 100_000),
      maxWaitMs: int(env, 'TOLLGATE_ADMISSION_MAX_WAIT_MS', DEFAULT_ADMISSION.maxWaitMs, 0, 60_000),
    },
    settleRetry: {
      attempts: int(env, 'TOLLGATE_SETTLE_ATTEMPTS', DEFAULT_SETTLE_ATTEMPTS, 1, 20),
      baseDelayMs: int(env, 'TOLLGATE_SETTLE_RETRY_BASE_MS', DEFAULT_SETTLE_BASE_DELAY_MS, 0, 60_000),
    },
    usageRetentionDays: int(env, 'TOLLGATE_USAGE_RETENTION_DAYS', 400, 1, 3_650),
    providers: {
      openaiBaseUrl: (env.OPENAI_BASE_URL || 'https://api.openai.com/v1').replace(/\/+$/, ''),
      anthropicBaseUrl: (env.ANTHROPIC_BASE_URL || 'https://api.anthropic.com').replace(/\/+$/, ''),
      bedrockRegion: bool(env, 'TOLLGATE_BEDROCK', false) ? env.TOLLGATE_BEDROCK_REGION || env.AWS_REGION : undefined,
      mockEnabled: bool(env, 'TOLLGATE_MOCK_PROVIDER', true),
    },
    ssmPrefix: env.TOLLGATE_SSM_PREFIX || undefined,
    guardrails: {
      loop: {
        maxRepeats: int(env, 'TOLLGATE_LOOP_MAX_REPEATS', DEFAULT_GUARDRAILS.loop.maxRepeats, 1, 10_000),
        windowMs: int(env, 'TOLLGATE_LOOP_WINDOW_MS', DEFAULT_GUARDRAILS.loop.windowMs, 10_000, 24 * 3_600_000),
        maxFailures: int(env, 'TOLLGATE_LOOP_MAX_FAILURES', DEFAULT_GUARDRAILS.loop.maxFailures, 1, 10_000),
        maxTurnRepeats: int(env, 'TOLLGATE_LOOP_MAX_TURN_REPEATS', DEFAULT_GUARDRAILS.loop.maxTurnRepeats, 0, 10_000),
      },
      velocity: {
        enabled: bool(env, 'TOLLGATE_VELOCITY', DEFAULT_VELOCITY.enabled),
        windowMs: int(env, 'TOLLGATE_VELOCITY_WINDOW_MS', DEFAULT_VELOCITY.windowMs, 10_000, 3_600_000),
        floorMicros: usd(env, 'TOLLGATE_VELOCITY_FLOOR_USD', DEFAULT_VELOCITY.floorMicros),
        multiple: int(env, 'TOLLGATE_VELOCITY_MULTIPLE', DEFAULT_VELOCITY.multiple, 1, 1_000),
        cooldownMs: int(env, 'TOLLGATE_VELOCITY_COOLDOWN_MS', DEFAULT_VELOCITY.cooldownMs, 1_000, 86_400_000),
      },
      breaker: {
        cooldownMs: int(env, 'TOLLGATE_CIRCUIT_COOLDOWN_MS', DEFAULT_GUARDRAILS.breaker.cooldownMs, 0, 7 * 86_400_000),
        warningSpacingMs: int(env, 'TOLLGATE_ALERT_WARNING_SPACING_MS', DEFAULT_GUARDRAILS.breaker.warningSpacingMs, 0, 7 * 86_400_000),
      },
    },
    killSwitch: {
      budgetName: env.TOLLGATE_BUDGET_NAME || undefined,
      accountId: env.TOLLGATE_ACCOUNT_ID || undefined,
      thresholdPercent: int(env, 'TOLLGATE_KILL_SWITCH_PERCENT', 100, 1, 1_000),
      alertsTopicArn: env.TOLLGATE_ALERTS_TOPIC_ARN || undefined,
      ledgerPercent: int(env, 'TOLLGATE_LEDGER_KILL_PERCENT', 95, 1, 1_000),
    },
    jwt: {
      issuer: env.TOLLGATE_JWT_ISSUER || 'tollgate',
      audience: env.TOLLGATE_JWT_AUDIENCE || `tollgate-${stage}`,
    },
    dataKeyArn: env.TOLLGATE_DATA_KEY_ARN || undefined,
    adminAuth: adminAuthMode(env.TOLLGATE_ADMIN_AUTH),
    agent: {
      queueUrl: env.TOLLGATE_AGENT_QUEUE_URL || undefined,
      gatewayUrl: env.TOLLGATE_GATEWAY_URL ? env.TOLLGATE_GATEWAY_URL.replace(/\/+$/, '') : undefined,
      maxIterations: int(env, 'TOLLGATE_AGENT_MAX_ITERATIONS', 20, 1, 200),
      runTimeoutMs: int(env, 'TOLLGATE_AGENT_RUN_TIMEOUT_MS', 600_000, 1_000, 3_600_000),
      defaultMaxCostMicros: usd(env, 'TOLLGATE_AGENT_DEFAULT_MAX_COST_USD', 1_000_000),
      runRetentionDays: int(env, 'TOLLGATE_AGENT_RUN_RETENTION_DAYS', 30, 1, 3_650),
      shutdownGraceMs: int(env, 'TOLLGATE_AGENT_SHUTDOWN_GRACE_MS', 25_000, 0, 600_000),
    },
    responseCache: {
      enabled: bool(env, 'TOLLGATE_CACHE', true),
      defaultTtlSeconds: int(env, 'TOLLGATE_CACHE_TTL_SECONDS', 3_600, 1, 30 * 86_400),
      maxTtlSeconds: int(env, 'TOLLGATE_CACHE_MAX_TTL_SECONDS', 86_400, 1, 30 * 86_400),
      maxItemBytes: int(env, 'TOLLGATE_CACHE_MAX_ITEM_BYTES', 380_000, 4_096, 400_000),
      maxCaptureBytes: int(env, 'TOLLGATE_CACHE_MAX_CAPTURE_BYTES', 4 * 1024 * 1024, 4_096, 64 * 1024 * 1024),
    },
    routing: routingRules(env.TOLLGATE_ROUTES),
    reconcile: {
      openaiAdminBaseUrl: (env.TOLLGATE_OPENAI_ADMIN_BASE_URL || env.OPENAI_BASE_URL || 'https://api.openai.com/v1').replace(/\/+$/, ''),
      anthropicAdminBaseUrl: (env.TOLLGATE_ANTHROPIC_ADMIN_BASE_URL || env.ANTHROPIC_BASE_URL || 'https://api.anthropic.com').replace(/\/+$/, ''),
      costExplorerEndpoint: env.TOLLGATE_COST_EXPLORER_ENDPOINT || undefined,
      bedrock: bool(env, 'TOLLGATE_BEDROCK', false),
      alarmDriftMicros: usd(env, 'TOLLGATE_RECONCILE_ALARM_USD', 5_000_000),
    },
  };
}

function routingRules(raw: string | undefined): RoutingSettings {
  try {
    return parseRoutingRules(raw);
  } catch (err) {
    throw new ConfigError('TOLLGATE_ROUTES', err instanceof Error ? err.message : String(err));
  }
}

function usd(env: Env, name: string, fallback: MicroUsd): MicroUsd {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  let micros: MicroUsd;
  try {
    micros = usdToMicros(raw);
  } catch {
    micros = 0;
  }
  if (micros <= 0) throw new ConfigError(name, `must be a positive dollar amount such as 1 or 0.25, got "${raw}"`);
  return micros;
}

/** A budget-defaults setting: `month=100`, `day=10,hour=2` or `none`. */
function budgets(env: Env, name: string, fallback: BudgetLimits): BudgetLimits {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  try {
    return parseBudgetDefaults(raw);
  } catch (err) {
    throw new ConfigError(name, `must be WINDOW=USD[,WINDOW=USD] (hour, day, month) or none, got "${raw}"`);
  }
}

/** A per-minute default that may be turned off with `none`. */
function optionalRate<K extends string>(env: Env, name: string, key: K, fallback: number | undefined): Partial<Record<K, number>> {
  const raw = env[name];
  if (raw === 'none') return {};
  const value = raw === undefined || raw === '' ? fallback : int(env, name, 0, 1, 100_000_000);
  return value === undefined ? {} : ({ [key]: value } as Partial<Record<K, number>>);
}

function adminAuthMode(raw: string | undefined): AdminAuthMode {
  if (raw === undefined || raw === '') return 'off';
  if (raw === 'iam' || raw === 'local-token' || raw === 'off') return raw;
  throw new ConfigError('TOLLGATE_ADMIN_AUTH', `must be iam, local-token or off, got "${raw}"`);
}
