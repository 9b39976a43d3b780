/**
 * Bring-your-own provider keys: store (validate → encrypt → write), show (never the key), remove, and the
 * request-path lookup that hands the gateway a caller's decrypted key for one call.
 */
import { audited, type AuditSink, type AuditState, type AuditWho, secretFingerprint } from '../audit';
import type { Clock } from '../clock';
import { InvalidRequestError } from '../errors';
import type { Logger } from '../log';
import type { ByokCipher } from './crypto';
import { type ByokProvider, isByokProvider, type ProviderKeyValidator } from './validate';

/** A stored BYOK key: the encrypted blob and what may be shown about it. Never the key itself. */
export interface ByokRecord {
  readonly userId: string;
  readonly provider: ByokProvider;
  /** {@link ByokCipher} output, bound to userId + provider. */
  readonly blob: string;
  /** What people see, e.g. `sk-proj…`; not enough to use the key. */
  readonly prefix: string;
  /** The key's {@link secretFingerprint} (records stored before it was kept have none). */
  readonly fingerprint?: string;
  readonly status: 'active';
  /** ISO-8601. */
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly lastValidatedAt: string;
}

/** The storage contract of BYOK keys (DynamoDB adapter: store/dynamodb/byok-store.ts). */
export interface ByokStore {
  get(userId: string, provider: string): Promise<ByokRecord | undefined>;
  /** Writes (or replaces) the user's key for the provider. */
  put(record: ByokRecord): Promise<void>;
  /** Removes it; returns whether there was one. */
  delete(userId: string, provider: string): Promise<boolean>;
  list(userId: string): Promise<ByokRecord[]>;
}

/** What GET shows: provider, prefix, status, last validation. */
export interface ByokView {
  readonly provider: ByokProvider;
  readonly prefix: string;
  readonly status: ByokRecord['status'];
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly lastValidatedAt: string;
}

export interface ByokServiceOptions {
  readonly store: ByokStore;
  readonly cipher: ByokCipher;
  readonly validator: ProviderKeyValidator;
  readonly clock: Clock;
  readonly log: Logger;
  /** Where stores and removals are audited; without it they are refused (AuditUnavailableError). */
  readonly audit?: AuditSink;
  /**
   * How long a looked-up record (or its absence) is reused on the request path. Only the encrypted record is
   * cached; the decrypted key is never kept.
   * @default 0
   */
  readonly cacheMs?: number;
  /** Bound on cached lookups. @default 10000 */
  readonly maxEntries?: number;
}

const MIN_KEY_LENGTH = 8;
const MAX_KEY_LENGTH = 512;

/** A display prefix that reveals at most a quarter of the key and never more than 7 characters. */
export function byokPrefix(apiKey: string): string {
  return `${apiKey.slice(0, Math.min(7, Math.floor(apiKey.length / 4)))}…`;
}

export function byokView(record: ByokRecord): ByokView {
  return {
    provider: record.provider,
    prefix: record.prefix,
    status: record.status,
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
    lastValidatedAt: record.lastValidatedAt,
  };
}

/** Throws 400 unless `provider` is one callers may bring a key for. */
export function requireByokProvider(provider: string): ByokProvider {
  if (!isByokProvider(provider)) {
    throw new InvalidRequestError(`Provider "${provider.slice(0, 32)}" does not take your own key; use openai or anthropic.`, {
      code: 'unsupported_byok_provider',
      param: 'provider',
    });
  }
  return provider;
}

export class ByokService {
  private readonly cache = new Map<string, { record: ByokRecord | undefined; at: number }>();
  private readonly cacheMs: number;
  private readonly maxEntries: number;

  constructor(private readonly options: ByokServiceOptions) {
    this.cacheMs = options.cacheMs ?? 0;
    this.maxEntries = options.maxEntries ?? 10_000;
  }

  /**
   * Validates the key with the provider, then stores it encrypted. 400 when the key is malformed or the
   * provider refuses it; 502 when the provider cannot be asked (nothing is stored either way).
   */
  async save(userId: string, provider: ByokProvider, apiKey: string, who: AuditWho): Promise<ByokView> {
    // Printable ASCII only: the key travels in an HTTP header, where anything else fails only at call time.
    if (apiKey.length < MIN_KEY_LENGTH || apiKey.length > MAX_KEY_LENGTH || !/^[\x21-\x7e]+$/.test(apiKey)) {
      throw new InvalidRequestError(`apiKey must be ${MIN_KEY_LENGTH} to ${MAX_KEY_LENGTH} printable ASCII characters without spaces.`, {
        code: 'invalid_byok_key',
        param: 'apiKey',
      });
    }
    const verdict = await this.options.validator.validate(provider, apiKey);
    if (verdict !== 'valid') {
      throw new InvalidRequestError(`${provider} refused this key; nothing was stored.`, { code: 'invalid_byok_key', param: 'apiKey' });
    }
    const now = new Date(this.options.clock.now()).toISOString();
    const existing = await this.options.store.get(userId, provider);
    const record: ByokRecord = {
      userId,
      provider,
      blob: await this.options.cipher.encrypt(apiKey, { userId, provider }),
      prefix: byokPrefix(apiKey),
      fingerprint: secretFingerprint(apiKey),
      status: 'active',
      createdAt: existing?.createdAt ?? now,
      updatedAt: now,
      lastValidatedAt: now,
    };
    const change = { ...who, action: existing ? 'byok.replace' : 'byok.store', target: byokTarget(userId, provider), after: byokAuditState(record) };
    await audited(this.options.audit, existing ? { ...change, before: byokAuditState(existing) } : change, this.options.clock, () =>
      this.options.store.put(record),
    );
    this.cache.delete(cacheKey(userId, provider));
    this.options.log.log('info', 'byok key stored', { userId, provider, prefix: record.prefix });
    return byokView(record);
  }

  async show(userId: string, provider: ByokProvider): Promise<ByokView | undefined> {
    const record = await this.options.store.get(userId, provider);
    return record ? byokView(record) : undefined;
  }

  async list(userId: string): Promise<ByokView[]> {
    return (await this.options.store.list(userId)).map(byokView);
  }

  async remove(userId: string, provider: ByokProvider, who: AuditWho): Promise<boolean> {
    const existing = await this.options.store.get(userId, provider);
    if (!existing) return false;
    const removed = await audited(
      this.options.audit,
      { ...who, action: 'byok.remove', target: byokTarget(userId, provider), before: byokAuditState(existing) },
      this.options.clock,
      () => this.options.store.delete(userId, provider),
    );
    this.cache.delete(cacheKey(userId, provider));
    if (removed) this.options.log.log('info', 'byok key removed', { userId, provider });
    return removed;
  }

  /**
   * The user's own key for `provider`, decrypted for one call, or undefined when they have none. Throws
   * {@link ByokDecryptError} (500) when the stored blob cannot be opened: the call then fails rather than
   * silently spending the platform's key.
   */
  async keyFor(userId: string, provider: string): Promise<string | undefined> {
    if (!isByokProvider(provider)) return undefined;
    const record = await this.lookup(userId, provider);
    if (!record) return undefined;
    return this.options.cipher.decrypt(record.blob, { userId, provider });
  }

  private async lookup(userId: string, provider: ByokProvider): Promise<ByokRecord | undefined> {
    const key = cacheKey(userId, provider);
    const now = this.options.clock.now();
    const hit = this.cache.get(key);
    if (hit && now - hit.at < this.cacheMs) return hit.record;
    const record = await this.options.store.get(userId, provider);
    if (this.cacheMs > 0) {
      if (this.cache.size >= this.maxEntries) {
        const oldest = this.cache.keys().next().value;
        if (oldest !== undefined) this.cache.delete(oldest);
      }
      this.cache.set(key, { record, at: now });
    }
    return record;
  }
}

/** What a BYOK change names as its target: the user's BYOK scope and the provider. */
export function byokTarget(userId: string, provider: string): string {
  return `user:${userId}#byok/${provider}`;
}

/** A stored BYOK key as the audit log shows it: provider, prefix, fingerprint, status; never the key or its blob. */
function byokAuditState(r: ByokRecord): AuditState {
  return {
    provider: r.provider,
    prefix: r.prefix,
    fingerprint: r.fingerprint ?? 'unknown',
    status: r.status,
    lastValidatedAt: r.lastValidatedAt,
  };
}

function cacheKey(userId: string, provider: string): string {
  return `${userId}\u0000${provider}`;
}
