/**
 * Service JWTs: how internal services (the agent service, …) call the gateway. HS256 with a secret from SSM
 * (`jwt-secret`), issued and verified with `jose` (no hand-rolled crypto).
 *
 * Rotation with overlap: the secret's value is a list of `kid:secret` entries separated by commas or newlines;
 * the FIRST entry signs, every entry verifies. To rotate: append the new entry, wait one secrets-cache TTL
 * (5 minutes) so every instance knows it, move it first, and drop the old one once the longest token lifetime
 * (1 hour) has passed. A value without `kid:` is one entry with the kid `default`.
 *
 * Claims: `iss`, `aud`, `sub` (the service), `scopes`, optional `onBehalfOf` (the user whose budgets the spend
 * lands on) and `org`, `iat`, `nbf`, `exp` (at most {@link MAX_TOKEN_TTL_SECONDS} after `iat`) and `jti`.
 * Every rejection is an {@link AuthenticationError} (401) with its own code and a message that never quotes the
 * token or a secret.
 */
import { randomUUID } from 'node:crypto';
import { decodeProtectedHeader, jwtVerify, SignJWT, type JWTPayload } from 'jose';
import type { Clock } from './clock';
import { AuthenticationError } from './errors';
import { KEY_SCOPES, type KeyScope } from './types';

/** The only algorithm tokens may use. */
export const JWT_ALGORITHM = 'HS256';
/** Longest lifetime of a token (`exp - iat`), in seconds. */
export const MAX_TOKEN_TTL_SECONDS = 3_600;
/** Longer bearer tokens are refused before any parsing. */
export const MAX_TOKEN_BYTES = 4_096;
/** Shortest accepted signing secret, in bytes (HS256 wants at least the hash size). */
export const MIN_SECRET_BYTES = 32;
/** Clock skew tolerated on `nbf`, `iat` and `exp`, in seconds. */
export const CLOCK_TOLERANCE_SECONDS = 30;

const KID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
/** A service name (`sub`): lower-case, as it appears in `svc:<name>` key ids. */
export const SERVICE_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const ID_PATTERN = /^[A-Za-z0-9._@+\-]{1,128}$/;

/** One signing secret and its key id. */
export interface JwtKey {
  readonly kid: string;
  readonly secret: Uint8Array;
}

/** The secrets of the `jwt-secret` value: the first signs, all verify. */
export interface JwtKeyRing {
  readonly signing: JwtKey;
  readonly byKid: ReadonlyMap<string, JwtKey>;
}

/**
 * Parses a `jwt-secret` value (`kid:secret[,kid:secret…]`). Throws a RangeError naming the entry (by kid, never
 * by value) when a kid is malformed, repeated, or a secret is shorter than {@link MIN_SECRET_BYTES}.
 */
export function parseJwtKeyRing(value: string): JwtKeyRing {
  const entries = value
    .split(/[,\n]/)
    .map((e) => e.trim())
    .filter(Boolean);
  if (entries.length === 0) throw new RangeError('jwt-secret is empty');
  const byKid = new Map<string, JwtKey>();
  const keys: JwtKey[] = [];
  for (const entry of entries) {
    const colon = entry.indexOf(':');
    const kid = colon > 0 ? entry.slice(0, colon) : 'default';
    const secret = colon > 0 ? entry.slice(colon + 1) : entry;
    if (!KID_PATTERN.test(kid)) throw new RangeError(`jwt-secret entry ${keys.length + 1} has an invalid kid`);
    if (byKid.has(kid)) throw new RangeError(`jwt-secret lists the kid "${kid}" twice`);
    const bytes = new TextEncoder().encode(secret);
    if (bytes.length < MIN_SECRET_BYTES) {
      throw new RangeError(`jwt-secret "${kid}" is shorter than ${MIN_SECRET_BYTES} bytes`);
    }
    const key = { kid, secret: bytes };
    byKid.set(kid, key);
    keys.push(key);
  }
  return { signing: keys[0]!, byKid };
}

/** A fresh `kid:secret` entry (256 random bits), for a new installation or a rotation. */
export function generateJwtSecretEntry(kid: string): string {
  if (!KID_PATTERN.test(kid)) throw new RangeError(`"${kid}" is not a valid kid`);
  const bytes = new Uint8Array(32);
  crypto.getRandomValues(bytes);
  return `${kid}:${Buffer.from(bytes).toString('base64url')}`;
}

/**
 * Where the current `jwt-secret` value comes from: a fixed value, or a function reading it from a cached secret
 * source (SSM), so a rotated value is picked up without a restart. `undefined` means service tokens are off.
 */
export type JwtSecretSource = string | (() => Promise<string | undefined>);

/** Resolves a {@link JwtSecretSource} into a parsed key ring, re-parsing only when the value changes. */
export class JwtKeyRingSource {
  private parsed: { value: string; ring: JwtKeyRing } | undefined;

  constructor(private readonly source: JwtSecretSource | undefined) {}

  /** The current key ring, or undefined when no secret is configured. */
  async current(): Promise<JwtKeyRing | undefined> {
    if (this.source === undefined) return undefined;
    const value = typeof this.source === 'string' ? this.source : await this.source();
    if (!value) return undefined;
    if (this.parsed?.value !== value) this.parsed = { value, ring: parseJwtKeyRing(value) };
    return this.parsed.ring;
  }
}

/** Who a token is for: the `iss` and `aud` every token carries and every verifier checks. */
export interface JwtAudience {
  readonly issuer: string;
  readonly audience: string;
}

/** What a service token asserts, after verification. */
export interface ServiceClaims {
  /** The calling service (`sub`), e.g. `agent`. */
  readonly service: string;
  readonly scopes: readonly KeyScope[];
  /** The user the service acts for: spend lands on this user's budgets. */
  readonly onBehalfOf?: string;
  readonly orgId?: string;
  /** The token id (`jti`). */
  readonly tokenId: string;
  readonly kid: string;
  /** ms epoch. */
  readonly issuedAt: number;
  readonly expiresAt: number;
}

/** What to put in a new token. */
export interface IssueTokenInput {
  /** The service (`sub`), matching {@link SERVICE_PATTERN}. */
  readonly service: string;
  readonly scopes: readonly string[];
  /** Lifetime in seconds, 1 … {@link MAX_TOKEN_TTL_SECONDS}. @default 900 */
  readonly ttlSeconds?: number;
  readonly onBehalfOf?: string;
  readonly orgId?: string;
}

export interface IssuedToken {
  /** The compact JWT: a bearer credential, print it once and never log it. */
  readonly token: string;
  readonly tokenId: string;
  readonly kid: string;
  /** ISO-8601. */
  readonly expiresAt: string;
}

export interface JwtOptions extends JwtAudience {
  readonly keys: JwtKeyRingSource;
  readonly clock: Clock;
}

/** Throws a RangeError naming the field when the input cannot become a valid token. */
function checkIssueInput(input: IssueTokenInput): { ttl: number; scopes: KeyScope[] } {
  if (!SERVICE_PATTERN.test(input.service)) {
    throw new RangeError(`service "${input.service}" must be lower-case letters, digits, ".", "_" or "-" (max 64)`);
  }
  const ttl = input.ttlSeconds ?? 900;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TOKEN_TTL_SECONDS) {
    throw new RangeError(`ttl must be a whole number of seconds from 1 to ${MAX_TOKEN_TTL_SECONDS}, got ${ttl}`);
  }
  if (input.scopes.length === 0) throw new RangeError('a token needs at least one scope');
  for (const s of input.scopes) {
    if (!(KEY_SCOPES as readonly string[]).includes(s)) {
      throw new RangeError(`unknown scope "${s}"; known scopes: ${KEY_SCOPES.join(', ')}`);
    }
  }
  if (input.onBehalfOf !== undefined && !ID_PATTERN.test(input.onBehalfOf)) {
    throw new RangeError(`onBehalfOf "${input.onBehalfOf}" is not a valid user id`);
  }
  if (input.orgId !== undefined && !ID_PATTERN.test(input.orgId)) {
    throw new RangeError(`org "${input.orgId}" is not a valid org id`);
  }
  return { ttl, scopes: [...new Set(input.scopes)] as KeyScope[] };
}

/** Signs service tokens with the key ring's first secret. */
export class TokenIssuer {
  constructor(private readonly options: JwtOptions) {}

  async issue(input: IssueTokenInput): Promise<IssuedToken> {
    const { ttl, scopes } = checkIssueInput(input);
    const ring = await this.options.keys.current();
    if (!ring) throw new RangeError('no jwt-secret is configured: service tokens cannot be issued');
    const iat = Math.floor(this.options.clock.now() / 1000);
    const tokenId = randomUUID();
    const payload: JWTPayload = {
      scopes,
      ...(input.onBehalfOf ? { onBehalfOf: input.onBehalfOf } : {}),
      ...(input.orgId ? { org: input.orgId } : {}),
    };
    const token = await new SignJWT(payload)
      .setProtectedHeader({ alg: JWT_ALGORITHM, typ: 'JWT', kid: ring.signing.kid })
      .setIssuer(this.options.issuer)
      .setAudience(this.options.audience)
      .setSubject(input.service)
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(iat + ttl)
      .setJti(tokenId)
      .sign(ring.signing.secret);
    return { token, tokenId, kid: ring.signing.kid, expiresAt: new Date((iat + ttl) * 1000).toISOString() };
  }
}

/** True when a bearer credential is shaped like a compact JWS (three base64url parts), not an API key. */
export function looksLikeJwt(credential: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$/.test(credential);
}

function reject(message: string, code: string, cause?: unknown): AuthenticationError {
  return new AuthenticationError(message, { code, ...(cause === undefined ? {} : { cause }) });
}

/** The `code` of a jose error (compared by code, not class, so one copy of jose or two both work). */
function joseCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Verifies service tokens: algorithm, kid, signature, `iss`, `aud`, `exp`, `nbf`, lifetime and claim shapes. */
export class TokenVerifier {
  constructor(private readonly options: JwtOptions) {}

  /** Verifies `token`; throws {@link AuthenticationError} (401) with a specific code on every failure. */
  async verify(token: string): Promise<ServiceClaims> {
    if (Buffer.byteLength(token, 'utf8') > MAX_TOKEN_BYTES) {
      throw reject(`The service token is larger than ${MAX_TOKEN_BYTES} bytes.`, 'token_too_large');
    }
    const ring = await this.options.keys.current();
    if (!ring) throw reject('Service tokens are not enabled on this gateway.', 'service_tokens_disabled');
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      if (!looksLikeJwt(token)) throw new Error('not a compact JWS');
      header = decodeProtectedHeader(token);
    } catch (err) {
      throw reject('The service token is malformed.', 'invalid_token', err);
    }
    // Checked before anything else so `alg: none` and asymmetric-key confusion never reach a verifier.
    if (header.alg !== JWT_ALGORITHM) {
      throw reject(`Service tokens must be signed with ${JWT_ALGORITHM}; this one says "${String(header.alg).slice(0, 16)}".`, 'invalid_token_algorithm');
    }
    if (typeof header.kid !== 'string' || header.kid === '') {
      throw reject('The service token has no "kid" header.', 'unknown_token_kid');
    }
    const key = ring.byKid.get(header.kid);
    if (!key) throw reject('The service token was signed with an unknown key ("kid").', 'unknown_token_kid');

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key.secret, {
        algorithms: [JWT_ALGORITHM],
        issuer: this.options.issuer,
        audience: this.options.audience,
        currentDate: new Date(this.options.clock.now()),
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        requiredClaims: ['iss', 'aud', 'sub', 'exp', 'nbf', 'iat', 'jti'],
        maxTokenAge: MAX_TOKEN_TTL_SECONDS + CLOCK_TOLERANCE_SECONDS,
      }));
    } catch (err) {
      throw this.translate(err);
    }
    return this.claimsOf(payload, header.kid);
  }

  private translate(err: unknown): AuthenticationError {
    const code = joseCode(err);
    const claim = (err as { claim?: unknown }).claim;
    const reason = (err as { reason?: unknown }).reason;
    if (code === 'ERR_JWT_EXPIRED') {
      return claim === 'iat'
        ? reject(`The service token is older than ${MAX_TOKEN_TTL_SECONDS} seconds.`, 'token_expired', err)
        : reject('The service token has expired.', 'token_expired', err);
    }
    if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED') {
      if (claim === 'aud') return reject(`The service token is not meant for this gateway (audience must be "${this.options.audience}").`, 'invalid_token_audience', err);
      if (claim === 'iss') return reject(`The service token was not issued by "${this.options.issuer}".`, 'invalid_token_issuer', err);
      if (claim === 'nbf') return reject('The service token is not valid yet.', 'token_not_yet_valid', err);
      if (claim === 'iat' && reason === 'check_failed') return reject('The service token was issued in the future.', 'token_not_yet_valid', err);
      return reject(`The service token's "${String(claim)}" claim is missing or invalid.`, 'invalid_token_claims', err);
    }
    if (code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') return reject('The service token signature does not verify.', 'invalid_token_signature', err);
    if (code === 'ERR_JOSE_ALG_NOT_ALLOWED') return reject(`Service tokens must be signed with ${JWT_ALGORITHM}.`, 'invalid_token_algorithm', err);
    return reject('The service token is malformed.', 'invalid_token', err);
  }

  private claimsOf(payload: JWTPayload, kid: string): ServiceClaims {
    const bad = (claim: string) => reject(`The service token's "${claim}" claim is missing or invalid.`, 'invalid_token_claims');
    const sub = payload.sub;
    if (typeof sub !== 'string' || !SERVICE_PATTERN.test(sub)) throw bad('sub');
    const iat = payload.iat!;
    const exp = payload.exp!;
    // A token that promises more than an hour of life is refused even when its signature is good.
    if (exp - iat > MAX_TOKEN_TTL_SECONDS) {
      throw reject(`The service token lives longer than ${MAX_TOKEN_TTL_SECONDS} seconds.`, 'token_lifetime_too_long');
    }
    const scopes = payload.scopes;
    if (!Array.isArray(scopes) || scopes.some((s) => typeof s !== 'string' || !(KEY_SCOPES as readonly string[]).includes(s))) {
      throw bad('scopes');
    }
    const onBehalfOf = payload.onBehalfOf;
    if (onBehalfOf !== undefined && (typeof onBehalfOf !== 'string' || !ID_PATTERN.test(onBehalfOf))) throw bad('onBehalfOf');
    const org = payload.org;
    if (org !== undefined && (typeof org !== 'string' || !ID_PATTERN.test(org))) throw bad('org');
    if (typeof payload.jti !== 'string' || payload.jti.length > 128) throw bad('jti');
    return {
      service: sub,
      scopes: scopes as KeyScope[],
      ...(onBehalfOf ? { onBehalfOf } : {}),
      ...(org ? { orgId: org } : {}),
      tokenId: payload.jti,
      kid,
      issuedAt: iat * 1000,
      expiresAt: exp * 1000,
    };
  }
}
