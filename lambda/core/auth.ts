/**
 * Who are you, and what may you do: API-key authentication with a short in-memory cache of key records.
 * The cache lives seconds, not minutes, so a suspension or revocation bites almost at once on every instance.
 */
import { apiKeyMatches, keyIdOf } from './api-keys';
import type { Clock } from './clock';
import { AuthenticationError, PermissionDeniedError } from './errors';
import type { KeyStore } from './stores';
import type { KeyRecord, KeyScope } from './types';

/** The authenticated caller of one request. */
export interface Principal {
  readonly keyId: string;
  readonly userId: string;
  readonly orgId?: string;
  readonly scopes: readonly KeyScope[];
  readonly key: KeyRecord;
}

export interface AuthenticatorOptions {
  readonly keys: KeyStore;
  /** Server-side pepper of the key HMAC. */
  readonly pepper: string;
  readonly cacheMs: number;
  readonly clock: Clock;
  /** Bound on cached records (unknown key ids are cached too, so junk keys cannot hammer the table). */
  readonly maxEntries?: number;
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

export class Authenticator {
  private readonly cache = new Map<string, { record: KeyRecord | undefined; at: number }>();
  private readonly maxEntries: number;

  constructor(private readonly options: AuthenticatorOptions) {
    this.maxEntries = options.maxEntries ?? 10_000;
  }

  /**
   * Authenticates the request's key. 401 for a missing, malformed, unknown, wrong, expired or revoked key;
   * 403 for a suspended one. Messages never echo the presented key.
   */
  async authenticate(headers: Readonly<Record<string, string>>): Promise<Principal> {
    const raw = presentedApiKey(headers);
    if (raw === undefined || raw === '') {
      throw new AuthenticationError(
        'No API key provided. Send it as "Authorization: Bearer sk-tg-…" or in the "x-api-key" header.',
        { code: 'missing_api_key' },
      );
    }
    const keyId = keyIdOf(raw);
    const record = keyId === undefined ? undefined : await this.lookup(keyId);
    if (!record || !apiKeyMatches(raw, record.hash, this.options.pepper)) {
      throw new AuthenticationError('Incorrect API key provided.', { code: 'invalid_api_key' });
    }
    if (record.status === 'revoked') {
      throw new AuthenticationError(`API key ${record.prefix} has been revoked.`, { code: 'invalid_api_key' });
    }
    if (record.expiresAt !== undefined && Date.parse(record.expiresAt) <= this.options.clock.now()) {
      throw new AuthenticationError(`API key ${record.prefix} expired at ${record.expiresAt}.`, { code: 'expired_api_key' });
    }
    if (record.status === 'suspended') {
      const by = record.statusChangedBy === 'kill-switch' ? ' by the spend kill switch' : '';
      throw new PermissionDeniedError(`API key ${record.prefix} is suspended${by}.`, { code: 'key_suspended' });
    }
    return { keyId: record.keyId, userId: record.userId, orgId: record.orgId, scopes: record.scopes, key: record };
  }

  /** Throws 403 unless the principal holds `scope`. */
  authorize(principal: Principal, scope: KeyScope): void {
    if (!principal.scopes.includes(scope)) {
      throw new PermissionDeniedError(`API key ${principal.key.prefix} lacks the scope "${scope}" this route requires.`, {
        code: 'missing_scope',
      });
    }
  }

  /** Forgets a cached record (after an admin change made in this process). */
  invalidate(keyId: string): void {
    this.cache.delete(keyId);
  }

  private async lookup(keyId: string): Promise<KeyRecord | undefined> {
    const now = this.options.clock.now();
    const hit = this.cache.get(keyId);
    if (hit && now - hit.at < this.options.cacheMs) return hit.record;
    const record = await this.options.keys.get(keyId);
    if (this.cache.size >= this.maxEntries) {
      // Drop the oldest entry (Map keeps insertion order).
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.delete(keyId);
    this.cache.set(keyId, { record, at: now });
    return record;
  }
}
