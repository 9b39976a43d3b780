/**
 * DynamoDB's per-item rules, imposed in virtual time around a real DynamoDB Local (bench:scale).
 *
 * DynamoDB Local evaluates every condition expression and stores every item, but it answers at the speed of
 * a JVM on this machine and knows nothing of what makes DynamoDB itself push back under load. This SDK
 * middleware (at the `initialize` step, above the SDK's own retries) adds that, per call, in virtual time:
 *
 *   latency     every call takes a sampled log-normal virtual latency (single item, batch, transaction)
 *   conflicts   a TransactWriteItems holds its items for its whole virtual interval; another
 *               TransactWriteItems touching any of them (ConditionCheck items included) is cancelled with
 *               TransactionCanceledException, reason `TransactionConflict` on the contested items; a
 *               single-item write to a held item fails with TransactionConflictException
 *   throughput  a token bucket of `writeUnitsPerSecond` WCU and `readUnitsPerSecond` RCU per partition key
 *               value with 100 ms of burst (no split for heat: conservative), GSI partitions too. WCU = ⌈size / 1 KB⌉, twice that
 *               in a transaction; RCU = ⌈size / 4 KB⌉ for a consistent read, half that otherwise. Over the
 *               limit: a transaction is cancelled with reason `ThrottlingError` (the SDK does not retry it); a
 *               single-item or batch call gets ProvisionedThroughputExceededException, which the SDK's
 *               standard retry strategy backs off and retries (emulated here in virtual time: up to
 *               `sdkMaxAttempts`, random × min(1 s × 2ⁿ, 20 s) apart, as @smithy/core's retry does)
 *
 * The real call to DynamoDB Local is made at the call's virtual start (its effects are then visible to calls
 * that start later, which real DynamoDB's serializability allows) and its answer is handed out at the virtual
 * end. A call stopped by the physics never reaches DynamoDB Local: nothing is written.
 */
import {
  ProvisionedThroughputExceededException,
  TransactionCanceledException,
  TransactionConflictException,
  type AttributeValue,
  type CancellationReason,
  type DynamoDBClient,
  type TransactWriteItem,
} from '@aws-sdk/client-dynamodb';
import type { TableDefinition } from '../../lambda/store/dynamodb/schema';
import { logNormal, type VirtualScheduler } from './virtual-time';

type Item = Record<string, AttributeValue>;

/** Median and 99th percentile of a call's virtual latency, in ms. */
export interface LatencyFigure {
  readonly median: number;
  readonly p99: number;
}

export interface PhysicsOptions {
  readonly scheduler: VirtualScheduler;
  /** Uniform [0, 1) source for latencies and backoff (seed it for a repeatable run). */
  readonly random: () => number;
  /** Physical table name → its definition (key attributes and GSIs). */
  readonly tables: ReadonlyMap<string, TableDefinition>;
  /** @default { single: 4/12 ms, batch: 6/18 ms, transaction: 12/40 ms } (see docs/scale-simulation.md) */
  readonly latency?: Partial<Record<CallKind, LatencyFigure>>;
  /** @default 1000 */
  readonly writeUnitsPerSecond?: number;
  /** @default 3000 */
  readonly readUnitsPerSecond?: number;
  /**
   * Share of a transaction's virtual latency during which it holds its items (the rest is the network and the
   * request router). @default 1 (the whole call: conservative)
   */
  readonly holdShare?: number;
  /** Seconds of unused capacity a partition keeps for a burst. @default {@link DEFAULT_BURST_SECONDS} */
  readonly burstSeconds?: number;
  /** Attempts the emulated SDK makes on a throttled single-item or batch call. @default 4 (the client's in AWS) */
  readonly sdkMaxAttempts?: number;
  /**
   * Reads an item as DynamoDB Local holds it (outside the physics). When given, the physics learns an updated
   * item's size after each update, so its writes are billed as DynamoDB bills them: the larger of the item's
   * size before and after, per started KB (a failed conditional update: the item's size). Without it an update
   * is sized by its key and values alone, which undercounts items that grow (a pool item's markers).
   */
  readonly readItem?: (table: string, key: Item) => Promise<Item | undefined>;
}

export type CallKind = 'single' | 'batch' | 'transaction';

export const DEFAULT_LATENCY: Record<CallKind, LatencyFigure> = {
  single: { median: 4, p99: 12 },
  batch: { median: 6, p99: 18 },
  transaction: { median: 12, p99: 40 },
};

/** What one partition saw over the run. */
export interface PartitionStats {
  /** `table:pk` or `table/index:pk`. */
  readonly partition: string;
  writeUnits: number;
  /** Item writes that consumed capacity here (a transaction's item, a single write, a GSI entry). */
  writes: number;
  readUnits: number;
  /** Calls refused because this partition had no capacity left. */
  throttles: number;
  /** Highest write units consumed within one virtual second (fixed one-second windows). */
  peakWriteUnitsPerSecond: number;
  /** Highest read units consumed within one virtual second. */
  peakReadUnitsPerSecond: number;
}

/** Counts over the run, for the report. */
export interface PhysicsStats {
  /** Calls made, by command (every SDK call, whatever became of it). */
  calls: Record<string, number>;
  /** Calls DynamoDB Local answered without error, by command (what reached the table). */
  succeeded: Record<string, number>;
  /** Transactions cancelled because another transaction held one of their items. */
  transactionConflicts: number;
  /** Single-item writes refused because a transaction held the item. */
  itemConflicts: number;
  /** Transactions cancelled for throughput (ThrottlingError). */
  throttledTransactions: number;
  /** Single-item/batch attempts refused for throughput (each SDK attempt counts). */
  throttledCalls: number;
  /** Single-item/batch calls that failed after the SDK's last attempt. */
  throttleFailures: number;
}

interface Touch {
  /** Item identity: `table\u0000pk\u0000sk`. */
  readonly item: string;
  readonly partitions: ReadonlyArray<{ readonly id: string; readonly units: number }>;
  readonly write: boolean;
}

interface Bucket {
  tokens: number;
  at: number;
  readonly stats: PartitionStats;
  second: number;
  writesThisSecond: number;
  readsThisSecond: number;
}

/**
 * Unused capacity a partition keeps for a burst: 100 ms worth, so no one-second window sees more than 1.1× the
 * limit (DynamoDB's own burst capacity is a table-level allowance, not a partition's).
 */
export const DEFAULT_BURST_SECONDS = 0.1;

const WRITE_COMMANDS = new Set(['PutItemCommand', 'UpdateItemCommand', 'DeleteItemCommand']);

/** DynamoDB's rules for one simulated region; install it on every client the simulation uses. */
export class DynamoPhysics {
  readonly stats: PhysicsStats = {
    calls: {},
    succeeded: {},
    transactionConflicts: 0,
    itemConflicts: 0,
    throttledTransactions: 0,
    throttledCalls: 0,
    throttleFailures: 0,
  };
  private readonly latency: Record<CallKind, LatencyFigure>;
  private readonly wcu: number;
  private readonly rcu: number;
  private readonly sdkMaxAttempts: number;
  private readonly burst: number;
  /** Items held by transactions in flight → the virtual time they are released. */
  private readonly held = new Map<string, number>();
  private readonly buckets = new Map<string, { write: Bucket; read: Bucket }>();
  /** Last known size (bytes) of items written with a Put (or, with `readItem`, updated), for later writes' capacity. */
  private readonly sizes = new Map<string, number>();

  constructor(private readonly options: PhysicsOptions) {
    this.latency = { ...DEFAULT_LATENCY, ...options.latency };
    this.wcu = options.writeUnitsPerSecond ?? 1000;
    this.rcu = options.readUnitsPerSecond ?? 3000;
    this.sdkMaxAttempts = options.sdkMaxAttempts ?? 4;
    this.burst = options.burstSeconds ?? DEFAULT_BURST_SECONDS;
  }

  /** Adds the rules to `client` (above its retry middleware, so its real retries only see DynamoDB Local). */
  install(client: DynamoDBClient): void {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const name = (context as { commandName?: string }).commandName ?? 'Unknown';
        const input = args.input as Record<string, unknown>;
        return this.call(name, input, () => next(args)) as never;
      },
      { step: 'initialize', name: 'dynamoPhysics', priority: 'high' },
    );
  }

  /** Capacity units consumed in all (every partition, GSIs included): what on-demand DynamoDB bills. */
  totalUnits(): { readonly write: number; readonly read: number } {
    let write = 0;
    let read = 0;
    for (const pair of this.buckets.values()) {
      write += pair.write.stats.writeUnits;
      read += pair.write.stats.readUnits;
    }
    return { write, read };
  }

  /**
   * Write and read units by kind of item: the table (or index) and the partition key's prefix (`budgets:ctr#org`,
   * `budgets:hold`, `budgets:pool`, `budgets:pool#q`, `usage/byDay:day`, …), so a bench can say what each
   * request writes.
   */
  unitsByKind(): Map<string, { write: number; read: number; writes: number }> {
    const out = new Map<string, { write: number; read: number; writes: number }>();
    for (const pair of this.buckets.values()) {
      const { partition, writeUnits, readUnits, writes } = pair.write.stats;
      const colon = partition.indexOf(':');
      const table = partition.slice(0, colon).replace(/^.*-(?=[a-z]+(\/|$))/, '');
      const key = partition.slice(colon + 1);
      // A key without a prefix (the keys table's key ids) is one kind per table, not one per item. A scope's items
      // (counters, buckets, velocity, circuits) by the scope's kind (`budgets:ctr#org`), a quiet key's pool item
      // apart from the other pools (`budgets:pool#q`).
      const prefix = key.split(/[#:]/)[0]!;
      const scopeKind = /^(ctr|vel|circuit)#(key|user|org|platform|team)\b/.exec(key)?.[2];
      const kind = !/[#:]/.test(key) ? `${table}:*` : scopeKind ? `${table}:${prefix}#${scopeKind}` : prefix === 'pool' && key.endsWith('#q') ? `${table}:pool#q` : `${table}:${prefix}`;
      const row = out.get(kind) ?? { write: 0, read: 0, writes: 0 };
      row.write += writeUnits;
      row.read += readUnits;
      row.writes += writes;
      out.set(kind, row);
    }
    return out;
  }

  /** Partitions by write units consumed, hottest first. */
  hotPartitions(limit: number): PartitionStats[] {
    return [...this.buckets.values()]
      .map((b) => b.write.stats)
      .sort((a, b) => b.peakWriteUnitsPerSecond - a.peakWriteUnitsPerSecond || b.throttles - a.throttles)
      .slice(0, limit);
  }

  private async call<T>(name: string, input: Record<string, unknown>, real: () => Promise<T>): Promise<T> {
    const { scheduler } = this.options;
    this.stats.calls[name] = (this.stats.calls[name] ?? 0) + 1;
    if (name === 'TransactWriteItemsCommand') return this.transaction(input.TransactItems as TransactWriteItem[], real);
    const kind: CallKind = name.startsWith('Batch') || name === 'QueryCommand' ? 'batch' : 'single';
    for (let attempt = 1; ; attempt++) {
      const start = scheduler.now();
      const end = start + this.sample(kind);
      const touches = this.touchesOf(name, input);
      if (WRITE_COMMANDS.has(name) && touches.some((t) => this.isHeld(t.item, start))) {
        this.stats.itemConflicts++;
        await scheduler.sleepUntil(end);
        throw new TransactionConflictException({
          message: 'Transaction is ongoing for the item',
          $metadata: { httpStatusCode: 400, attempts: attempt },
        });
      }
      if (!this.consume(touches, start)) {
        this.stats.throttledCalls++;
        await scheduler.sleepUntil(end);
        if (attempt >= this.sdkMaxAttempts) {
          this.stats.throttleFailures++;
          throw new ProvisionedThroughputExceededException({
            message:
              'The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.',
            $metadata: { httpStatusCode: 400, attempts: attempt },
          });
        }
        // The SDK's standard retry strategy: random × min(base × 2^retries, 20 s), base 1 s for throttling.
        await scheduler.sleep(Math.floor(this.options.random() * Math.min(1_000 * 2 ** (attempt - 1), 20_000)));
        continue;
      }
      this.remember(name, input);
      const out = await this.answerAt(end, name === 'UpdateItemCommand' && this.options.readItem ? () => this.learningSize(input, touches[0]!, start, real) : real);
      this.stats.succeeded[name] = (this.stats.succeeded[name] ?? 0) + 1;
      return out;
    }
  }

  private async transaction<T>(items: readonly TransactWriteItem[], real: () => Promise<T>): Promise<T> {
    const { scheduler } = this.options;
    const start = scheduler.now();
    const end = start + this.sample('transaction');
    const touches = items.map((item) => this.transactTouch(item));
    const contested = touches.map((t) => this.isHeld(t.item, start));
    if (contested.some(Boolean)) {
      this.stats.transactionConflicts++;
      await scheduler.sleepUntil(end);
      throw cancelled(contested.map((c) => (c ? { Code: 'TransactionConflict', Message: 'Transaction is ongoing for the item' } : { Code: 'None' })));
    }
    const throttled = this.consumeReporting(touches, start);
    if (throttled) {
      this.stats.throttledTransactions++;
      await scheduler.sleepUntil(end);
      throw cancelled(
        touches.map((t) =>
          t.partitions.some((p) => throttled.has(p.id))
            ? { Code: 'ThrottlingError', Message: 'Throughput exceeds the current capacity of your table or index.' }
            : { Code: 'None' },
        ),
      );
    }
    const heldUntil = start + (end - start) * (this.options.holdShare ?? 1);
    for (const t of touches) this.held.set(t.item, heldUntil);
    for (const item of items) if (item.Put) this.rememberPut(item.Put.TableName, item.Put.Item);
    const learn = this.options.readItem ? items.map((item, i) => ({ item, touch: touches[i]! })).filter((x) => x.item.Update) : [];
    try {
      const out = await this.answerAt(
        end,
        learn.length
          ? async () => {
              const value = await real();
              for (const { item, touch } of learn) await this.learnSize(item.Update!.TableName, item.Update!.Key, touch, start, 2, await this.readBack(item.Update!.TableName, item.Update!.Key));
              return value;
            }
          : real,
      );
      this.stats.succeeded.TransactWriteItemsCommand = (this.stats.succeeded.TransactWriteItemsCommand ?? 0) + 1;
      return out;
    } finally {
      for (const t of touches) if (this.held.get(t.item) === heldUntil) this.held.delete(t.item);
    }
  }

  /**
   * A single UpdateItem that learns the item's size after it (from its returned item when it asked for the
   * whole item, else by reading it back), billing the difference when the item grew past what was charged.
   */
  private async learningSize<T>(input: Record<string, unknown>, touch: Touch, at: number, real: () => Promise<T>): Promise<T> {
    const table = input.TableName as string;
    const key = input.Key as Item;
    try {
      const out = await real();
      const attributes = (out as { Attributes?: Item }).Attributes;
      await this.learnSize(table, key, touch, at, 1, input.ReturnValues === 'ALL_NEW' && attributes ? attributes : await this.readBack(table, key));
      return out;
    } catch (err) {
      const old = (err as { Item?: Item }).Item;
      // A failed condition leaves the item as it was (its returned ALL_OLD item, when asked for).
      await this.learnSize(table, key, touch, at, 1, old ?? (await this.readBack(table, key)));
      throw err;
    }
  }

  private async readBack(table: string | undefined, key: Item | undefined): Promise<Item | undefined> {
    if (!table || !key || !this.options.readItem) return undefined;
    try {
      return await this.options.readItem(table, key);
    } catch {
      return undefined;
    }
  }

  /** Records an item's size after a write; units the write owed beyond what it was charged are billed now. */
  private learnSize(table: string | undefined, key: Item | undefined, touch: Touch, at: number, factor: number, after: Item | undefined): Promise<void> {
    if (!table || !key || !after) return Promise.resolve();
    const size = itemSize(after);
    this.sizes.set(touch.item, size);
    const owed = Math.max(1, Math.ceil(size / 1024)) * factor - (touch.partitions[0]?.units ?? 0);
    const partition = touch.partitions[0];
    if (owed > 0 && partition) {
      // Billed (and taken from the partition's capacity), never throttled: the write has happened.
      const bucket = this.bucket(partition.id, true, at);
      bucket.tokens -= owed;
      bucket.stats.writeUnits += owed;
      bucket.writesThisSecond += owed;
      bucket.stats.peakWriteUnitsPerSecond = Math.max(bucket.stats.peakWriteUnitsPerSecond, bucket.writesThisSecond);
    }
    return Promise.resolve();
  }

  /** Makes the real call now; hands its answer (or error) out at virtual time `end`. */
  private async answerAt<T>(end: number, real: () => Promise<T>): Promise<T> {
    const { scheduler } = this.options;
    let outcome: { ok: true; value: T } | { ok: false; error: unknown };
    try {
      outcome = { ok: true, value: await scheduler.real(end, real()) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    await scheduler.sleepUntil(end);
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }

  private sample(kind: CallKind): number {
    const f = this.latency[kind];
    return Math.max(0.5, logNormal(this.options.random, f.median, f.p99));
  }

  private isHeld(item: string, at: number): boolean {
    const until = this.held.get(item);
    return until !== undefined && until > at;
  }

  /** Consumes capacity for all touches, or none; false when a partition is out of capacity. */
  private consume(touches: readonly Touch[], at: number): boolean {
    return this.consumeReporting(touches, at) === undefined;
  }

  /** Like {@link consume}; returns the throttled partitions instead of false. */
  private consumeReporting(touches: readonly Touch[], at: number): Set<string> | undefined {
    const need = new Map<string, { units: number; write: boolean; count: number }>();
    for (const t of touches) {
      for (const p of t.partitions) {
        const key = `${t.write ? 'w' : 'r'}\u0000${p.id}`;
        const prev = need.get(key);
        need.set(key, { units: (prev?.units ?? 0) + p.units, write: t.write, count: (prev?.count ?? 0) + 1 });
      }
    }
    const throttled = new Set<string>();
    for (const [key, n] of need) {
      const id = key.slice(2);
      const bucket = this.bucket(id, n.write, at);
      if (bucket.tokens < n.units) {
        throttled.add(id);
        bucket.stats.throttles++;
      }
    }
    if (throttled.size > 0) return throttled;
    for (const [key, n] of need) {
      const id = key.slice(2);
      const bucket = this.bucket(id, n.write, at);
      bucket.tokens -= n.units;
      const second = Math.floor(at / 1000);
      if (second !== bucket.second) {
        bucket.second = second;
        bucket.writesThisSecond = 0;
        bucket.readsThisSecond = 0;
      }
      if (n.write) {
        bucket.stats.writeUnits += n.units;
        bucket.stats.writes += n.count;
        bucket.writesThisSecond += n.units;
        bucket.stats.peakWriteUnitsPerSecond = Math.max(bucket.stats.peakWriteUnitsPerSecond, bucket.writesThisSecond);
      } else {
        bucket.stats.readUnits += n.units;
        bucket.readsThisSecond += n.units;
        bucket.stats.peakReadUnitsPerSecond = Math.max(bucket.stats.peakReadUnitsPerSecond, bucket.readsThisSecond);
      }
    }
    return undefined;
  }

  /** The partition's bucket, refilled for the virtual time passed (up to `burstSeconds` of capacity). */
  private bucket(id: string, write: boolean, at: number): Bucket {
    let pair = this.buckets.get(id);
    if (!pair) {
      const stats: PartitionStats = { partition: id, writeUnits: 0, writes: 0, readUnits: 0, throttles: 0, peakWriteUnitsPerSecond: 0, peakReadUnitsPerSecond: 0 };
      const fresh = (rate: number): Bucket => ({ tokens: rate * this.burst, at, stats, second: Math.floor(at / 1000), writesThisSecond: 0, readsThisSecond: 0 });
      pair = { write: fresh(this.wcu), read: fresh(this.rcu) };
      // One stats object per partition: both buckets report into it.
      this.buckets.set(id, pair);
    }
    const b = write ? pair.write : pair.read;
    const rate = write ? this.wcu : this.rcu;
    if (at > b.at) {
      b.tokens = Math.min(rate * this.burst, b.tokens + ((at - b.at) / 1000) * rate);
      b.at = at;
    }
    return b;
  }

  private transactTouch(item: TransactWriteItem): Touch {
    if (item.Put) return this.writeTouch(item.Put.TableName, this.keyOf(item.Put.TableName, item.Put.Item), 2, item.Put.Item);
    if (item.Update) return this.writeTouch(item.Update.TableName, item.Update.Key, 2, undefined, item.Update.ExpressionAttributeValues);
    if (item.Delete) return this.writeTouch(item.Delete.TableName, item.Delete.Key, 2);
    // A ConditionCheck is part of the transaction's write: it is held, and costs like a write of the item.
    const check = item.ConditionCheck!;
    return this.writeTouch(check.TableName, check.Key, 2);
  }

  private touchesOf(name: string, input: Record<string, unknown>): Touch[] {
    const table = input.TableName as string | undefined;
    switch (name) {
      case 'PutItemCommand':
        return [this.writeTouch(table, this.keyOf(table, input.Item as Item), 1, input.Item as Item)];
      case 'UpdateItemCommand':
        return [this.writeTouch(table, input.Key as Item, 1, undefined, input.ExpressionAttributeValues as Item | undefined)];
      case 'DeleteItemCommand':
        return [this.writeTouch(table, input.Key as Item, 1)];
      case 'GetItemCommand':
        return [this.readTouch(table, input.Key as Item, input.ConsistentRead === true)];
      case 'BatchGetItemCommand': {
        const requests = (input.RequestItems ?? {}) as Record<string, { Keys?: Item[]; ConsistentRead?: boolean }>;
        return Object.entries(requests).flatMap(([t, r]) => (r.Keys ?? []).map((k) => this.readTouch(t, k, r.ConsistentRead === true)));
      }
      case 'BatchWriteItemCommand': {
        const requests = (input.RequestItems ?? {}) as Record<string, Array<{ PutRequest?: { Item: Item }; DeleteRequest?: { Key: Item } }>>;
        return Object.entries(requests).flatMap(([t, rs]) =>
          rs.map((r) => (r.PutRequest ? this.writeTouch(t, this.keyOf(t, r.PutRequest.Item), 1, r.PutRequest.Item) : this.writeTouch(t, r.DeleteRequest!.Key, 1))),
        );
      }
      case 'QueryCommand': {
        // One read unit per query on the queried partition (the bench's queries are rare sweeps).
        const pk = Object.values((input.ExpressionAttributeValues ?? {}) as Item)[0];
        const index = input.IndexName ? `/${String(input.IndexName)}` : '';
        return [{ item: 'query', partitions: [{ id: `${table}${index}:${pk?.S ?? pk?.N ?? '?'}`, units: 1 }], write: false }];
      }
      default:
        return [];
    }
  }

  private writeTouch(table: string | undefined, key: Item | undefined, factor: number, item?: Item, values?: Item): Touch {
    const t = table ?? '?';
    const def = this.options.tables.get(t);
    const pkName = def?.partitionKey.name ?? 'pk';
    const id = itemId(t, key, def);
    const known = this.sizes.get(id) ?? 0;
    const size = Math.max(known, item ? itemSize(item) : itemSize(key ?? {}) + itemSize(values ?? {}));
    const units = Math.max(1, Math.ceil(size / 1024));
    const partitions = [{ id: `${t}:${attr(key?.[pkName])}`, units: units * factor }];
    // A Put writes the GSIs whose key attributes it carries (standard writes, one unit per KB).
    if (item && def) {
      for (const index of def.globalIndexes) {
        const v = item[index.partitionKey.name];
        if (v !== undefined) partitions.push({ id: `${t}/${index.indexName}:${attr(v)}`, units });
      }
    }
    return { item: id, partitions, write: true };
  }

  private readTouch(table: string | undefined, key: Item, consistent: boolean): Touch {
    const t = table ?? '?';
    const def = this.options.tables.get(t);
    const id = itemId(t, key, def);
    const size = this.sizes.get(id) ?? 0;
    const units = Math.max(1, Math.ceil(size / 4096)) * (consistent ? 1 : 0.5);
    return { item: id, partitions: [{ id: `${t}:${attr(key[def?.partitionKey.name ?? 'pk'])}`, units }], write: false };
  }

  private keyOf(table: string | undefined, item: Item | undefined): Item {
    const def = this.options.tables.get(table ?? '?');
    if (!item) return {};
    const key: Item = {};
    const pk = def?.partitionKey.name ?? 'pk';
    if (item[pk]) key[pk] = item[pk];
    const sk = def?.sortKey?.name;
    if (sk && item[sk]) key[sk] = item[sk];
    return key;
  }

  private remember(name: string, input: Record<string, unknown>): void {
    if (name === 'PutItemCommand') this.rememberPut(input.TableName as string, input.Item as Item);
  }

  private rememberPut(table: string | undefined, item: Item | undefined): void {
    if (!item) return;
    const def = this.options.tables.get(table ?? '?');
    this.sizes.set(itemId(table ?? '?', this.keyOf(table, item), def), itemSize(item));
    if (this.sizes.size > 200_000) this.sizes.clear();
  }
}

function cancelled(reasons: CancellationReason[]): TransactionCanceledException {
  return new TransactionCanceledException({
    message: `Transaction cancelled, please refer cancellation reasons for specific reasons [${reasons.map((r) => r.Code ?? 'None').join(', ')}]`,
    $metadata: { httpStatusCode: 400, attempts: 1 },
    CancellationReasons: reasons,
  });
}

function itemId(table: string, key: Item | undefined, def: TableDefinition | undefined): string {
  const pk = def?.partitionKey.name ?? 'pk';
  const sk = def?.sortKey?.name;
  return `${table}\u0000${attr(key?.[pk])}\u0000${sk ? attr(key?.[sk]) : ''}`;
}

function attr(v: AttributeValue | undefined): string {
  if (!v) return '?';
  if (v.S !== undefined) return v.S;
  if (v.N !== undefined) return v.N;
  return JSON.stringify(v);
}

/** DynamoDB's item size: attribute names plus values (numbers ≈ 1 byte per 2 digits + 1; strings UTF-8). */
export function itemSize(item: Item): number {
  let size = 0;
  for (const [name, value] of Object.entries(item)) size += Buffer.byteLength(name) + valueSize(value);
  return size;
}

function valueSize(v: AttributeValue): number {
  if (v.S !== undefined) return Buffer.byteLength(v.S);
  if (v.N !== undefined) return Math.ceil(v.N.replace(/^-/, '').length / 2) + 1;
  if (v.BOOL !== undefined || v.NULL !== undefined) return 1;
  if (v.B !== undefined) return v.B.length;
  if (v.L !== undefined) return 3 + v.L.reduce((s, x) => s + 1 + valueSize(x), 0);
  if (v.M !== undefined) return 3 + Object.entries(v.M).reduce((s, [k, x]) => s + 1 + Buffer.byteLength(k) + valueSize(x), 0);
  if (v.SS !== undefined) return v.SS.reduce((s, x) => s + Buffer.byteLength(x), 0);
  if (v.NS !== undefined) return v.NS.reduce((s, x) => s + Math.ceil(x.length / 2) + 1, 0);
  return 0;
}
