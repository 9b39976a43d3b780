/**
 * What a pool item carries and how it is named: a pool group's id, a take's marker (the kind, amount, arrival
 * and model the sweeper's `abandoned` record is made from), a grant's marker, the refusal a dry pool remembers,
 * and the sweeper's record of a take never settled.
 *
 * Layout of a key pool item (`pool#<group>#<k>` / `e<epoch>`). DynamoDB bills a write at the larger of the
 * item's size before and after, per started KB, and an item's size is the sum of its attribute names' and
 * values' lengths (a number: about one byte per two digits, plus one). A key pool item carries one take marker
 * per request in flight through it: at 1,000 req/s of one user over 8 keys × 4 shards, 31 req/s an item, with
 * calls of 0.3–0.8 s, ~18 at once on average and ~25 at a peak. Every byte of a marker is paid that many times
 * on every write of the item:
 *
 *   take marker   `*<id>` = binary (amount, lease, arrival, model)                          23 + 7–9 ≈ 31 bytes
 *                 name: `*` and the gateway's request id `req_<32 hex>` as 22 base64url characters (any other id
 *                 spelled out after `*:`), so a retried take finds its own marker and the sweeper has the id;
 *                 value: varint(amount µUSD × 2 + lease), varint(zigzag(arrival − the epoch's start, ms)), the
 *                 model's 3-byte digest; the item names each model once as `~<digest>` = model (set with
 *                 `if_not_exists` by every take of that model)
 *                 (was `t:req_<32 hex>` = `r;1000000;1765000000000;gpt-4o-mini`: 38 + 33 ≈ 71 bytes)
 *   grant marker  `+<part>` = amount (VOID_GRANT: voided by the sweeper)                            ≈ 15 bytes
 *                 the grant id is `pool.<group>#<k>.e<epoch>.<part>`: the item names the rest (was `g:<grant id>`, ≈ 60)
 *   model names   `~<digest>` = model, once per model                                            ≈ 20–30 bytes
 *   the rest      key, room, units, taken/granted/given, spent, requests, firstAt, ttl, a claim  ≈ 200 bytes
 *
 * Read back from DynamoDB Local (test/store/pool-item-size.test.ts): ≈ 250 bytes besides the take markers with 2
 * models and 3 grants, so every write stays under 1 KB (one write unit) with up to 24 takes in flight. The layout
 * before was ≈ 300 + 71 a take: 2 units a write from 11 takes in flight, 3 from 25.
 * A shared pool's take marker is `*` and a 72-bit digest of the request id = `s` (14 bytes): its record comes
 * from the request's own hold. Items written before this layout (`t:<id>`, `g:<grant id>`) are still read.
 */
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { createHash } from 'node:crypto';
import { BudgetExceededError, CircuitOpenError, RateLimitError, TollgateError } from '../../core/errors';
import type { MicroUsd } from '../../core/money';
import type { CounterRef, RateCharge, ReserveInput } from '../../core/stores';
import type { UsageRecord } from '../../core/types';
import { budgetExceeded } from './denials';
import type { PoolHost } from './pools';

export type Item = Record<string, AttributeValue>;

/** Grant ids of shared scopes' pools start with this (the sweeper releases them through the shared pools). */
export const SHARED_GRANT_PREFIX = 'spool.';

/** Refusals a pool remembers for a moment after even one request's grant was refused, so its takers need not ask. */
export interface DryState {
  readonly kind: 'budget' | 'rate' | 'circuit';
  readonly message: string;
  readonly code?: string;
  readonly headers: Record<string, string>;
  /**
   * A budget refused only for what is held (spend leaves room): the counter and its values, so each taker's
   * refusal is one the ledger waits on (room-wait.ts) rather than final.
   */
  readonly held?: { readonly ref: CounterRef; readonly old: Record<string, number> };
  /** A budget refused on the counter's values as read (spend alone left no room): its takers' refusal carries them. */
  readonly refused?: { readonly ref: CounterRef; readonly old: Record<string, number> };
}

/** Requests that share pools: one key, the same counters and limits, rate limits, circuits and velocity scopes. */
export function poolGroupKey(input: ReserveInput): string {
  // The platform's shard is the pool's (see take), not the request's.
  const counters = input.counters.map((c) => `${c.scope}|${c.windowKey}|${c.limit ?? '-'}`).join(',');
  const rates = input.rateCharges
    .filter((c) => c.amount > 0)
    .map((c) => `${c.dimension}:${c.limitPerMinute}`)
    .join(',');
  const circuits = (input.circuits ?? []).map((c) => c.scope).join(',');
  const velocity = (input.velocity ?? []).map((v) => `${v.scope}:${v.window}`).join(',');
  return [input.context.keyId, input.context.byok ? 'byok' : '', counters, rates, circuits, velocity].join('#');
}

export function groupId(input: ReserveInput): string {
  return createHash('sha256').update(poolGroupKey(input)).digest('base64url').slice(0, 22);
}

/** The last part of a quiet key's pool item key (one item per key: no shard number; pools.ts). */
export const QUIET_SHARD = 'q';

/** Whether a pool item key is a quiet key's pool (one item per key, longer epochs). */
export function isQuiet(pk: string): boolean {
  return pk.endsWith(`#${QUIET_SHARD}`);
}

export function unitAttr(dimension: RateCharge['dimension']): string {
  return dimension === 'requests' ? 'ur' : 'ut';
}

export function dryError(dry: DryState, amount: MicroUsd): TollgateError {
  if (dry.held) return budgetExceeded(dry.held.ref, { amount, old: dry.held.old });
  if (dry.refused) return budgetExceeded(dry.refused.ref, { amount, old: dry.refused.old });
  const options = { ...(dry.code ? { code: dry.code } : {}), headers: { ...dry.headers } };
  if (dry.kind === 'circuit') return new CircuitOpenError(dry.message, options);
  return dry.kind === 'budget' ? new BudgetExceededError(dry.message, options) : new RateLimitError(dry.message, options);
}

export function num(value: unknown): number {
  return typeof value === 'number' ? value : Number(value ?? 0) || 0;
}

/** A take's marker attribute on its pool item, present from the take until its settle (or the release). */
export const MARKER_PREFIX = '*';
/** A grant's marker attribute, set when the grant reaches the room. */
export const GRANT_PREFIX = '+';
/** A model's name on a pool item, under its digest (take markers carry the digest). */
const MODEL_PREFIX = '~';
/** Markers of items written before the compact layout (still read by the release and reclaims). */
const LEGACY_MARKER_PREFIX = 't:';
const LEGACY_GRANT_PREFIX = 'g:';
/** The value a grant's marker takes when the sweeper released a grant that never reached the room. */
export const VOID_GRANT = -1;

/** The gateway's request ids (lambda/http/app.ts): their 16 bytes fit in 22 base64url characters. */
const GATEWAY_REQUEST_ID = /^req_([0-9a-f]{32})$/;

/** A key pool take's marker attribute: `*` + the request id, compact when it is the gateway's (see the layout). */
export function markerName(requestId: string): string {
  const gateway = GATEWAY_REQUEST_ID.exec(requestId);
  return gateway ? `${MARKER_PREFIX}${Buffer.from(gateway[1]!, 'hex').toString('base64url')}` : `${MARKER_PREFIX}:${requestId}`;
}

/** The request id a key pool take's marker names (undefined: not a take marker). */
export function requestIdOf(name: string): string | undefined {
  if (name.startsWith(LEGACY_MARKER_PREFIX)) return name.slice(LEGACY_MARKER_PREFIX.length);
  if (!name.startsWith(MARKER_PREFIX)) return undefined;
  if (name.startsWith(`${MARKER_PREFIX}:`)) return name.slice(MARKER_PREFIX.length + 1);
  const bytes = Buffer.from(name.slice(MARKER_PREFIX.length), 'base64url');
  return bytes.length === 16 ? `req_${bytes.toString('hex')}` : undefined;
}

/** A shared pool take's marker attribute: a 72-bit digest of the request id (its record needs no id from it). */
export function sharedMarkerName(requestId: string): string {
  return `${MARKER_PREFIX}${createHash('sha256').update(requestId).digest('base64url').slice(0, 12)}`;
}

/** The 3-byte digest of a model a take marker carries (the item names the model once, under {@link modelName}). */
function modelDigest(model: string): Buffer {
  return createHash('sha256').update(model).digest().subarray(0, 3);
}

/** The attribute that names a model on a pool item: `~` and its digest in base64url (4 characters). */
export function modelName(model: string): string {
  return `${MODEL_PREFIX}${modelDigest(model).toString('base64url')}`;
}

/**
 * A key pool take's marker value, binary: varint(amount × 2 + lease), varint(zigzag(arrival − epochStart)), the
 * model's 3-byte digest. 7–9 bytes for amounts below 2²⁰ µUSD and arrivals within 8–16 s of the epoch's start.
 */
export function markerValue(kind: 'r' | 'l', amount: MicroUsd, arrival: number, epochStart: number, model: string): Uint8Array {
  // Whole ms: the record's timestamp (and so its key, which a late settle's record must match) is to the ms.
  const offset = Math.floor(arrival) - epochStart;
  return Buffer.concat([varint(amount * 2 + (kind === 'l' ? 1 : 0)), varint(offset >= 0 ? offset * 2 : -offset * 2 - 1), modelDigest(model)]);
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  let rest = n;
  while (rest >= 0x80) {
    bytes.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

/** Reads the varint at `at`: its value and the index after it (undefined past the end). */
function readVarint(bytes: Uint8Array, at: number): { value: number; next: number } | undefined {
  let value = 0;
  let scale = 1;
  for (let i = at; i < bytes.length && i < at + 8; i++) {
    value += (bytes[i]! & 0x7f) * scale;
    if (bytes[i]! < 0x80) return { value, next: i + 1 };
    scale *= 0x80;
  }
  return undefined;
}

/**
 * A grant's marker attribute: `+` and the part of its id after the pool item's own name (pool-refill.ts makes
 * ids `pool.<group>#<k>.e<epoch>.<part>`, `spool.` for a shared pool; the part is the refill's time and sequence).
 * A grant id of another shape is spelled out whole after `+:`.
 */
export function grantName(grantId: string): string {
  const made = GRANT_ID.exec(grantId);
  return made ? `${GRANT_PREFIX}${made[1]}` : `${GRANT_PREFIX}:${grantId}`;
}

const GRANT_ID = /^s?pool\.[^.]+\.e-?\d+\.(.+)$/;

/** The attribute names a grant's marker may have on its pool item: this layout's, then the one before it. */
export function grantNames(grantId: string): [string, string] {
  return [grantName(grantId), `${LEGACY_GRANT_PREFIX}${grantId}`];
}

/** The grants applied to a pool item (amount > 0), by id: `idOf` rebuilds an id from its marker's part. */
export function appliedGrants(item: Record<string, unknown>, idOf: (part: string) => string): Array<{ grantId: string; amount: number }> {
  const out: Array<{ grantId: string; amount: number }> = [];
  for (const [name, value] of Object.entries(item)) {
    if (typeof value !== 'number' || value <= 0) continue;
    if (name.startsWith(LEGACY_GRANT_PREFIX)) out.push({ grantId: name.slice(LEGACY_GRANT_PREFIX.length), amount: value });
    else if (name.startsWith(`${GRANT_PREFIX}:`)) out.push({ grantId: name.slice(GRANT_PREFIX.length + 1), amount: value });
    else if (name.startsWith(GRANT_PREFIX)) out.push({ grantId: idOf(name.slice(GRANT_PREFIX.length)), amount: value });
  }
  return out;
}

export interface MarkedTake {
  readonly requestId: string;
  readonly amount: MicroUsd;
  readonly reservedAt: number;
  readonly model: string;
  readonly lease: boolean;
}

/**
 * A key pool take from its marker on `item` (undefined: not a key pool take's marker). `epochStart` is the start
 * of the item's epoch (arrivals are stored after it). Markers of the layout before (`t:<id>` = `r;amount;at;model`)
 * are read too.
 */
export function parseMarker(name: string, value: unknown, item: Record<string, unknown>, epochStart: number): MarkedTake | undefined {
  const requestId = requestIdOf(name);
  if (requestId === undefined) return undefined;
  if (typeof value === 'string') {
    const [kind, amount, at, ...model] = value.split(';');
    if (kind === 's' || amount === undefined || at === undefined) return undefined;
    return { requestId, amount: Number(amount), reservedAt: Number(at), model: model.join(';'), lease: kind === 'l' };
  }
  if (!(value instanceof Uint8Array)) return undefined;
  const first = readVarint(value, 0);
  const second = first && readVarint(value, first.next);
  if (!first || !second || value.length !== second.next + 3) return undefined;
  const offset = second.value % 2 === 0 ? second.value / 2 : -(second.value + 1) / 2;
  const model = item[`${MODEL_PREFIX}${Buffer.from(value.subarray(second.next)).toString('base64url')}`];
  return {
    requestId,
    amount: Math.floor(first.value / 2),
    reservedAt: epochStart + offset,
    model: typeof model === 'string' ? model : 'unknown',
    lease: first.value % 2 === 1,
  };
}

/** The sweeper's record of a take never settled: its amount, estimated, `abandoned` (its late settle replaces it). */
export function abandonedTake(context: ReserveInput['context'], take: MarkedTake, now: number): UsageRecord {
  return {
    requestId: take.requestId,
    timestamp: new Date(take.reservedAt).toISOString(),
    userId: context.userId,
    keyId: context.keyId,
    ...(context.orgId !== undefined ? { orgId: context.orgId } : {}),
    provider: 'unknown',
    model: take.model,
    requestType: 'chat',
    endpoint: take.lease ? 'lease' : 'unknown',
    stream: false,
    usage: { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 },
    costMicros: take.amount,
    costEstimated: true,
    outcome: 'abandoned',
    httpStatus: 0,
    durationMs: Math.max(0, now - take.reservedAt),
    byok: context.byok ?? false,
  };
}

/** The key of the sweeper's record of a take (to delete it when a lease or a refused take settles late). */
export function abandonedKeyOf(host: PoolHost, requestId: string, reservedAt: number, context: ReserveInput['context']): Item {
  const item = host.usageItem(abandonedTake(context, { requestId, amount: 0, reservedAt, model: '', lease: true }, reservedAt));
  return { pk: item.pk!, sk: item.sk! };
}
