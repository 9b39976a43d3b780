/**
 * The DynamoDB client the adapters share, and the one place SDK failures become domain errors.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { StoreUnavailableError, TollgateError } from '../../core/errors';
import { withoutSdkLogger } from '../aws-clients';
import { withDirectCalls } from './direct-calls';

export interface DynamoDbClientOptions {
  readonly region: string;
  /** DynamoDB Local's URL; when set the client uses fake credentials. @default AWS's endpoint */
  readonly endpoint?: string;
  /**
   * Attempts per call, first one included (the SDK backs off between them, longer after throttling).
   * @default 3 with an endpoint, 4 in AWS
   */
  readonly maxAttempts?: number;
  /**
   * Time to get a connected socket, waiting for a free one in the pool included.
   * @default 3_000 in AWS, 10_000 with an endpoint (a JVM on a loaded machine)
   */
  readonly connectionTimeoutMs?: number;
  /** Time a request may wait for the answer. @default 3_000 in AWS, 10_000 with an endpoint */
  readonly requestTimeoutMs?: number;
  /**
   * Sockets the client may open at once. The SDK's default (50) makes a burst queue for sockets inside the
   * connection timeout; admission (core/admission.ts) bounds the calls in flight well below this instead.
   * @default 256
   */
  readonly maxSockets?: number;
  /**
   * Resolve each command's middleware stack once and reuse it (the SDK's `cacheMiddleware`) instead of on
   * every call: about a quarter of the SDK's CPU per call. Middleware added to the client after its first call
   * of a command does not apply to that command then, so only the gateway's own clients, which nothing
   * instruments, turn it on; code that instruments a client (benches, tests) leaves it off.
   * @default false
   */
  readonly cacheMiddleware?: boolean;
  /**
   * Send the item operations (GetItem, PutItem, UpdateItem, BatchWriteItem, TransactWriteItems, Query, …)
   * directly: JSON, SigV4 and a keep-alive request without the SDK's middleware, serde and HTTP handler, about a
   * third of the SDK's CPU per call, with the SDK's outputs, exceptions, retries and timeouts
   * (./direct-calls.ts). Middleware added to the client does not see them, so as with `cacheMiddleware` only the
   * gateway's own clients turn it on. Ignored (the SDK sends everything) when the environment asks for FIPS or
   * dual-stack endpoints or sets AWS_ENDPOINT_URL(_DYNAMODB), which only the SDK resolves.
   * @default false
   */
  readonly directCalls?: boolean;
}

/**
 * Creates the client. Timeouts suit DynamoDB: single-digit-millisecond calls, so a call that has not
 * answered in seconds is stuck and is retried or fails closed (503) rather than hanging until the Lambda
 * times out; but a burst never fails them, because admission sheds load with 429 before calls queue here.
 */
export function createDynamoDbClient(options: DynamoDbClientOptions): DynamoDBClient {
  const local = options.endpoint !== undefined;
  const maxSockets = options.maxSockets ?? 256;
  const maxAttempts = options.maxAttempts ?? (local ? 3 : 4);
  const connectionTimeoutMs = options.connectionTimeoutMs ?? (local ? 10_000 : 3_000);
  const requestTimeoutMs = options.requestTimeoutMs ?? (local ? 10_000 : 3_000);
  const client = withSignerPerScheme(withUserAgentOnce(withoutSdkLogger(new DynamoDBClient({
    region: options.region,
    endpoint: options.endpoint,
    credentials: local ? { accessKeyId: 'local', secretAccessKey: 'local' } : undefined,
    maxAttempts,
    cacheMiddleware: options.cacheMiddleware ?? false,
    requestHandler: {
      connectionTimeout: connectionTimeoutMs,
      requestTimeout: requestTimeoutMs,
      // Without this the SDK only logs a warning when the timeout passes and keeps waiting.
      throwOnRequestTimeout: true,
      httpAgent: { keepAlive: true, maxSockets },
      httpsAgent: { keepAlive: true, maxSockets },
    },
  }))));
  const sdkOnly =
    ['AWS_USE_FIPS_ENDPOINT', 'AWS_USE_DUALSTACK_ENDPOINT'].some((name) => process.env[name]?.toLowerCase() === 'true') ||
    (!local && Boolean(process.env.AWS_ENDPOINT_URL_DYNAMODB || process.env.AWS_ENDPOINT_URL));
  if (!options.directCalls || sdkOnly) return client;
  return withDirectCalls(client, { region: options.region, ...(options.endpoint ? { endpoint: options.endpoint } : {}), maxAttempts, connectionTimeoutMs, requestTimeoutMs, maxSockets });
}

/**
 * The SDK rebuilds its user-agent sections on every call (an `os.release()` system call among them), though
 * they never change in a process: `client` gets them built once. The header each call sends is unchanged (the
 * call's own parts, such as its features, are still added per call).
 */
/** The SDK's user-agent sections: name and version pairs. */
type UserAgent = [name: string, version?: string][];

function withUserAgentOnce(client: DynamoDBClient): DynamoDBClient {
  const config = client.config as { defaultUserAgentProvider?: () => Promise<UserAgent> };
  const build = config.defaultUserAgentProvider;
  if (build) {
    let sections: Promise<UserAgent> | undefined;
    // Copies, so a caller that changes what it gets cannot change what the next call gets.
    config.defaultUserAgentProvider = async () => (await (sections ??= build())).map(([name, version]) => (version === undefined ? [name] : [name, version]));
  }
  return client;
}

/** What the SDK's signer factory is given: the endpoint's auth scheme, if it names one. */
interface AuthSchemeLike {
  readonly name?: string;
  readonly signingName?: string;
  readonly signingRegion?: string;
}

/**
 * The SDK creates a new SigV4 signer for every call (copying the whole client configuration into it): `client`
 * reuses one per auth scheme instead. The signer holds no per-request state (credentials are resolved when it
 * signs), and the SDK fixes the client's signing region and service at its first call anyway, so the
 * signatures are the same.
 */
function withSignerPerScheme(client: DynamoDBClient): DynamoDBClient {
  const config = client.config as { signer?: (authScheme?: AuthSchemeLike) => Promise<unknown> };
  const create = config.signer;
  if (create) {
    const signers = new Map<string, Promise<unknown>>();
    config.signer = (authScheme) => {
      const key = `${authScheme?.name}|${authScheme?.signingName}|${authScheme?.signingRegion}`;
      let signer = signers.get(key);
      if (!signer) {
        signer = create(authScheme);
        signers.set(key, signer);
        signer.catch(() => signers.delete(key));
      }
      return signer;
    };
  }
  return client;
}

/** SDK exception names that mean "the store cannot serve us right now" (after the SDK's own retries). */
const UNAVAILABLE_NAMES = new Set([
  'ResourceNotFoundException',
  'ProvisionedThroughputExceededException',
  'ThrottlingException',
  'RequestLimitExceeded',
  'InternalServerError',
  'ServiceUnavailable',
  'ServiceUnavailableException',
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
  'CredentialsProviderError',
  'UnrecognizedClientException',
  'AbortError',
]);

/** Node socket error codes that mean the endpoint is unreachable. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
]);

const NETWORK_CODE_PATTERN = new RegExp(`\\b(${[...NETWORK_CODES].join('|')})\\b`);

/** The SDK exception name of `err` (`ConditionalCheckFailedException`, …), if it has one. */
export function errorName(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && typeof (err as { name?: unknown }).name === 'string'
    ? (err as { name: string }).name
    : undefined;
}

function isUnavailable(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { name?: unknown; code?: unknown; message?: unknown; $metadata?: { httpStatusCode?: number }; cause?: unknown };
  if (typeof e.name === 'string' && UNAVAILABLE_NAMES.has(e.name)) return true;
  if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return true;
  // The SDK's retry layer may re-wrap a socket error it does not recognise as an Error (another realm, as
  // under jest) into "AWS SDK error wrapper for Error: connect ECONNREFUSED …", keeping only the text.
  if (typeof e.message === 'string' && NETWORK_CODE_PATTERN.test(e.message)) return true;
  const status = e.$metadata?.httpStatusCode;
  if (typeof status === 'number' && status >= 500) return true;
  // AggregateError (happy-eyeballs connect) and wrapped socket errors carry the code one level down.
  const inner = (err as { errors?: unknown }).errors;
  if (Array.isArray(inner) && inner.some(isUnavailable)) return true;
  return e.cause !== undefined && e.cause !== err && isUnavailable(e.cause);
}

/**
 * Translates an SDK failure for the caller to throw: an unreachable, throttled, missing or timed-out store
 * becomes {@link StoreUnavailableError} (whose message names no endpoint or table), a write refused by a
 * transaction on its item too (`store_contention`); a TollgateError passes
 * through; anything else (a bug, a validation error) is returned unchanged to be rethrown.
 * `ConditionalCheckFailedException` is the callers' business and must be handled before calling this.
 */
export function translateError(err: unknown): unknown {
  if (err instanceof TollgateError) return err;
  // A single write to an item a transaction was writing, refused (nothing applied) after the callers' own
  // retries: contention, which a retry shortly can pass (never a crash, whatever write met it).
  if (errorName(err) === 'TransactionConflictException') {
    return new StoreUnavailableError('The gateway is too busy to record this request; try again shortly.', {
      code: 'store_contention',
      headers: { 'Retry-After': '1' },
      cause: err,
    });
  }
  if (isUnavailable(err)) {
    return new StoreUnavailableError('The gateway cannot reach its data store right now; try again shortly.', {
      code: 'store_unavailable',
      headers: { 'Retry-After': '1' },
      cause: err,
    });
  }
  return err;
}
