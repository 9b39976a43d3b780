/**
 * Counter reads and the limits items: a scope's limits per window, a key's loop overrides, and the busy marks
 * every limits read brings back (busy-scopes.ts). A shared scope's counters are read at most every
 * {@link SHARED_READ_MS} per instance while the scope is busy; no money decision rests on those values.
 */
/** How old a shared scope's counter values read by this instance may be (see readCounters). */
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { LoopOverrides } from '../../core/guardrails/settings';
import type { MicroUsd } from '../../core/money';
import type { CounterRef, CounterValue } from '../../core/stores';
import { type BudgetLimits, type ScopeId, type StoredLimits, UNLIMITED } from '../../core/types';
import { type Window, WINDOWS } from '../../core/windows';
import { BusyScopes, isShared } from './busy-scopes';
import { translateError } from './client';
import { counterPk, num } from './items';
import { assertMicros, type Item, LedgerCore, MAX_HINTS } from './ledger-core';

const SHARED_READ_MS = 2_000;

/** Reads counters; reads and writes limits and loop overrides (limits items). */
export class CountersAndLimits {
  /** Shared scopes' counter values read lately here (see readCounters). */
  private readonly sharedReads = new Map<string, { at: number; value: CounterValue }>();

  constructor(
    private readonly core: LedgerCore,
    private readonly busy: BusyScopes,
    private readonly sharing: boolean,
  ) {}

  /**
   * Current values of counters. With shared pools on, a shared scope's values are at most
   * {@link SHARED_READ_MS} old in this instance (thousands of instances reading an org's counters on every
   * request would pass its partition's read throughput); only the pools' grants write them, and every grant's
   * condition reads the item itself, so no decision about money rests on these values.
   */
  async readCounters(refs: readonly CounterRef[]): Promise<CounterValue[]> {
    const now = this.core.clock.now();
    // A busy org's allowance items hold the platform's part too (ledger.ts sharedGroups): then only grants write
    // the platform's counter as well, busy platform or not.
    const orgBusy = refs.some((r) => r.scope.startsWith('org:') && this.busy.isBusy(r.scope, now));
    const cached = (r: CounterRef) => isShared(r.scope) && (this.busy.isBusy(r.scope, now) || (r.scope === 'platform' && orgBusy));
    if (!this.sharing || !refs.some(cached)) return this.readCountersNow(refs);
    const idOf = (r: CounterRef) => `${r.scope}|${r.windowKey}`;
    const stale = refs.filter((r) => !cached(r) || !((this.sharedReads.get(idOf(r))?.at ?? -Infinity) > now - SHARED_READ_MS));
    const fresh = stale.length ? await this.readCountersNow(stale) : [];
    for (const v of fresh) {
      if (!cached(v.ref)) continue;
      if (this.sharedReads.size >= MAX_HINTS) this.sharedReads.clear();
      this.sharedReads.set(idOf(v.ref), { at: now, value: v });
    }
    const seen = new Set<string>();
    const out: CounterValue[] = [];
    for (const r of refs) {
      const id = idOf(r);
      if (seen.has(id)) continue;
      seen.add(id);
      const value = fresh.find((v) => idOf(v.ref) === id) ?? this.sharedReads.get(id)?.value;
      if (value) out.push(value);
    }
    return out;
  }

  private async readCountersNow(refs: readonly CounterRef[]): Promise<CounterValue[]> {
    const groups = new Map<string, { ref: CounterRef; keys: string[] }>();
    for (const ref of refs) {
      const id = `${ref.scope}|${ref.windowKey}`;
      if (groups.has(id)) continue;
      const pks =
        ref.scope === 'platform'
          ? Array.from({ length: this.core.platformShards }, (_, shard) => counterPk({ scope: 'platform', shard }))
          : [counterPk(ref)];
      const { shard: _shard, ...unsharded } = ref;
      groups.set(id, { ref: ref.scope === 'platform' ? unsharded : ref, keys: pks.map((pk) => `${pk}|${ref.windowKey}`) });
    }
    const keys = [...new Set([...groups.values()].flatMap((g) => g.keys))].map((k) => {
      const cut = k.lastIndexOf('|');
      return { pk: k.slice(0, cut), sk: k.slice(cut + 1) };
    });
    const found = new Map<string, Record<string, unknown>>();
    for (const item of await this.core.batchGet(keys)) {
      const value = unmarshall(item);
      found.set(`${value.pk}|${value.sk}`, value);
    }
    return [...groups.values()].map(({ ref, keys: ids }) => {
      let committed = 0;
      let spent = 0;
      let reserved = 0;
      let requests = 0;
      for (const id of ids) {
        const value = found.get(id);
        committed += num(value?.committed);
        spent += num(value?.spent);
        reserved += num(value?.reserved);
        requests += num(value?.requests);
      }
      return { ref, committed, spent, reserved, requests };
    });
  }

  async getLoopOverrides(keyIds: readonly string[]): Promise<Map<string, LoopOverrides>> {
    const out = new Map<string, LoopOverrides>();
    const unique = [...new Set(keyIds)];
    if (unique.length === 0) return out;
    const items = (await this.core.batchGet(unique.map((id) => ({ pk: `limit#key:${id}`, sk: 'limits' })))).map((item) => unmarshall(item));
    this.busy.learnMarks(items);
    for (const value of items) {
      const overrides: { maxRepeats?: number; maxFailures?: number } = {};
      if (typeof value.loopMaxRepeats === 'number') overrides.maxRepeats = value.loopMaxRepeats;
      if (typeof value.loopMaxFailures === 'number') overrides.maxFailures = value.loopMaxFailures;
      if (Object.keys(overrides).length > 0) out.set(String(value.pk).slice('limit#key:'.length), overrides);
    }
    return out;
  }

  async setLoopOverrides(
    keyId: string,
    overrides: { readonly maxRepeats?: number | null; readonly maxFailures?: number | null },
  ): Promise<void> {
    const sets = ['updatedAt = :now'];
    const removes: string[] = [];
    const values: Item = { ':now': { S: new Date(this.core.clock.now()).toISOString() } };
    for (const [field, attr] of [['maxRepeats', 'loopMaxRepeats'], ['maxFailures', 'loopMaxFailures']] as const) {
      const v = overrides[field];
      if (v === undefined) continue;
      if (v === null) {
        removes.push(attr);
        continue;
      }
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`${field} must be a positive whole number, got ${v}`);
      sets.push(`${attr} = :${attr}`);
      values[`:${attr}`] = { N: String(v) };
    }
    try {
      await this.core.client.send(
        new UpdateItemCommand({
          TableName: this.core.budgets,
          Key: marshall({ pk: `limit#key:${keyId}`, sk: 'limits' }),
          UpdateExpression: `SET ${sets.join(', ')}${removes.length ? ` REMOVE ${removes.join(', ')}` : ''}`,
          ExpressionAttributeValues: values,
        }),
      );
    } catch (err) {
      throw translateError(err);
    }
  }

  async getLimits(scopes: readonly ScopeId[]): Promise<Map<ScopeId, BudgetLimits>> {
    const unique = [...new Set(scopes)];
    const out = new Map<ScopeId, BudgetLimits>(unique.map((scope) => [scope, {}]));
    const items = await this.core.batchGet(unique.map((scope) => ({ pk: `limit#${scope}`, sk: 'limits' })));
    for (const item of items) {
      const value = unmarshall(item);
      const scope = String(value.pk).slice('limit#'.length) as ScopeId;
      const limits: Partial<Record<Window, MicroUsd>> = {};
      for (const window of WINDOWS) if (typeof value[window] === 'number') limits[window] = value[window] as number;
      out.set(scope, limits);
    }
    return out;
  }

  async getLimitSettings(scopes: readonly ScopeId[]): Promise<Map<ScopeId, StoredLimits>> {
    const unique = [...new Set(scopes)];
    const out = new Map<ScopeId, StoredLimits>(unique.map((scope) => [scope, {}]));
    const items = (await this.core.batchGet(unique.map((scope) => ({ pk: `limit#${scope}`, sk: 'limits' })))).map((item) => unmarshall(item));
    this.busy.learnMarks(items);
    for (const value of items) {
      const scope = String(value.pk).slice('limit#'.length) as ScopeId;
      const limits: Partial<Record<Window, MicroUsd | typeof UNLIMITED>> = {};
      for (const window of WINDOWS) {
        const v = value[window];
        if (typeof v === 'number') limits[window] = v;
        else if (v === UNLIMITED) limits[window] = UNLIMITED;
      }
      out.set(scope, limits);
    }
    return out;
  }

  async setLimit(scope: ScopeId, window: Window, limit: MicroUsd | typeof UNLIMITED | null): Promise<void> {
    if (limit !== null && limit !== UNLIMITED) assertMicros(limit, 'limit');
    const values: Item = { ':now': { S: new Date(this.core.clock.now()).toISOString() } };
    let update = 'SET updatedAt = :now';
    if (limit === null) {
      update += ' REMOVE #w';
    } else {
      update += ', #w = :limit';
      // The explicit "no limit" is a string, so no number comparison can ever mistake it for a limit.
      values[':limit'] = limit === UNLIMITED ? { S: UNLIMITED } : { N: String(limit) };
    }
    try {
      await this.core.client.send(
        new UpdateItemCommand({
          TableName: this.core.budgets,
          Key: marshall({ pk: `limit#${scope}`, sk: 'limits' }),
          UpdateExpression: update,
          ExpressionAttributeNames: { '#w': window },
          ExpressionAttributeValues: values,
        }),
      );
    } catch (err) {
      throw translateError(err);
    }
  }
}
