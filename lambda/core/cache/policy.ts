/**
 * Whether and how one request uses the response cache: the key's setting (`responseCache`), overridden by the
 * request's headers.
 *
 *   x-tollgate-cache: use        use the cache for this request (even when the key has it off)
 *   x-tollgate-cache: off        neither read nor write the cache (even when the key has it on)
 *   Cache-Control: no-cache      do not answer from the cache; the fresh answer is still stored
 *   Cache-Control: no-store      do not store this answer (a hit may still be served)
 *   Cache-Control: max-age=N     accept only an answer at most N seconds old, and keep this one N seconds
 */
import { InvalidRequestError } from '../errors';

export interface CachePolicySettings {
  /** How long an answer is kept when the request names no max-age (seconds). */
  readonly defaultTtlSeconds: number;
  /** The longest a request's max-age may keep an answer (seconds). */
  readonly maxTtlSeconds: number;
}

export interface CachePolicy {
  /** Look for a stored answer. */
  readonly read: boolean;
  /** Store the fresh answer. */
  readonly write: boolean;
  /** Oldest acceptable stored answer, in seconds (undefined: any unexpired one). */
  readonly maxAgeSeconds?: number;
  /** How long a stored answer lives. */
  readonly ttlSeconds: number;
}

/** The policy of a request, or undefined when the cache is off for it. Throws 400 on a malformed header. */
export function cachePolicyOf(
  headers: Readonly<Record<string, string | undefined>>,
  keyEnabled: boolean,
  settings: CachePolicySettings,
): CachePolicy | undefined {
  const mode = headers['x-tollgate-cache']?.trim().toLowerCase();
  if (mode !== undefined && mode !== 'use' && mode !== 'off') {
    throw new InvalidRequestError(`x-tollgate-cache must be "use" or "off", got "${mode.slice(0, 20)}".`, { code: 'invalid_cache_header' });
  }
  if (mode === 'off' || (mode !== 'use' && !keyEnabled)) return undefined;
  const directives = (headers['cache-control'] ?? '')
    .split(',')
    .map((d) => d.trim().toLowerCase())
    .filter(Boolean);
  let maxAge: number | undefined;
  for (const d of directives) {
    const m = /^max-age=(\d{1,9})$/.exec(d);
    if (m) maxAge = Number(m[1]);
    else if (d.startsWith('max-age')) throw new InvalidRequestError('Cache-Control max-age must be a whole number of seconds.', { code: 'invalid_cache_header' });
  }
  return {
    read: !directives.includes('no-cache') && maxAge !== 0,
    write: !directives.includes('no-store') && maxAge !== 0,
    ...(maxAge !== undefined ? { maxAgeSeconds: maxAge } : {}),
    ttlSeconds: Math.min(maxAge ?? settings.defaultTtlSeconds, settings.maxTtlSeconds),
  };
}
