/**
 * Where the gateway's secrets come from. In AWS they are SSM SecureString parameters under one prefix per stage
 * (`/tollgate/<stage>/<name>`), written by `npm run secrets -- set <name>` and read here once, then cached; on
 * one machine they come from the environment. A secret value never reaches a log line or an error message: the
 * errors below name the parameter, never its value.
 */
import type { SSMClient } from '@aws-sdk/client-ssm';
import { systemClock, type Clock } from './clock';
import { StoreUnavailableError } from './errors';
import { lazy, resolveLazily, type Lazily } from './lazy';

/** The SSM commands, loaded with the first fetch (the gateway's cold start reads secrets once). */
const ssmSdk = lazy(() => import('@aws-sdk/client-ssm'));

/** Every secret tollgate reads. CDK grants `ssm:GetParameters` on exactly these names. */
export const SECRET_NAMES = [
  'openai-api-key',
  'anthropic-api-key',
  'key-pepper',
  'jwt-secret',
  'slack-webhook-url',
  'openai-admin-key',
  'anthropic-admin-key',
] as const;
export type SecretName = (typeof SECRET_NAMES)[number];

/**
 * The secrets the gateway Lambda reads, and exactly the names CDK grants it. SSM's GetParameters fails as a whole
 * when one name is not granted, so this list is also {@link SsmSecretSource}'s default.
 */
export const GATEWAY_SECRET_NAMES: readonly SecretName[] = ['openai-api-key', 'anthropic-api-key', 'key-pepper', 'jwt-secret'];

/** The admin keys billing reconciliation reads the providers' cost reports with (and nothing else does). */
export const RECONCILE_SECRET_NAMES: readonly SecretName[] = ['openai-admin-key', 'anthropic-admin-key'];

/** True when `name` is one of {@link SECRET_NAMES}. */
export function isSecretName(name: string): name is SecretName {
  return (SECRET_NAMES as readonly string[]).includes(name);
}

/** The SSM prefix of a stage's secrets, e.g. `/tollgate/prod/`. */
export function secretsPrefix(stage: string): string {
  return `/tollgate/${stage}/`;
}

/**
 * The alias of the stage's customer-managed KMS key, which encrypts the tables, the SecureString secrets and BYOK
 * provider keys. The data stack creates it; the secrets CLI encrypts with it.
 */
export function dataKeyAlias(stage: string): string {
  return `alias/tollgate-${stage}-data`;
}

/**
 * The encryption context BYOK envelope encryption must carry: the gateway may use the data key only with it, so
 * the same key cannot be used to decrypt anything else from inside the gateway.
 */
export const BYOK_ENCRYPTION_CONTEXT = { purpose: 'tollgate-byok' } as const;

/** Reads one secret by its short name (`openai-api-key`); `undefined` when it has not been set. */
export interface SecretSource {
  get(name: string): Promise<string | undefined>;
}

export interface SsmSecretSourceOptions {
  /** The client, or a function creating it on first use. */
  readonly client: Lazily<Pick<SSMClient, 'send'>>;
  /** Parameter prefix ending in `/`, e.g. `/tollgate/prod/`. */
  readonly prefix: string;
  /**
   * Names fetched together in one `GetParameters` call (SSM takes up to 10 per call). Every one must be granted
   * to the caller: SSM rejects the whole call when one is not.
   * @default GATEWAY_SECRET_NAMES
   */
  readonly names?: readonly string[];
  /**
   * How long fetched values are served before the next fetch, so a rotated secret is picked up.
   * @default 5 minutes
   */
  readonly ttlMs?: number;
  /**
   * After a failed refresh, how long the previous values keep being served before the next attempt.
   * @default 30 seconds
   */
  readonly retryAfterMs?: number;
  /** @default systemClock */
  readonly clock?: Clock;
}

const SSM_BATCH = 10;

/**
 * Secrets from SSM Parameter Store: all names in one `GetParameters` (WithDecryption) call, cached for `ttlMs`.
 * Concurrent callers share one in-flight fetch. When a refresh fails and earlier values exist they keep being
 * served (a brief SSM outage must not take the gateway down); with no earlier values the error is a
 * {@link StoreUnavailableError}, so the caller fails closed.
 */
export class SsmSecretSource implements SecretSource {
  private readonly client: () => Promise<Pick<SSMClient, 'send'>>;
  private readonly prefix: string;
  private readonly names: readonly string[];
  private readonly ttlMs: number;
  private readonly retryAfterMs: number;
  private readonly clock: Clock;
  private values: ReadonlyMap<string, string> | undefined;
  private expiresAt = 0;
  private inFlight: Promise<ReadonlyMap<string, string>> | undefined;

  constructor(options: SsmSecretSourceOptions) {
    if (!options.prefix.startsWith('/') || !options.prefix.endsWith('/')) {
      throw new RangeError(`SSM secret prefix must start and end with "/", got "${options.prefix}"`);
    }
    this.client = resolveLazily(options.client);
    this.prefix = options.prefix;
    this.names = options.names ?? GATEWAY_SECRET_NAMES;
    this.ttlMs = options.ttlMs ?? 5 * 60_000;
    this.retryAfterMs = options.retryAfterMs ?? 30_000;
    this.clock = options.clock ?? systemClock;
  }

  async get(name: string): Promise<string | undefined> {
    if (!this.names.includes(name)) {
      throw new RangeError(`"${name}" is not a secret this source reads (${this.names.join(', ')})`);
    }
    const values = await this.current();
    return values.get(name);
  }

  private async current(): Promise<ReadonlyMap<string, string>> {
    if (this.values && this.clock.now() < this.expiresAt) return this.values;
    this.inFlight ??= this.refresh().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async refresh(): Promise<ReadonlyMap<string, string>> {
    try {
      const fetched = new Map<string, string>();
      const [client, { GetParametersCommand }] = await Promise.all([this.client(), ssmSdk()]);
      for (let i = 0; i < this.names.length; i += SSM_BATCH) {
        const batch = this.names.slice(i, i + SSM_BATCH);
        const out = await client.send(
          new GetParametersCommand({ Names: batch.map((n) => `${this.prefix}${n}`), WithDecryption: true }),
        );
        for (const p of out.Parameters ?? []) {
          if (p.Name?.startsWith(this.prefix) && typeof p.Value === 'string') {
            fetched.set(p.Name.slice(this.prefix.length), p.Value);
          }
        }
      }
      this.values = fetched;
      this.expiresAt = this.clock.now() + this.ttlMs;
      return fetched;
    } catch (err) {
      if (this.values) {
        this.expiresAt = this.clock.now() + this.retryAfterMs;
        return this.values;
      }
      // The SDK error names the parameters at most, never a value; keep it as the cause for the logs.
      throw new StoreUnavailableError('The gateway could not read its secrets; try again shortly.', { cause: err });
    }
  }
}

/**
 * Secrets from environment variables, for the local gateway and tests: `openai-api-key` is read from
 * `TOLLGATE_SECRET_OPENAI_API_KEY`, falling back to the provider SDKs' own names (`OPENAI_API_KEY`,
 * `ANTHROPIC_API_KEY`). The environment is passed in (lambda/config.ts is the one module reading `process.env`).
 */
export class EnvSecretSource implements SecretSource {
  private static readonly FALLBACKS: Readonly<Record<string, string>> = {
    'openai-api-key': 'OPENAI_API_KEY',
    'anthropic-api-key': 'ANTHROPIC_API_KEY',
  };

  constructor(private readonly env: Readonly<Record<string, string | undefined>>) {}

  /** The environment variable that holds `name`. */
  static variableFor(name: string): string {
    return `TOLLGATE_SECRET_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
  }

  async get(name: string): Promise<string | undefined> {
    const own = this.env[EnvSecretSource.variableFor(name)];
    if (own) return own;
    const fallback = EnvSecretSource.FALLBACKS[name];
    const value = fallback ? this.env[fallback] : undefined;
    return value || undefined;
  }
}
