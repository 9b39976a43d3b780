/**
 * API key material. A key is `sk-tg-` + a 12-character key id + a 43-character secret (32 random bytes),
 * all URL-safe base64. The key id lets us fetch the record in one GetItem; only an HMAC-SHA256 of the whole
 * key under a server-side pepper is stored. Keys carry 256 bits of entropy, so a fast keyed hash is the right
 * tool (bcrypt's deliberate slowness protects low-entropy passwords and would cost ~250 ms per request).
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const PREFIX = 'sk-tg-';
const KEY_ID_LENGTH = 12;
const SECRET_LENGTH = 43;
const KEY_PATTERN = new RegExp(`^${PREFIX}[A-Za-z0-9_-]{${KEY_ID_LENGTH + SECRET_LENGTH}}$`);

export interface NewApiKey {
  /** The raw key: shown once, never stored. */
  readonly raw: string;
  readonly keyId: string;
  /** Safe to display: `sk-tg-` + the key id + an ellipsis. */
  readonly prefix: string;
}

export function generateApiKey(): NewApiKey {
  // A key id is typed as a command-line argument (`keys revoke <keyId>`), where a leading '-' reads as an option.
  let keyId: string;
  do keyId = randomBytes(9).toString('base64url');
  while (keyId.startsWith('-'));
  const secret = randomBytes(32).toString('base64url');
  const raw = `${PREFIX}${keyId}${secret}`;
  return { raw, keyId, prefix: displayPrefix(keyId) };
}

export function displayPrefix(keyId: string): string {
  return `${PREFIX}${keyId}…`;
}

/** The key id embedded in a raw key, or undefined when the string is not shaped like one of our keys. */
export function keyIdOf(raw: string): string | undefined {
  if (!KEY_PATTERN.test(raw)) return undefined;
  return raw.slice(PREFIX.length, PREFIX.length + KEY_ID_LENGTH);
}

export function hashApiKey(raw: string, pepper: string): string {
  return createHmac('sha256', pepper).update(raw).digest('hex');
}

/** Constant-time comparison of a presented key against a stored hash. */
export function apiKeyMatches(raw: string, storedHash: string, pepper: string): boolean {
  const presented = Buffer.from(hashApiKey(raw, pepper), 'hex');
  const stored = Buffer.from(storedHash, 'hex');
  return presented.length === stored.length && timingSafeEqual(presented, stored);
}
