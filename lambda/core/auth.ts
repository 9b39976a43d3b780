/**
 * Who are you, and what may you do: API keys (`sk-tg-…`, external developers) and service JWTs (internal
 * services such as the agent service), with a short in-memory cache of key records. The cache lives seconds,
 * not minutes, so a suspension or revocation bites almost at once on every instance.
 *
 * A service is registered as a record in the keys table with the key id `svc:<service>` (no hash: it has no
 * API key). That record carries the service's status, its allowed scopes and its rate limits, so budgets
 * (`key:svc:<service>`), GCRA buckets, usage records, suspension, revocation and the kill switch all work for
 * services exactly as for keys. A token's scopes are cut down to the record's; the spend lands on the token's
 * `onBehalfOf` user (and `org`), or on the user `svc:<service>` when it acts for nobody.
 */
import { hash, timingSafeEqual } from 'node:crypto';
import { apiKeyMatches, keyIdOf } from './api-keys';
import type { Clock } from './clock';
import { AuthenticationError, InvalidRequestError, PermissionDeniedError } from './errors';
import { looksLikeJwt, SERVICE_PATTERN, type TokenVerifier } from './jwt';
import type { KeyStore } from './stores';
import { KEY_SCOPES, type KeyRecord, type KeyScope } from './types';

/** The service behind a JWT principal. */
export interface ServiceIdentity {
  /** The service name (`sub`), e.g. `agent`. */
  readonly name: string;
  /** The token id (`jti`), for logs and audit. */
  readonly tokenId: string;
  /** The user the service acts for, when the token names one. */
  readonly onBehalfOf?: string;
}

/** The authenticated caller of one request. */
export interface Principal {
  /** The API key id, or `svc:<service>` for a service token. */
  readonly keyId: string;
  /** Whose budgets the spend lands on: the key's owner, or a service token's `onBehalfOf` user. */
  readonly userId: string;
  readonly orgId?: string;
  readonly scopes: readonly KeyScope[];
  /** The key record (for a service: its `svc:<service>` record, holding status and rate limits). */
  readonly key: KeyRecord;
  /** Present when the caller authenticated with a service JWT. */
  readonly service?: ServiceIdentity;
}

/** The key id under which a service is registered: `svc:<service>`. */
export function serviceKeyId(service: string): string {
  return `svc:${service}`;
}

/** What to register for a service. */
export interface RegisterServiceInput {
  readonly service: string;
  /** The most a token of this service may be granted. */
  readonly scopes: readonly string[];
  readonly orgId?: string;
  readonly rpm?: number;
  readonly tpm?: number;
}

/**
 * Registers a service (its `svc:<service>` record in the keys table) so its tokens are accepted; returns the
 * existing record if it is already registered. Throws {@link InvalidRequestError} naming the bad field.
 */
export async function registerService(
  keys: KeyStore,
  input: RegisterServiceInput,
  options: { readonly clock: Clock },
): Promise<KeyRecord> {
  if (!SERVICE_PATTERN.test(input.service)) {
    throw new InvalidRequestError(`service "${input.service}" must be lower-case letters, digits, ".", "_" or "-"`, { param: 'service' });
  }
  for (const s of input.scopes) {
    if (!(KEY_SCOPES as readonly string[]).includes(s)) {
      throw new InvalidRequestError(`unknown scope "${s}"; known scopes: ${KEY_SCOPES.join(', ')}`, { param: 'scopes' });
    }
  }
  for (const [name, v] of [['rpm', input.rpm], ['tpm', input.tpm]] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) {
      throw new InvalidRequestError(`${name} must be a positive whole number`, { param: name });
    }
  }
  const keyId = serviceKeyId(input.service);
  const existing = await keys.get(keyId);
  if (existing) return existing;
  const record: KeyRecord = {
    keyId,
    prefix: keyId,
    hash: '',
    userId: keyId,
    ...(input.orgId ? { orgId: input.orgId } : {}),
    name: `service ${input.service}`,
    scopes: [...new Set(input.scopes)] as KeyScope[],
    ...(input.rpm ? { rpm: input.rpm } : {}),
    ...(input.tpm ? { tpm: input.tpm } : {}),
    status: 'active',
    createdAt: new Date(options.clock.now()).toISOString(),
  };
  await keys.create(record);
  return record;
}

export interface AuthenticatorOptions {
  readonly keys: KeyStore;
  /** Server-side pepper of the key HMAC. */
  readonly pepper: string;
  readonly cacheMs: number;
  readonly clock: Clock;
  /** Bound on cached records (unknown key ids are cached too, so junk keys cannot hammer the table). */
  readonly maxEntries?: number;
  /** Verifies service JWTs; without it a JWT is refused with 401 `service_tokens_disabled`. */
  readonly tokens?: TokenVerifier;
}

/** Reads the presented key: `Authorization: Bearer …` (OpenAI SDK) or `x-api-key` (Anthropic SDK). */
export function presentedApiKey(headers: Readonly<Record<string, string>>): string | undefined {
  const auth = headers.authorization;
  if (auth !== undefined) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    return m ? m[1] : undefined;
  }
  const key = headers['x-api-key'];
  return key === undefined ? undefined : key.trim();
}

/**
 * A cached key record. `verified` is the SHA-256 of the raw key that last matched the record's HMAC: a request
 * presenting the same key again is checked against it with one cheap digest instead of the keyed HMAC (an
 * HMAC object per request was a measurable part of a request's CPU). Only a digest is kept, never the key, and
 * a record read again starts without one.
 */
interface CachedKey {
  readonly record: KeyRecord | undefined;
  readonly at: number;
  verified?: Buffer;
}

export class Authenticator {
  private readonly cache = new Map<string, CachedKey>();
  private readonly maxEntries: number;

  constructor(private readonly options: AuthenticatorOptions) {
    this.maxEntries = options.maxEntries ?? 10_000;
  }

  /**
   * Authenticates the request's key or service token. 401 for a missing, malformed, unknown, wrong, expired or
   * revoked credential (and every token that fails verification); 403 for a suspended key or service. Messages
   * never echo the presented credential.
   */
  async authenticate(headers: Readonly<Record<string, string>>): Promise<Principal> {
    const raw = presentedApiKey(headers);
    if (raw === undefined || raw === '') {
      throw new AuthenticationError(
        'No API key provided. Send it as "Authorization: Bearer sk-tg-…" or in the "x-api-key" header.',
        { code: 'missing_api_key' },
      );
    }
    if (!raw.startsWith('sk-tg-') && raw.includes('.')) return this.authenticateToken(raw);
    const keyId = keyIdOf(raw);
    const entry = keyId === undefined ? undefined : await this.lookup(keyId);
    const record = entry?.record;
    if (!entry || !record || !this.keyMatches(raw, entry, record)) {
      throw new AuthenticationError('Incorrect API key provided.', { code: 'invalid_api_key' });
    }
    const subject = { keyId: record.keyId, userId: record.userId, ...(record.orgId ? { orgId: record.orgId } : {}) };
    if (record.status === 'revoked') {
      throw new AuthenticationError(`API key ${record.prefix} has been revoked.`, { code: 'invalid_api_key', subject });
    }
    if (record.expiresAt !== undefined && Date.parse(record.expiresAt) <= this.options.clock.now()) {
      throw new AuthenticationError(`API key ${record.prefix} expired at ${record.expiresAt}.`, { code: 'expired_api_key', subject });
    }
    if (record.status === 'suspended') {
      const by = record.statusChangedBy === 'kill-switch' ? ' by the spend kill switch' : '';
      throw new PermissionDeniedError(`API key ${record.prefix} is suspended${by}.`, { code: 'key_suspended', subject });
    }
    return { keyId: record.keyId, userId: record.userId, orgId: record.orgId, scopes: record.scopes, key: record };
  }

  /** Throws 403 unless the principal holds `scope`. */
  authorize(principal: Principal, scope: KeyScope): void {
    if (!principal.scopes.includes(scope)) {
      const who = principal.service ? `Service token of ${principal.key.prefix}` : `API key ${principal.key.prefix}`;
      throw new PermissionDeniedError(`${who} lacks the scope "${scope}" this route requires.`, {
        code: 'missing_scope',
      });
    }
  }

  /** A service JWT: verified first (signature, claims), then its service record decides status and limits. */
  private async authenticateToken(token: string): Promise<Principal> {
    if (!this.options.tokens) {
      const code = looksLikeJwt(token) ? 'service_tokens_disabled' : 'invalid_api_key';
      throw new AuthenticationError(
        code === 'invalid_api_key' ? 'Incorrect API key provided.' : 'Service tokens are not enabled on this gateway.',
        { code },
      );
    }
    const claims = await this.options.tokens.verify(token);
    const keyId = serviceKeyId(claims.service);
    const record = (await this.lookup(keyId)).record;
    if (!record) {
      throw new AuthenticationError(`The service "${claims.service}" is not registered with this gateway.`, { code: 'unknown_service' });
    }
    const subject = { keyId, userId: claims.onBehalfOf ?? keyId, ...(record.orgId ? { orgId: record.orgId } : {}) };
    if (record.status === 'revoked') {
      throw new AuthenticationError(`The service "${claims.service}" has been revoked.`, { code: 'service_revoked', subject });
    }
    if (record.status === 'suspended') {
      const by = record.statusChangedBy === 'kill-switch' ? ' by the spend kill switch' : '';
      throw new PermissionDeniedError(`The service "${claims.service}" is suspended${by}.`, { code: 'service_suspended', subject });
    }
    const scopes = claims.scopes.filter((s) => record.scopes.includes(s));
    const orgId = claims.orgId ?? (claims.onBehalfOf ? undefined : record.orgId);
    return {
      keyId,
      userId: claims.onBehalfOf ?? keyId,
      ...(orgId ? { orgId } : {}),
      scopes,
      key: record,
      service: { name: claims.service, tokenId: claims.tokenId, ...(claims.onBehalfOf ? { onBehalfOf: claims.onBehalfOf } : {}) },
    };
  }

  /** Forgets a cached record (after an admin change made in this process). */
  invalidate(keyId: string): void {
    this.cache.delete(keyId);
  }

  /** Whether the raw key is the record's: the cached digest of a key that matched, else the HMAC. */
  private keyMatches(raw: string, entry: CachedKey, record: KeyRecord): boolean {
    const digest = hash('sha256', raw, 'buffer');
    if (entry.verified) return timingSafeEqual(digest, entry.verified);
    if (!apiKeyMatches(raw, record.hash, this.options.pepper)) return false;
    entry.verified = digest;
    return true;
  }

  private async lookup(keyId: string): Promise<CachedKey> {
    const now = this.options.clock.now();
    const hit = this.cache.get(keyId);
    if (hit && now - hit.at < this.options.cacheMs) return hit;
    const record = await this.options.keys.get(keyId);
    if (this.cache.size >= this.maxEntries) {
      // Drop the oldest entry (Map keeps insertion order).
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.delete(keyId);
    const entry: CachedKey = { record, at: now };
    this.cache.set(keyId, entry);
    return entry;
  }
}
