/**
 * The typed error hierarchy of tollgate. Every failure that reaches a caller is one of these; the HTTP layer
 * renders them in the caller's dialect (OpenAI or Anthropic) with {@link TollgateError.status}. Messages are
 * written for the caller and never contain a secret.
 */
import type { ScopeId } from './types';

/** What kind of failure this is, independent of any wire dialect. */
export type ErrorKind =
  | 'invalid_request'
  | 'authentication'
  | 'permission'
  | 'not_found'
  | 'payload_too_large'
  | 'rate_limit'
  | 'insufficient_quota'
  | 'upstream'
  | 'unavailable'
  | 'internal';

export interface TollgateErrorOptions {
  /** A machine-readable code, as OpenAI's `error.code` (e.g. `invalid_api_key`, `insufficient_quota`). */
  readonly code?: string;
  /** The request parameter at fault, as OpenAI's `error.param`. */
  readonly param?: string;
  /** Extra response headers, e.g. `Retry-After`. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly cause?: unknown;
  /**
   * Whose request was refused, when the refusal happened before a principal existed (a revoked, expired or
   * suspended key): lets observers count the refusal against the key. Ids only, never a secret; not rendered.
   */
  readonly subject?: RefusedSubject;
}

/** The key (and its user and org) a refusal is about. */
export interface RefusedSubject {
  readonly keyId: string;
  readonly userId: string;
  readonly orgId?: string;
}

export abstract class TollgateError extends Error {
  abstract readonly status: number;
  abstract readonly kind: ErrorKind;
  readonly code?: string;
  readonly param?: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly subject?: RefusedSubject;

  constructor(message: string, options: TollgateErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code;
    this.param = options.param;
    this.headers = options.headers ?? {};
    if (options.subject) this.subject = options.subject;
  }
}

export class InvalidRequestError extends TollgateError {
  readonly status = 400;
  readonly kind = 'invalid_request' as const;
}

export class AuthenticationError extends TollgateError {
  readonly status = 401;
  readonly kind = 'authentication' as const;
}

export class PermissionDeniedError extends TollgateError {
  readonly status = 403;
  readonly kind = 'permission' as const;
}

export class NotFoundError extends TollgateError {
  readonly status = 404;
  readonly kind = 'not_found' as const;
}

export class PayloadTooLargeError extends TollgateError {
  readonly status = 413;
  readonly kind = 'payload_too_large' as const;
}

/** A request-rate or token-rate limit was hit; carries `Retry-After`. */
export class RateLimitError extends TollgateError {
  readonly status = 429;
  readonly kind = 'rate_limit' as const;
}

/** A budget (spend limit) would be crossed by this request. */
export class BudgetExceededError extends TollgateError {
  readonly status = 429;
  readonly kind = 'insufficient_quota' as const;
}

/** The provider failed, timed out or answered with something unusable. */
export class UpstreamError extends TollgateError {
  readonly status: number;
  readonly kind = 'upstream' as const;
  /**
   * The provider may have done the work and billed it: the request reached it and the answer was lost (a body
   * cut short, a timeout after the request was sent, an answer that is not JSON). Settle then charges the
   * reservation, since the gateway cannot prove the money unspent; a failure before the request left (an
   * unreachable upstream) or an error answer (4xx, 5xx) costs nothing.
   */
  readonly mayHaveOutput: boolean;
  /**
   * The status the provider itself answered (503, 529, …), when it answered one: `status` is what the caller
   * gets (most upstream 5xx become 502). Kept on the loop guard's item so a refusal can say what failed.
   */
  readonly upstreamStatus: number | undefined;
  constructor(
    message: string,
    options: TollgateErrorOptions & { readonly status?: number; readonly mayHaveOutput?: boolean; readonly upstreamStatus?: number } = {},
  ) {
    super(message, options);
    this.status = options.status ?? 502;
    this.mayHaveOutput = options.mayHaveOutput ?? false;
    this.upstreamStatus = options.upstreamStatus;
  }
}

/** A dependency we must consult (the store) cannot be reached: fail closed. */
export class StoreUnavailableError extends TollgateError {
  readonly status = 503;
  readonly kind = 'unavailable' as const;
}

export class InternalError extends TollgateError {
  readonly status = 500;
  readonly kind = 'internal' as const;
}

/** Turns anything thrown into a TollgateError; unknown errors become a 500 with a generic message. */
export function asTollgateError(err: unknown): TollgateError {
  if (err instanceof TollgateError) return err;
  return new InternalError('The gateway hit an unexpected error; the request was not billed.', { cause: err });
}

/**
 * A spend circuit breaker is open for one of the caller's scopes: nothing is forwarded until it closes (at
 * `closesAt`, carried in `Retry-After` and `x-tollgate-circuit-closes-at`) or an operator resets it.
 */
export class CircuitOpenError extends TollgateError {
  readonly status = 429;
  readonly kind = 'rate_limit' as const;
}

/** The loop guard refused a copy of a request that repeated (or kept failing) too often. */
export class LoopDetectedError extends TollgateError {
  readonly status = 429;
  readonly kind = 'rate_limit' as const;
  /**
   * A refusal for a failure streak (not copies in flight): how many failures in a row, and the status the
   * provider answered last when it was recorded. The routing layer names it with the chain's other failures.
   */
  streak?: { readonly fails: number; readonly lastStatus?: number; readonly blockMinutes: number };
}

/**
 * The spend-velocity breaker refused a request: its scope spent more within a short window than its floor and
 * its own baseline allow (core/guardrails/velocity.ts). A 429 `circuit_open`; the pipeline then opens the
 * scope's circuit and alerts.
 */
export class SpendVelocityError extends CircuitOpenError {
  constructor(
    message: string,
    readonly trip: {
      readonly scope: ScopeId;
      readonly window: number;
      readonly windowEnd: number;
      readonly spentMicros: number;
      readonly ceilingMicros: number;
    },
    options: TollgateErrorOptions = {},
  ) {
    super(message, options);
  }
}
