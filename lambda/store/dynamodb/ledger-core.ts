/**
 * What every part of the ledger shares: the client and its tables, the clock and the waits, the options, and the
 * two bulk calls to the budgets table: one transaction (re-tried while only conflicts cancel it; a throttled one
 * is the store being unavailable, 503) and batch reads (unprocessed keys asked again).
 */
import { type AttributeValue, BatchGetItemCommand, type CancellationReason, type DynamoDBClient, type TransactWriteItem, TransactWriteItemsCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { type Clock, systemClock } from '../../core/clock';
import { StoreUnavailableError } from '../../core/errors';
import { errorName, translateError } from './client';
import type { PoolOptions } from './pools';
import type { TableNames } from './schema';

export type Item = Record<string, AttributeValue>;

export interface DynamoDbLedgerOptions {
  /** Uses `budgets` (counters, limits, buckets, holds) and `usage` (records written by settle and sweep). */
  readonly tables: Pick<TableNames, 'budgets' | 'usage'>;
  /** How many counter items the platform budget is spread over; readCounters sums them all. */
  readonly platformShards: number;
  /** Retention (TTL) of the usage records this ledger writes. */
  readonly usageRetentionDays: number;
  /** @default the system clock */
  readonly clock?: Clock;
  /**
   * Usage records of leased requests go out in BatchWriteItem calls (up to 25 records). Off on Lambda, whose
   * role may not batch-write (one request per instance: there is nothing to batch); on for the local server.
   * @default false
   */
  readonly batchUsageWrites?: boolean;
  /** How the ledger waits between retries (a simulation passes virtual time). @default real timers */
  readonly sleep?: (ms: number) => Promise<void>;
  /**
   * Scope pools (pools.ts) for keys busy across many instances (the gateway passes its configuration: on by
   * default); absent or false: every request reserves on its own. Grants of pools are released by the sweeper
   * whatever this says. @default false
   */
  readonly pools?: PoolOptions | false;
  /**
   * Allowance pools of the shared scopes (org and platform): every request of a shared scope takes its part
   * from one of the scope's pool items with one conditional write instead of writing the scope's counters, which
   * only the pools' grants write (see "Shared scopes" at the top). Absent or false: shared scopes are reserved
   * with each request's own transaction, as a key's and a user's are. @default false
   */
  readonly sharedPools?: PoolOptions | false;
  /**
   * How long a reserve refused only for room that requests in flight and pools' grants hold waits for it,
   * from its first such refusal (room-wait.ts); 0: refused at once. @default 2000
   */
  readonly roomWaitMs?: number;
}

/** DynamoDB's limit on items per TransactWriteItems. */
export const MAX_TRANSACTION_ITEMS = 100;
/** Re-tries of a transaction cancelled only by TransactionConflict (another transaction on the same item). */
const MAX_CONFLICT_RETRIES = 10;
const BATCH_GET_LIMIT = 100;
export const BATCH_WRITE_LIMIT = 25;
/** Bound on this instance's hint maps (GCRA branch hints, busy marks, shared reads). */
export const MAX_HINTS = 10_000;
export const DAY_S = 86_400;

/** The client, tables, clock and waits every part of the ledger uses, and its two bulk calls. */
export class LedgerCore {
  readonly budgets: string;
  readonly usage: string;
  readonly platformShards: number;
  readonly usageRetentionDays: number;
  readonly clock: Clock;
  readonly batchUsageWrites: boolean;
  readonly sleep: (ms: number) => Promise<void>;
  /** Last tat (µs) this instance wrote or saw per bucket: picks the GCRA branch to try first. */
  readonly tatHints = new Map<string, number>();
  /** The tat (µs) a bucket's refusal here read, until a charge could pass again (reserve.ts refuseRateLimited). */
  readonly rateRefusals = new Map<string, number>();

  constructor(
    readonly client: DynamoDBClient,
    options: DynamoDbLedgerOptions,
  ) {
    if (!Number.isInteger(options.platformShards) || options.platformShards < 1) {
      throw new RangeError(`platformShards must be a positive whole number, got ${options.platformShards}`);
    }
    this.budgets = options.tables.budgets;
    this.usage = options.tables.usage;
    this.platformShards = options.platformShards;
    this.usageRetentionDays = options.usageRetentionDays;
    this.clock = options.clock ?? systemClock;
    this.batchUsageWrites = options.batchUsageWrites ?? false;
    this.sleep = options.sleep ?? sleep;
  }

  /**
   * Runs one transaction, re-trying (with jittered backoff) while it is cancelled only by conflicts with
   * other transactions. Resolves undefined on success, or the cancellation reasons (one per item) when a
   * condition failed. Anything else is translated and thrown.
   */
  async transact(items: TransactWriteItem[], onConflict?: (reasons: readonly CancellationReason[]) => void): Promise<CancellationReason[] | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.client.send(new TransactWriteItemsCommand({ TransactItems: items }));
        return undefined;
      } catch (err) {
        if (errorName(err) !== 'TransactionCanceledException') throw translateError(err);
        const reasons = (err as { CancellationReasons?: CancellationReason[] }).CancellationReasons ?? [];
        // A hot partition over its throughput cancels the transaction (the SDK does not retry that): nothing
        // was written and spend cannot be verified now, so it is the store being unavailable (503), not a bug.
        if (reasons.some((r) => r.Code === 'ThrottlingError' || r.Code === 'ProvisionedThroughputExceeded')) {
          throw new StoreUnavailableError('The gateway cannot record this request right now; try again shortly.', {
            code: 'store_unavailable',
            headers: { 'Retry-After': '1' },
            cause: err,
          });
        }
        const onlyConflicts =
          reasons.some((r) => r.Code === 'TransactionConflict') &&
          reasons.every((r) => r.Code === undefined || r.Code === 'None' || r.Code === 'TransactionConflict');
        if (!onlyConflicts) return reasons;
        if (attempt === 0) onConflict?.(reasons);
        if (attempt >= MAX_CONFLICT_RETRIES) {
          throw new StoreUnavailableError('The gateway is too busy to record this request; try again shortly.', {
            code: 'store_contention',
            headers: { 'Retry-After': '1' },
            cause: err,
          });
        }
        await this.sleep(Math.random() * Math.min(200, 10 * 2 ** attempt));
      }
    }
  }

  /** BatchGetItem over `keys` of the budgets table, 100 at a time, re-asking for unprocessed keys. */
  async batchGet(keys: ReadonlyArray<{ pk: string; sk: string }>): Promise<Item[]> {
    const out: Item[] = [];
    try {
      for (let i = 0; i < keys.length; i += BATCH_GET_LIMIT) {
        let pending: Item[] = keys.slice(i, i + BATCH_GET_LIMIT).map((k) => marshall(k));
        for (let attempt = 0; pending.length; attempt++) {
          if (attempt > 0) await this.sleep(Math.min(500, 20 * 2 ** attempt));
          if (attempt > 8) throw new StoreUnavailableError('The gateway cannot read its budgets right now.');
          const page = await this.client.send(
            new BatchGetItemCommand({ RequestItems: { [this.budgets]: { Keys: pending, ConsistentRead: true } } }),
          );
          out.push(...(page.Responses?.[this.budgets] ?? []));
          pending = page.UnprocessedKeys?.[this.budgets]?.Keys ?? [];
        }
      }
    } catch (err) {
      throw translateError(err);
    }
    return out;
  }

  rememberTat(key: string, tat: number | undefined): void {
    if (tat === undefined) {
      this.tatHints.delete(key);
      return;
    }
    if (this.tatHints.size >= MAX_HINTS && !this.tatHints.has(key)) this.tatHints.clear();
    this.tatHints.set(key, tat);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function assertMicros(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative whole number of micro-USD, got ${value}`);
  }
}

export function assertTransactionSize(count: number, what: string): void {
  if (count > MAX_TRANSACTION_ITEMS) {
    throw new RangeError(`${what} needs ${count} items in one transaction; DynamoDB allows ${MAX_TRANSACTION_ITEMS}`);
  }
}
