/**
 * The gateway's item calls to DynamoDB without the SDK's per-call machinery. DynamoDB's wire protocol (JSON 1.0)
 * is the command's input as JSON: AttributeValues travel as they are, only binary values become base64. So a
 * call here is one JSON.stringify, a SigV4 signature with the day's signing key kept, one keep-alive HTTP
 * request and one JSON.parse; the SDK spends about three times that CPU on its middleware stack, schema serde,
 * signer and HTTP handler (bench:portkey's profile: a quarter of the gateway's Node CPU per request).
 *
 * Only the item operations go this way (GetItem, PutItem, UpdateItem, DeleteItem, BatchGetItem, BatchWriteItem,
 * TransactGetItems, TransactWriteItems, Query, Scan); everything else (tables, TTL, …) goes through the SDK.
 * What a caller sees is what the SDK gives: the same output (binary values as Uint8Array, `$metadata`), the
 * SDK's own exception classes by name with their fields (`Item` of a failed condition, `CancellationReasons`),
 * retries of throttling, 5xx and network failures with backoff up to `maxAttempts`, `TimeoutError` after the
 * connection or request timeout, `AbortError` on an abort signal. test/store/direct-calls.test.ts checks this
 * call by call against the SDK on DynamoDB Local, and the signature against the SDK's signer.
 *
 * Middleware added to the client does not see these calls (like `cacheMiddleware`, this is for the gateway's
 * own clients, which nothing instruments).
 */
import {
  BatchGetItemCommand,
  BatchWriteItemCommand,
  ConditionalCheckFailedException,
  DeleteItemCommand,
  DuplicateItemException,
  type DynamoDBClient,
  DynamoDBServiceException,
  GetItemCommand,
  IdempotentParameterMismatchException,
  IndexNotFoundException,
  InternalServerError,
  InvalidEndpointException,
  ItemCollectionSizeLimitExceededException,
  LimitExceededException,
  ProvisionedThroughputExceededException,
  PutItemCommand,
  QueryCommand,
  ReplicatedWriteConflictException,
  RequestLimitExceeded,
  ResourceNotFoundException,
  ScanCommand,
  ThrottlingException,
  TransactGetItemsCommand,
  TransactionCanceledException,
  TransactionConflictException,
  TransactionInProgressException,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { createHmac, createSecretKey, hash, type KeyObject } from 'node:crypto';
import { Agent as HttpAgent, type IncomingMessage, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

export interface DirectCallOptions {
  readonly region: string;
  /** DynamoDB Local's URL; by default the region's public endpoint. */
  readonly endpoint?: string;
  readonly maxAttempts: number;
  readonly connectionTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly maxSockets: number;
}

/** The operations sent directly, by command class. */
const DIRECT = new Map<unknown, string>([
  [GetItemCommand, 'GetItem'],
  [PutItemCommand, 'PutItem'],
  [UpdateItemCommand, 'UpdateItem'],
  [DeleteItemCommand, 'DeleteItem'],
  [BatchGetItemCommand, 'BatchGetItem'],
  [BatchWriteItemCommand, 'BatchWriteItem'],
  [TransactGetItemsCommand, 'TransactGetItems'],
  [TransactWriteItemsCommand, 'TransactWriteItems'],
  [QueryCommand, 'Query'],
  [ScanCommand, 'Scan'],
]);

/** Exception names DynamoDB answers that the SDK retries (besides any 5xx and network failure). */
const THROTTLING = new Set(['ThrottlingException', 'ProvisionedThroughputExceededException', 'RequestLimitExceeded', 'LimitExceededException']);

/** Socket error codes worth another attempt. */
const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * The SDK's exception classes the item operations can answer with, by name; any other error answer (such as
 * ValidationException, which has no class of its own) is a DynamoDBServiceException named as DynamoDB names it.
 */
const EXCEPTIONS = new Map<string, new (opts: { message: string; $metadata: Metadata }) => Error>(
  [
    ConditionalCheckFailedException,
    DuplicateItemException,
    IdempotentParameterMismatchException,
    IndexNotFoundException,
    InternalServerError,
    InvalidEndpointException,
    ItemCollectionSizeLimitExceededException,
    LimitExceededException,
    ProvisionedThroughputExceededException,
    ReplicatedWriteConflictException,
    RequestLimitExceeded,
    ResourceNotFoundException,
    ThrottlingException,
    TransactionCanceledException,
    TransactionConflictException,
    TransactionInProgressException,
  ].map((E) => {
    const Exception = E as unknown as new (opts: { message: string; $metadata: Metadata }) => Error;
    // The name each sets on its instances (a bundler may rename the class itself).
    return [new Exception({ message: '', $metadata: { attempts: 0, totalRetryDelay: 0 } }).name, Exception];
  }),
);

interface Metadata {
  httpStatusCode?: number;
  requestId?: string;
  extendedRequestId?: string;
  cfId?: string;
  attempts: number;
  totalRetryDelay: number;
}

interface Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** A socket-level failure or a timeout: retried, and then thrown as it is (client.ts translates it). */
class TransportError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
    name: string,
  ) {
    super(message);
    this.name = name;
  }
}

/**
 * Makes `client.send` send the item operations directly (see the file header); every other command, and a call
 * with a callback, goes through the SDK as before. Returns the client.
 */
export function withDirectCalls(client: DynamoDBClient, options: DirectCallOptions): DynamoDBClient {
  const direct = new DirectCaller(client, options);
  const sdkSend = client.send.bind(client) as (...args: unknown[]) => Promise<unknown>;
  const send = (command: { input: unknown }, optionsOrCb?: unknown, cb?: unknown): Promise<unknown> | void => {
    const operation = DIRECT.get(command.constructor);
    if (operation === undefined || typeof optionsOrCb === 'function' || cb !== undefined) return sdkSend(command, optionsOrCb, cb);
    return direct.call(operation, command.input, (optionsOrCb as { abortSignal?: AbortSignal } | undefined)?.abortSignal);
  };
  (client as { send: unknown }).send = send;
  const destroy = client.destroy.bind(client);
  client.destroy = () => {
    direct.destroy();
    destroy();
  };
  return client;
}

class DirectCaller {
  private readonly url: URL;
  private readonly agent: HttpAgent;
  private readonly request: typeof httpRequest;
  private readonly host: string;
  private readonly userAgent: string;
  /** The signing key of the last credentials and day (derived from the secret, which it is checked against). */
  private signing: { accessKeyId: string; secret: string; day: string; key: KeyObject } | undefined;

  constructor(
    private readonly client: DynamoDBClient,
    private readonly options: DirectCallOptions,
  ) {
    const suffix = options.region.startsWith('cn-') ? 'amazonaws.com.cn' : 'amazonaws.com';
    this.url = new URL(options.endpoint ?? `https://dynamodb.${options.region}.${suffix}`);
    const https = this.url.protocol === 'https:';
    this.agent = https ? new HttpsAgent({ keepAlive: true, maxSockets: options.maxSockets }) : new HttpAgent({ keepAlive: true, maxSockets: options.maxSockets });
    this.request = https ? (httpsRequest as unknown as typeof httpRequest) : httpRequest;
    this.host = this.url.host;
    this.userAgent = `tollgate (direct DynamoDB calls) lang/js md/nodejs#${process.versions.node}`;
  }

  destroy(): void {
    this.agent.destroy();
  }

  async call(operation: string, input: unknown, abortSignal: AbortSignal | undefined): Promise<unknown> {
    const body = JSON.stringify(input, binaryToBase64);
    const metadata: Metadata = { attempts: 0, totalRetryDelay: 0 };
    for (;;) {
      metadata.attempts++;
      let retryable: boolean;
      let failure: Error;
      let throttled = false;
      try {
        if (abortSignal?.aborted) throw abortError();
        const res = await this.send(operation, body, abortSignal);
        metadata.httpStatusCode = res.status;
        metadata.requestId = res.requestId;
        if (res.status === 200) return { $metadata: { ...metadata }, ...(parseJson(res.text) as object) };
        failure = this.exception(res.status, res.text, { ...metadata });
        throttled = THROTTLING.has(failure.name);
        retryable = res.status >= 500 || throttled;
      } catch (err) {
        if (!(err instanceof TransportError) || err.name === 'AbortError') throw err;
        failure = err;
        retryable = err.name === 'TimeoutError' || (err.code !== undefined && TRANSIENT_CODES.has(err.code));
      }
      if (!retryable || metadata.attempts >= this.options.maxAttempts) throw failure;
      // The SDK's backoff: full jitter over an exponentially growing cap (longer after throttling).
      const delay = Math.floor(Math.random() * Math.min(20_000, (throttled ? 500 : 100) * 2 ** (metadata.attempts - 1)));
      metadata.totalRetryDelay += delay;
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  private async send(operation: string, body: string, abortSignal: AbortSignal | undefined): Promise<{ status: number; text: string; requestId?: string }> {
    const credentials = (await (this.client.config.credentials as () => Promise<Credentials>)()) as Credentials;
    const amzDate = new Date().toISOString().replace(/[-:]|\.\d{3}/g, '');
    const target = `DynamoDB_20120810.${operation}`;
    const headers: Record<string, string | number> = {
      'content-type': 'application/x-amz-json-1.0',
      'x-amz-target': target,
      'x-amz-date': amzDate,
      'content-length': Buffer.byteLength(body),
      'user-agent': this.userAgent,
    };
    if (credentials.sessionToken) headers['x-amz-security-token'] = credentials.sessionToken;
    headers.authorization = this.authorization(credentials, amzDate, target, body);
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(connectTimer);
        clearTimeout(requestTimer);
        abortSignal?.removeEventListener('abort', onAbort);
        req.destroy();
        reject(err);
      };
      const onAbort = () => fail(abortError());
      let connectTimer: NodeJS.Timeout | undefined;
      let requestTimer: NodeJS.Timeout | undefined;
      const req = this.request(
        { agent: this.agent, protocol: this.url.protocol, hostname: this.url.hostname, port: this.url.port, method: 'POST', path: this.url.pathname, headers },
        (res: IncomingMessage) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err: NodeJS.ErrnoException) => fail(new TransportError(err.message, err.code, 'Error')));
          res.on('end', () => {
            if (settled) return;
            settled = true;
            clearTimeout(requestTimer);
            abortSignal?.removeEventListener('abort', onAbort);
            const requestId = res.headers['x-amzn-requestid'];
            resolve({ status: res.statusCode ?? 0, text: (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)).toString('utf8'), ...(typeof requestId === 'string' ? { requestId } : {}) });
          });
        },
      );
      // Getting a connected socket (a free one of the pool, or a new connection) has its own timeout; then the
      // whole call has the request timeout (a DynamoDB call answers in milliseconds): a timer, not a socket idle
      // timeout re-armed on every read.
      const connected = () => {
        clearTimeout(connectTimer);
        if (settled) return;
        requestTimer = setTimeout(
          () => fail(new TransportError(`Connection timed out after ${this.options.requestTimeoutMs} ms`, 'ETIMEDOUT', 'TimeoutError')),
          this.options.requestTimeoutMs,
        );
      };
      connectTimer = setTimeout(
        () => fail(new TransportError(`Socket timed out without establishing a connection within ${this.options.connectionTimeoutMs} ms`, 'ETIMEDOUT', 'TimeoutError')),
        this.options.connectionTimeoutMs,
      );
      req.on('socket', (socket) => {
        if (socket.connecting) socket.once('connect', connected);
        else connected();
      });
      req.on('error', (err: NodeJS.ErrnoException) => fail(new TransportError(err.message, err.code, 'Error')));
      abortSignal?.addEventListener('abort', onAbort, { once: true });
      req.end(body);
    });
  }

  /** SigV4 of a DynamoDB POST: the headers signed are content-type, host, x-amz-date, (token,) x-amz-target. */
  private authorization(credentials: Credentials, amzDate: string, target: string, body: string): string {
    const day = amzDate.slice(0, 8);
    const scope = `${day}/${this.options.region}/dynamodb/aws4_request`;
    const token = credentials.sessionToken;
    const signedHeaders = token ? 'content-type;host;x-amz-date;x-amz-security-token;x-amz-target' : 'content-type;host;x-amz-date;x-amz-target';
    const canonical =
      `POST\n${this.url.pathname}\n\ncontent-type:application/x-amz-json-1.0\nhost:${this.host}\nx-amz-date:${amzDate}\n` +
      `${token ? `x-amz-security-token:${token}\n` : ''}x-amz-target:${target}\n\n${signedHeaders}\n${sha256Hex(body)}`;
    const stringToSign = `AWS4-HMAC-SHA256\n${amzDate}\n${scope}\n${sha256Hex(canonical)}`;
    const signature = createHmac('sha256', this.signingKey(credentials, day)).update(stringToSign).digest('hex');
    return `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
  }

  private signingKey(credentials: Credentials, day: string): KeyObject {
    const cached = this.signing;
    if (cached && cached.day === day && cached.accessKeyId === credentials.accessKeyId && cached.secret === credentials.secretAccessKey) return cached.key;
    let key = createHmac('sha256', `AWS4${credentials.secretAccessKey}`).update(day).digest();
    for (const part of [this.options.region, 'dynamodb', 'aws4_request']) key = createHmac('sha256', key).update(part).digest();
    const keyObject = createSecretKey(key);
    this.signing = { accessKeyId: credentials.accessKeyId, secret: credentials.secretAccessKey, day, key: keyObject };
    return keyObject;
  }

  /** The SDK's exception for an error answer: its class by name, its message and the answer's other fields. */
  private exception(status: number, text: string, $metadata: Metadata): Error {
    let parsed: Record<string, unknown> = {};
    try {
      parsed = parseJson(text) as Record<string, unknown>;
    } catch {
      // Not JSON (a proxy's page): named by its status below.
    }
    const type = typeof parsed.__type === 'string' ? parsed.__type : typeof parsed.code === 'string' ? parsed.code : '';
    const name = type.slice(type.lastIndexOf('#') + 1) || (status >= 500 ? 'InternalServerError' : `UnknownError${status}`);
    const message = typeof parsed.message === 'string' ? parsed.message : typeof parsed.Message === 'string' ? parsed.Message : name;
    const Exception = EXCEPTIONS.get(name);
    const fields = { ...parsed };
    delete fields.__type;
    delete fields.message;
    delete fields.Message;
    if (Exception) return Object.assign(new Exception({ message, $metadata }), fields);
    return Object.assign(new DynamoDBServiceException({ name, $fault: status >= 500 ? 'server' : 'client', message, $metadata }), fields);
  }
}

/** One-shot SHA-256 (crypto.hash: no Hash object per call). */
function sha256Hex(text: string): string {
  return hash('sha256', text, 'hex');
}

function abortError(): Error {
  return new TransportError('The operation was aborted', undefined, 'AbortError');
}

/** JSON.stringify's replacer: binary values (B, BS) as base64, as the SDK sends them. */
function binaryToBase64(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const raw = this[key];
  return raw instanceof Uint8Array ? Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64') : value;
}

/** JSON.parse of an answer; binary values (B, BS) back to Uint8Array, as the SDK gives them. */
function parseJson(text: string): unknown {
  if (!text.includes('"B')) return JSON.parse(text);
  return JSON.parse(text, (key, value: unknown) => {
    if (key === 'B' && typeof value === 'string') return fromBase64(value);
    if (key === 'BS' && Array.isArray(value) && value.every((v) => typeof v === 'string')) return value.map((v: string) => fromBase64(v));
    return value;
  });
}

function fromBase64(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'base64'));
}
