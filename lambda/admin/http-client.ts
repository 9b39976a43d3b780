/**
 * The admin CLI's HTTP mode: calls the gateway's `/admin/*` API instead of the tables. Deployed gateways are
 * called with SigV4-signed requests (service `execute-api`, credentials from the default AWS provider chain),
 * which API Gateway's AWS_IAM authorizer checks; the local gateway is called with its admin token.
 */
import { Sha256 } from '@aws-crypto/sha256-js';
import { fromNodeProviderChain } from '@aws-sdk/credential-providers';
import { SignatureV4 } from '@smithy/signature-v4';

/** How the CLI proves who it is to `/admin/*`. */
export type AdminAuth =
  | { readonly kind: 'token'; readonly token: string }
  | { readonly kind: 'sigv4'; readonly region: string; readonly credentials?: ConstructorParameters<typeof SignatureV4>[0]['credentials'] };

/** A failed admin call: the status and the gateway's error message (which never holds a secret). */
export class AdminHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'AdminHttpError';
  }
}

export interface AdminHttpClientOptions {
  /** The gateway's base URL (the stage URL in AWS, e.g. `https://abc.execute-api.eu-west-1.amazonaws.com/prod`). */
  readonly url: string;
  readonly auth: AdminAuth;
  /** @default globalThis.fetch */
  readonly fetch?: typeof fetch;
}

export class AdminHttpClient {
  private readonly base: URL;

  constructor(private readonly options: AdminHttpClientOptions) {
    this.base = new URL(options.url.endsWith('/') ? options.url : `${options.url}/`);
  }

  /** Sends one admin request (`path` like `/admin/keys`) and returns the parsed JSON answer. */
  async request(method: string, path: string, body?: unknown, query: Record<string, string | undefined> = {}): Promise<Record<string, unknown>> {
    const url = new URL(path.replace(/^\//, ''), this.base);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { host: url.host, accept: 'application/json', ...(payload ? { 'content-type': 'application/json' } : {}) };
    const auth = this.options.auth;
    if (auth.kind === 'token') {
      headers.authorization = `Bearer ${auth.token}`;
    } else {
      const signer = new SignatureV4({
        service: 'execute-api',
        region: auth.region,
        credentials: auth.credentials ?? fromNodeProviderChain(),
        sha256: Sha256,
      });
      const signed = await signer.sign({
        method,
        protocol: url.protocol,
        hostname: url.hostname,
        ...(url.port ? { port: Number(url.port) } : {}),
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        headers,
        ...(payload ? { body: payload } : {}),
      });
      Object.assign(headers, signed.headers);
    }
    const { host: _host, ...sendHeaders } = headers;
    const res = await (this.options.fetch ?? fetch)(url, { method, headers: sendHeaders, ...(payload ? { body: payload } : {}) });
    const text = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      json = {};
    }
    if (!res.ok) {
      const message = (json.error as { message?: string } | undefined)?.message ?? (typeof json.message === 'string' ? json.message : `HTTP ${res.status}`);
      throw new AdminHttpError(res.status, message);
    }
    return json;
  }
}

/** `1h`, `30m`, `900s` or `900` → seconds. */
export function parseTtl(text: string): number {
  const m = /^(\d+)\s*([smh]?)$/.exec(text.trim());
  if (!m) throw new RangeError(`--ttl must look like 900, 900s, 15m or 1h, got "${text}"`);
  const n = Number(m[1]);
  return m[2] === 'h' ? n * 3600 : m[2] === 'm' ? n * 60 : n;
}
