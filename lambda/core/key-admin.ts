/**
 * Key administration shared by the admin CLI, the local launcher and (later) the admin API: creating a key is
 * generating the material, storing only its hash, and setting the key's own budget if one was asked for.
 */
import { generateApiKey, hashApiKey } from './api-keys';
import type { Clock } from './clock';
import { InvalidRequestError } from './errors';
import type { MicroUsd } from './money';
import type { KeyStore, Ledger } from './stores';
import { KEY_SCOPES, type KeyRecord, type KeyScope, type UNLIMITED } from './types';
import type { Window } from './windows';

export const DEFAULT_KEY_SCOPES: readonly KeyScope[] = ['ai:complete', 'ai:embed', 'ai:usage'];

export interface CreateKeyInput {
  readonly userId: string;
  readonly orgId?: string;
  readonly name?: string;
  readonly scopes?: readonly string[];
  /** Requests per minute; absent = the default (60), 0 = explicitly unlimited (`--rpm none`). */
  readonly rpm?: number;
  /** Tokens per minute; absent = the default (5,000,000), 0 = explicitly unlimited. */
  readonly tpm?: number;
  /** Use the response cache for this key's requests. @default false */
  readonly responseCache?: boolean;
  readonly expiresAt?: string;
  /** The key's own spend limit (`none`: explicitly unlimited, no default applies). */
  readonly budget?: { readonly window: Window; readonly limit: MicroUsd | typeof UNLIMITED };
}

export interface CreatedKey {
  /** The raw key: returned once, never stored or logged. */
  readonly raw: string;
  readonly record: KeyRecord;
}

const ID_PATTERN = /^[A-Za-z0-9._@+\-]{1,128}$/;

export async function createApiKey(
  stores: { readonly keys: KeyStore; readonly ledger: Ledger },
  input: CreateKeyInput,
  options: {
    readonly pepper: string;
    readonly clock: Clock;
    /** Called with the validated record before anything is written (the audit entry of the creation). */
    readonly beforeWrite?: (record: KeyRecord) => Promise<void>;
  },
): Promise<CreatedKey> {
  if (!ID_PATTERN.test(input.userId)) throw new InvalidRequestError(`user "${input.userId}" is not a valid id`, { param: 'user' });
  if (input.orgId !== undefined && !ID_PATTERN.test(input.orgId)) {
    throw new InvalidRequestError(`org "${input.orgId}" is not a valid id`, { param: 'org' });
  }
  const scopes = input.scopes ?? DEFAULT_KEY_SCOPES;
  for (const s of scopes) {
    if (!(KEY_SCOPES as readonly string[]).includes(s)) {
      throw new InvalidRequestError(`unknown scope "${s}"; known scopes: ${KEY_SCOPES.join(', ')}`, { param: 'scopes' });
    }
  }
  for (const [name, v] of [['rpm', input.rpm], ['tpm', input.tpm]] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 0)) {
      throw new InvalidRequestError(`${name} must be a positive whole number (or 0 / "none" for no limit)`, { param: name });
    }
  }
  if (input.expiresAt !== undefined && Number.isNaN(Date.parse(input.expiresAt))) {
    throw new InvalidRequestError(`expiresAt "${input.expiresAt}" is not a date`, { param: 'expiresAt' });
  }
  const material = generateApiKey();
  const record: KeyRecord = {
    keyId: material.keyId,
    prefix: material.prefix,
    hash: hashApiKey(material.raw, options.pepper),
    userId: input.userId,
    ...(input.orgId ? { orgId: input.orgId } : {}),
    name: input.name ?? `${input.userId} key`,
    scopes: scopes as KeyScope[],
    ...(input.rpm !== undefined ? { rpm: input.rpm } : {}),
    ...(input.tpm !== undefined ? { tpm: input.tpm } : {}),
    ...(input.responseCache ? { responseCache: true } : {}),
    status: 'active',
    createdAt: new Date(options.clock.now()).toISOString(),
    ...(input.expiresAt ? { expiresAt: new Date(input.expiresAt).toISOString() } : {}),
  };
  await options.beforeWrite?.(record);
  await stores.keys.create(record);
  if (input.budget) await stores.ledger.setLimit(`key:${record.keyId}`, input.budget.window, input.budget.limit);
  return { raw: material.raw, record };
}
