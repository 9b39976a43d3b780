/**
 * Auditing an administrative change, the same way on every path (the admin CLI against the tables, the admin
 * API, the kill switch): the entry — who, what, before, after, why — is written BEFORE the change is made, so
 * no change goes unrecorded; a change that then fails gets a second entry marked `outcome: failed`. Without an
 * audit log a change is refused: an operator can always tell who changed what.
 */
import { createHash, randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import type { AuditEntry, AuditState, AuditValue, AuditVia } from '../store/dynamodb/audit-store';
import type { Clock } from './clock';
import { type CreatedKey, type CreateKeyInput, createApiKey } from './key-admin';
import { formatUsd } from './money';
import type { KeyStore, Ledger } from './stores';

export type { AuditEntry, AuditState, AuditValue, AuditVia };

/** Where an audited change is written (the audit table, or a test double). */
export interface AuditSink {
  record(entry: AuditEntry): Promise<void>;
}

/** One change to audit. */
export interface AuditedChange {
  readonly actor: string;
  readonly via: AuditVia;
  readonly action: string;
  readonly target: string;
  readonly before?: AuditState;
  readonly after?: AuditState;
  readonly reason?: string;
  readonly details?: Readonly<Record<string, AuditValue>>;
  readonly sourceIp?: string;
  /** The change's id (a request id); a fresh one when absent. A retry of the same change must reuse it. */
  readonly changeId?: string;
  /** Epoch ms of the change. @default clock.now() */
  readonly at?: number;
}

/** The audit entry of a change (its id and time fixed). */
export function auditEntry(change: AuditedChange, clock: Clock): AuditEntry {
  return {
    requestId: change.changeId ?? randomUUID(),
    at: new Date(change.at ?? clock.now()).toISOString(),
    actor: change.actor,
    via: change.via,
    action: change.action,
    target: change.target,
    ...(change.before ? { before: change.before } : {}),
    ...(change.after ? { after: change.after } : {}),
    ...(change.reason ? { reason: change.reason } : {}),
    ...(change.details ? { details: change.details } : {}),
    ...(change.sourceIp ? { sourceIp: change.sourceIp } : {}),
  };
}

/**
 * Records the change, then runs it; if it throws, records the failure (best effort: the error's name or code,
 * never its message, which might quote an input) and rethrows.
 */
export async function audited<T>(sink: AuditSink | undefined, change: AuditedChange, clock: Clock, run: () => Promise<T>): Promise<T> {
  if (!sink) throw new AuditUnavailableError();
  const entry = auditEntry(change, clock);
  await sink.record(entry);
  try {
    return await run();
  } catch (err) {
    await recordFailure(sink, entry, err);
    throw err;
  }
}

/** The second entry of a change that failed after it was recorded (best effort). */
async function recordFailure(sink: AuditSink, entry: AuditEntry, err: unknown): Promise<void> {
  await sink
    .record({ ...entry, requestId: `${entry.requestId}#failed`, details: { ...entry.details, outcome: 'failed', error: errorName(err) } })
    .catch(() => undefined);
}

/** Who makes a change and how (the rest of an {@link AuditedChange}). */
export type AuditWho = Omit<AuditedChange, 'action' | 'target' | 'before' | 'after'>;

/**
 * Creates an API key with its audit entry written first: the entry names the new key id (known once the
 * material is generated, before anything is stored) and what it was created with, never the key itself.
 */
export async function createKeyAudited(
  stores: { readonly keys: KeyStore; readonly ledger: Ledger },
  input: CreateKeyInput,
  options: { readonly pepper: string; readonly clock: Clock; readonly sink: AuditSink | undefined; readonly who: AuditWho },
): Promise<CreatedKey> {
  const sink = options.sink;
  if (!sink) throw new AuditUnavailableError();
  let entry: AuditEntry | undefined;
  try {
    return await createApiKey(stores, input, {
      pepper: options.pepper,
      clock: options.clock,
      beforeWrite: async (record) => {
        const budget = input.budget ? { [`budget.${input.budget.window}`]: limitAuditValue(input.budget.limit) } : {};
        entry = auditEntry({ ...options.who, action: 'keys.create', target: record.keyId, after: { ...keyAuditState(record), ...budget } }, options.clock);
        await sink.record(entry);
      },
    });
  } catch (err) {
    if (entry) await recordFailure(sink, entry, err);
    throw err;
  }
}

function errorName(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string') return code;
  return err instanceof Error ? err.name : 'error';
}

/** No audit log to write to: the change is refused. */
export class AuditUnavailableError extends Error {
  constructor() {
    super('the audit log is not configured; administrative changes are refused');
    this.name = 'AuditUnavailableError';
  }
}

/** The person running a CLI: `--actor`, else TOLLGATE_ACTOR, else the OS user name. */
export function cliActor(explicit: string | undefined, env: Readonly<Record<string, string | undefined>> = process.env): string {
  if (explicit?.trim()) return explicit.trim();
  if (env.TOLLGATE_ACTOR?.trim()) return env.TOLLGATE_ACTOR.trim();
  try {
    return userInfo().username || 'unknown';
  } catch {
    return 'unknown';
  }
}

/** A key as the audit log shows it: ids, owner, status, limits; never its hash. */
export function keyAuditState(k: {
  readonly keyId: string;
  readonly prefix: string;
  readonly userId: string;
  readonly orgId?: string;
  readonly name: string;
  readonly status: string;
  readonly scopes: readonly string[];
  readonly rpm?: number;
  readonly tpm?: number;
  readonly expiresAt?: string;
  readonly responseCache?: boolean;
}): AuditState {
  return {
    keyId: k.keyId,
    prefix: k.prefix,
    userId: k.userId,
    orgId: k.orgId ?? null,
    name: k.name,
    status: k.status,
    scopes: k.scopes.join(','),
    rpm: k.rpm === undefined ? 'default' : k.rpm === 0 ? 'none' : k.rpm,
    tpm: k.tpm === undefined ? 'default' : k.tpm === 0 ? 'none' : k.tpm,
    ...(k.expiresAt ? { expiresAt: k.expiresAt } : {}),
    ...(k.responseCache ? { responseCache: true } : {}),
  };
}

/** A scope's own budget limit of one window as the audit log shows it: exact dollars, `none` or `default`. */
export function limitAuditValue(own: number | 'none' | null | undefined): string {
  if (own === undefined || own === null) return 'default';
  if (own === 'none') return 'none';
  return formatUsd(own);
}

/**
 * What the audit log says of a secret value (a provider key, a BYOK key, the pepper): `sha256:` and the first 8
 * hex digits of its SHA-256. Enough to tell whether two changes set the same value, never enough to use or
 * recover it (32 bits of a one-way hash); the value itself never reaches the log.
 */
export function secretFingerprint(value: string): string {
  return `sha256:${createHash('sha256').update(value, 'utf8').digest('hex').slice(0, 8)}`;
}
