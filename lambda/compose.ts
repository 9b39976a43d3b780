/**
 * The composition root: builds the gateway from configuration, secrets and a DynamoDB client. The Lambda
 * handler and the local server both call {@link createGateway}, so they run the same code.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
import type { GatewayConfig } from './config';
import { Authenticator } from './core/auth';
import { type Clock, systemClock } from './core/clock';
import { StoreUnavailableError } from './core/errors';
import { jsonLogger, type Logger } from './core/log';
import type { SecretSource } from './core/secrets';
import { RequestPipeline } from './core/pipeline';
import { PriceBook } from './core/pricing';
import { GatewayApp } from './http/app';
import { createProviders, type ProviderRegistry } from './providers/registry';
import { DynamoDbKeyStore } from './store/dynamodb/key-store';
import { DynamoDbLedger } from './store/dynamodb/ledger';
import { DynamoDbUsageStore } from './store/dynamodb/usage-store';

/** Secret values the gateway needs at runtime. Never logged, never in env vars in AWS (SSM at cold start). */
export interface GatewaySecrets {
  /** HMAC pepper for API key hashes. */
  readonly keyPepper: string;
  readonly openaiApiKey?: string;
  readonly anthropicApiKey?: string;
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
  return { keyPepper, openaiApiKey, anthropicApiKey };
}

export interface GatewayDependencies {
  readonly config: GatewayConfig;
  readonly secrets: GatewaySecrets;
  readonly dynamodb: DynamoDBClient;
  readonly clock?: Clock;
  readonly log?: Logger;
  readonly bedrockClient?: BedrockRuntimeClient;
  /** Replace the provider registry (tests of routing). */
  readonly providers?: ProviderRegistry;
}

export interface Gateway {
  readonly app: GatewayApp;
  readonly keys: DynamoDbKeyStore;
  readonly ledger: DynamoDbLedger;
  readonly usage: DynamoDbUsageStore;
  readonly pipeline: RequestPipeline;
  readonly authenticator: Authenticator;
  readonly prices: PriceBook;
  readonly providers: ProviderRegistry;
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
  });
  const usage = new DynamoDbUsageStore(dynamodb, config.tables);
  const providers =
    deps.providers ??
    createProviders(
      config.providers,
      { openaiApiKey: secrets.openaiApiKey, anthropicApiKey: secrets.anthropicApiKey },
      { defaultMaxTokens: config.defaultMaxOutputTokens, clock, ...(deps.bedrockClient ? { bedrockClient: deps.bedrockClient } : {}) },
    );
  const prices = new PriceBook({ overrides: config.priceOverrides, providers: providers.ids(), now: () => clock.now() });
  const authenticator = new Authenticator({ keys, pepper: secrets.keyPepper, cacheMs: config.authCacheMs, clock });
  const pipeline = new RequestPipeline({
    ledger,
    keys,
    clock,
    log,
    limitsCacheMs: config.authCacheMs,
    holdTtlMs: config.holdTtlMs,
    platformShards: config.platformShards,
    upstreamTimeoutMs: config.upstreamTimeoutMs,
  });
  const app = new GatewayApp({
    authenticator,
    pipeline,
    prices,
    providers,
    clock,
    log,
    maxBodyBytes: config.maxBodyBytes,
    defaultMaxOutputTokens: config.defaultMaxOutputTokens,
  });
  return { app, keys, ledger, usage, pipeline, authenticator, prices, providers };
}
