/**
 * The gateway's runtime configuration, read from the environment once at cold start (or once by the local
 * server). Nothing else in lambda/ reads `process.env`. Secrets are NOT here: they come from a
 * {@link SecretSource} (SSM in AWS, the environment or a local file on one machine).
 */
import type { TableNames } from './store/dynamodb/schema';

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
  /** How long a key record and budget limits are cached in memory. Seconds, so a suspension bites fast. */
  readonly authCacheMs: number;
  /** How long a hold may live before the sweeper reclaims it (longer than the longest request). */
  readonly holdTtlMs: number;
  /** How many counter items the platform-wide budget is spread across. */
  readonly platformShards: number;
  /** Output tokens reserved when a request sets no max_tokens and the model has no known cap. */
  readonly defaultMaxOutputTokens: number;
  /** Operator price overrides and extra models (JSON, see README). */
  readonly priceOverrides: Readonly<Record<string, PriceOverride>>;
  readonly upstreamTimeoutMs: number;
  /** How long usage records are kept (DynamoDB TTL). */
  readonly usageRetentionDays: number;
  readonly providers: ProviderEndpoints;
  /** SSM parameter prefix holding this stage's secrets, e.g. `/tollgate/prod/` (AWS only). */
  readonly ssmPrefix?: string;
}

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
    },
    dynamodbEndpoint: env.TOLLGATE_DYNAMODB_ENDPOINT || undefined,
    maxBodyBytes: int(env, 'TOLLGATE_MAX_BODY_BYTES', 2 * 1024 * 1024, 1024, 10 * 1024 * 1024),
    authCacheMs: int(env, 'TOLLGATE_AUTH_CACHE_MS', 5_000, 0, 60_000),
    holdTtlMs: int(env, 'TOLLGATE_HOLD_TTL_MS', 16 * 60_000, 60_000, 24 * 3_600_000),
    platformShards: int(env, 'TOLLGATE_PLATFORM_SHARDS', 8, 1, 64),
    defaultMaxOutputTokens: int(env, 'TOLLGATE_DEFAULT_MAX_OUTPUT_TOKENS', 4_096, 1, 1_000_000),
    priceOverrides: parsePriceOverrides(env.TOLLGATE_PRICES),
    upstreamTimeoutMs: int(env, 'TOLLGATE_UPSTREAM_TIMEOUT_MS', 600_000, 1_000, 900_000),
    usageRetentionDays: int(env, 'TOLLGATE_USAGE_RETENTION_DAYS', 400, 1, 3_650),
    providers: {
      openaiBaseUrl: (env.OPENAI_BASE_URL || 'https://api.openai.com/v1').replace(/\/+$/, ''),
      anthropicBaseUrl: (env.ANTHROPIC_BASE_URL || 'https://api.anthropic.com').replace(/\/+$/, ''),
      bedrockRegion: bool(env, 'TOLLGATE_BEDROCK', false) ? env.TOLLGATE_BEDROCK_REGION || env.AWS_REGION : undefined,
      mockEnabled: bool(env, 'TOLLGATE_MOCK_PROVIDER', true),
    },
    ssmPrefix: env.TOLLGATE_SSM_PREFIX || undefined,
  };
}
