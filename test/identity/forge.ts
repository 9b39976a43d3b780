/** Builds compact JWS tokens by hand (node:crypto HMAC), so tests can forge anything jose would refuse to sign. */
import { createHmac } from 'node:crypto';

export interface ForgeInput {
  readonly header?: Record<string, unknown>;
  readonly claims?: Record<string, unknown>;
  /** HMAC secret; with `alg: none` no signature is made. */
  readonly secret?: string;
  /** Replaces the computed signature. */
  readonly signature?: string;
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

export function forgeToken(input: ForgeInput): string {
  const header = input.header ?? { alg: 'HS256', typ: 'JWT' };
  const signingInput = `${b64(header)}.${b64(input.claims ?? {})}`;
  const alg = String(header.alg);
  const hash = alg === 'HS384' ? 'sha384' : alg === 'HS512' ? 'sha512' : 'sha256';
  const signature =
    input.signature ??
    (alg === 'none' || input.secret === undefined ? '' : createHmac(hash, input.secret).update(signingInput).digest('base64url'));
  return `${signingInput}.${signature}`;
}

/** Standard claims of a good token at `nowSec`, to override per case. */
export function goodClaims(nowSec: number, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    iss: 'tollgate',
    aud: 'tollgate-test',
    sub: 'agent',
    scopes: ['ai:complete'],
    iat: nowSec,
    nbf: nowSec,
    exp: nowSec + 600,
    jti: `jti-${Math.random().toString(36).slice(2)}`,
    ...overrides,
  };
}
