import type { MicroUsd } from './money';
import type { Window } from './windows';

/**
 * A budget scope as written everywhere (CLI, tables, messages): `key:ID`, `user:ID`, `org:ID` or `platform`.
 */
export type ScopeId = `key:${string}` | `user:${string}` | `org:${string}` | 'platform';
export type ScopeKind = 'key' | 'user' | 'org' | 'platform';

export function scopeKind(scope: ScopeId): ScopeKind {
  return scope === 'platform' ? 'platform' : (scope.slice(0, scope.indexOf(':')) as ScopeKind);
}

/** Parses and validates a scope string; throws a RangeError naming the value. */
export function parseScope(text: string): ScopeId {
  if (text === 'platform') return 'platform';
  // Ids may carry a kind prefix or suffix the gateway itself adds: `key:svc:agent` (a service's token
  // principal), `user:alice#byok` (a user's bring-your-own-key spend).
  const m = /^(key|user|org):([A-Za-z0-9._@+\-]{1,128}(?::[A-Za-z0-9._@+\-]{1,64})?(?:#byok)?)$/.exec(text);
  if (!m) throw new RangeError(`"${text}" is not a scope: use key:ID, user:ID, org:ID or platform`);
  return text as ScopeId;
}

/** Permissions a key can carry; each route requires one. */
export const KEY_SCOPES = ['ai:complete', 'ai:embed', 'ai:usage', 'ai:agent', 'ai:byok'] as const;
export type KeyScope = (typeof KEY_SCOPES)[number];

export type KeyStatus = 'active' | 'suspended' | 'revoked';

/** Who put a key into its current status; the kill switch restores only keys it suspended itself. */
export type StatusActor = 'operator' | 'kill-switch';

/** An API key as stored: never the raw key, only its HMAC. */
export interface KeyRecord {
  readonly keyId: string;
  /** What people see of the key, e.g. `sk-tg-AbCdEf…`; not enough to use it. */
  readonly prefix: string;
  /** Hex HMAC-SHA256 of the full raw key under the server-side pepper. */
  readonly hash: string;
  readonly userId: string;
  readonly orgId?: string;
  readonly name: string;
  readonly scopes: readonly KeyScope[];
  /** Requests per minute; absent means the gateway's default (60), 0 means explicitly unlimited (`none`). */
  readonly rpm?: number;
  /** Tokens per minute (input estimate + max output); absent means the default (5,000,000), 0 means explicitly unlimited. */
  readonly tpm?: number;
  /** Answers to this key's requests are served from and stored in the response cache (core/cache). @default false */
  readonly responseCache?: boolean;
  readonly status: KeyStatus;
  readonly statusChangedBy?: StatusActor;
  readonly statusReason?: string;
  /** ISO-8601 timestamps. */
  readonly createdAt: string;
  readonly expiresAt?: string;
  readonly lastUsedAt?: string;
}

/** Spend limits of one scope, by window, in micro-USD. A window without a limit is not enforced. */
export type BudgetLimits = Partial<Record<Window, MicroUsd>>;

/** The explicit "no limit" an operator stores with `none`: distinct from "not set", which gets the default. */
export const UNLIMITED = 'none';

/** A scope's limits as stored: a window absent is "not set" (the default applies), `none` is unlimited. */
export type StoredLimits = Partial<Record<Window, MicroUsd | typeof UNLIMITED>>;

/** Token usage in the common units every provider adapter reports. */
export interface TokenUsage {
  /** All input tokens, cached ones included. */
  readonly inputTokens: number;
  readonly outputTokens: number;
  /** Input tokens served from the provider's prompt cache (billed at the cache-read price). */
  readonly cachedInputTokens: number;
  /** Input tokens written to the provider's prompt cache (Anthropic; billed at the cache-write price). */
  readonly cacheWriteTokens: number;
}

export const ZERO_USAGE: TokenUsage = { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 };

/** The operation a request performs; decides the route's scope and how it is priced. */
export type RequestType = 'chat' | 'messages' | 'embeddings';

/** How a request ended, as recorded in the usage ledger. */
export type UsageOutcome =
  | 'ok'
  | 'upstream_error'
  | 'client_disconnected'
  | 'timeout'
  | 'stream_incomplete'
  | 'abandoned'
  /** The gateway itself refused the request after reserving (nothing reached the provider); released at $0. */
  | 'rejected';

/** One row of the usage ledger: one per request that reached the reservation step. */
export interface UsageRecord {
  readonly requestId: string;
  /** ISO-8601 time the request arrived. */
  readonly timestamp: string;
  readonly userId: string;
  readonly keyId: string;
  readonly orgId?: string;
  readonly provider: string;
  readonly model: string;
  readonly requestType: RequestType;
  readonly endpoint: string;
  readonly stream: boolean;
  readonly usage: TokenUsage;
  readonly costMicros: MicroUsd;
  /** True when the cost came from the reservation because the provider reported no usage. */
  readonly costEstimated: boolean;
  /** What the request cost above its reservation (micro-USD); absent when it stayed within it. */
  readonly overshootMicros?: number;
  readonly outcome: UsageOutcome;
  readonly httpStatus: number;
  readonly durationMs: number;
  readonly userAgent?: string;
  readonly byok: boolean;
}
