/**
 * Which budgets BYOK spend counts toward. A request paid with the caller's own provider key is not platform
 * spend, so it counts toward neither the platform, the org, nor the caller's platform-funded user and key
 * budgets; it counts toward the user's own BYOK budget scope, `user:<id>#byok`, which an operator may limit
 * (`#` cannot occur in an id, so this scope never collides with a real user's).
 */
import type { Principal } from '../auth';
import type { ScopeId } from '../types';

/** The BYOK budget scope of a user. */
export function byokScopeOf(userId: string): ScopeId {
  return `user:${userId}#byok`;
}

/** The scopes a BYOK request's spend counts toward. */
export function byokScopesOf(principal: Pick<Principal, 'userId'>): ScopeId[] {
  return [byokScopeOf(principal.userId)];
}
