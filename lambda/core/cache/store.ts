/**
 * The response cache's storage contract (DynamoDB adapter: lambda/store/dynamodb/cache-store.ts) and the
 * daily savings counters kept beside it.
 */
import type { MicroUsd } from '../money';

/** One stored answer. `body` is the answer as the caller received it: JSON text, or the SSE bytes of a stream. */
export interface CachedAnswer {
  readonly key: string;
  readonly tenant: string;
  readonly kind: 'json' | 'sse';
  readonly body: Uint8Array;
  /** `provider/model` that produced it. */
  readonly model: string;
  /** What the original request was billed: a hit saves this much. */
  readonly costMicros: MicroUsd;
  /** ms epoch. */
  readonly storedAt: number;
  readonly expiresAt: number;
}

/** Increments of one day's counters. */
export interface SavingsDelta {
  readonly cacheHits?: number;
  readonly cacheMisses?: number;
  readonly cacheStores?: number;
  /** Answers not stored because they did not fit in an item. */
  readonly cacheSkipped?: number;
  readonly savedMicros?: MicroUsd;
  /** Requests answered by a later model of their rule's list after a provider failure. */
  readonly fallbacks?: number;
  /** Requests served by the rule's cheaper model because of a budget tier. */
  readonly downgrades?: number;
  /** What the requests served by fallback or downgrade cost. */
  readonly fallbackCostMicros?: MicroUsd;
}

export type SavingsDay = Required<SavingsDelta> & { readonly day: string };

export interface CacheStore {
  /** The unexpired answer stored under a key, if any. */
  get(key: string, now: number): Promise<CachedAnswer | undefined>;
  /** Stores an answer; resolves false (storing nothing) when it does not fit in one item. */
  put(answer: CachedAnswer): Promise<boolean>;
  /**
   * Request collapsing: claims `key` for `holder` until `until` (ms epoch) unless another holder's unexpired
   * claim is there; true when this holder has it. Optional: a store without it collapses nothing.
   */
  claim?(key: string, holder: string, now: number, until: number): Promise<boolean>;
  /** Whether an unexpired claim on `key` is there. */
  claimed?(key: string, now: number): Promise<boolean>;
  /** Drops `holder`'s claim on `key` (another holder's is left alone). */
  release?(key: string, holder: string): Promise<void>;
  /** Adds to one day's counters (`YYYY-MM-DD`). */
  addSavings(day: string, delta: SavingsDelta): Promise<void>;
  /** The counters of the given days (days without any are zeros). */
  readSavings(days: readonly string[]): Promise<SavingsDay[]>;
}
