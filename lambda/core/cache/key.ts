/**
 * The response cache's key: a hash of who is asking (the tenant) and everything in the request that can
 * change the answer, in canonical JSON (object keys sorted at every depth), so the same request written with
 * its fields in another order, or from another key of the same tenant, finds the same answer, and no request
 * of another tenant ever can.
 */
import { createHash } from 'node:crypto';
import type { Principal } from '../auth';

/**
 * Request fields that never change the answer: the caller's end-user id and free-form metadata (OpenAI
 * `user`, `metadata`; Anthropic `metadata`). Everything else (model, messages, tools, temperature, seed,
 * stream, stream_options, response_format…) is part of the key.
 */
const IGNORED_FIELDS: ReadonlySet<string> = new Set(['user', 'metadata']);

/** JSON with object keys sorted at every depth (arrays keep their order): one text per value. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** Whose answers a request may see: its organization, or its user when the key has no organization. */
export function tenantOf(principal: Pick<Principal, 'userId' | 'orgId'>): string {
  return principal.orgId ? `org:${principal.orgId}` : `user:${principal.userId}`;
}

/** The cache key of a request: hex SHA-256 of tenant, endpoint and the normalized body. */
export function cacheKeyOf(request: { readonly tenant: string; readonly endpoint: string; readonly body: Readonly<Record<string, unknown>> }): string {
  const normalized: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(request.body)) if (!IGNORED_FIELDS.has(k)) normalized[k] = v;
  return createHash('sha256').update(`${request.tenant}\n${request.endpoint}\n${canonicalJson(normalized)}`).digest('hex');
}
