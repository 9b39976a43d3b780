/**
 * The table layouts, written once: the local launcher creates tables from these definitions and the CDK data
 * stack declares the same keys and indexes from them, so local and deployed tables cannot drift.
 *
 * keys      pk keyId                                  GSI byUser (userId, createdAt), byStatus (status, keyId)
 * budgets   pk/sk, one table for everything admitted atomically:
 *             ctr#<scope>[#s<n>] / <windowKey>        spend counters (committed = spent + reserved), TTL
 *             limit#<scope>      / limits             spend limits by window
 *             rl#<keyId>         / requests|tokens    GCRA token buckets (tat in µs), TTL
 *             hold#<n>           / <expiresAt>#<id>   reservations, sharded, sorted by expiry for the sweeper
 *             circuit#<scope>[#s<n>] / state         open circuits, checked by reserve (guardrails-store.ts)
 *             loop#<keyId>       / <fingerprint>      loop guard counts and failure streak
 *             alert…, circuits, killswitch            alerts (dedupe, spacing, log, outbox), kill switch state
 * usage     pk day#<date>#<d> / sk <userId>#<iso>#<requestId>   one record per request, TTL, no index written:
 *             d = (hash(userId) + n) mod USAGE_DAY_SHARDS, n = hash(requestId) mod USAGE_SCOPE_SHARDS, so a day's
 *             records spread over 16 partitions and one user's over 8 of them (at 1,000 req/s of one user, one
 *             partition key would take every record, at DynamoDB's 1,000 WCU/s per-partition limit). A record's
 *             keys follow from the record alone, so the sweeper's 'abandoned' record and a late settle's
 *             replacement are one item. A user's report reads its 8 partitions a day by sk prefix; findRequest
 *             one a day; reports by key, org and of everything every partition of each day (usage-store.ts).
 *             One write unit a record (was 2 with GSI byDay). GSI byDay (dayPk) and the `user#<id>[#<n>]`
 *             partitions hold the records of the layouts before, read until their TTL.
 * byok      pk userId / sk provider                   encrypted provider keys (envelope, see core/byok)
 * audit     pk audit#<day> / sk <iso>#<requestId>     who changed what through /admin (GSI byActor), TTL
 * runs      pk runId                                 agent runs: status, steps, tokens, cost, result, TTL
 * cache     pk entry#<hash> / sk answer               cached answers (gzip), per tenant, TTL (core/cache)
 *           pk stats#<day>  / sk all                  daily cache hits, savings and fallbacks, TTL
 * reconcile pk day#<date>   / sk <provider>#<model>   billing drift: ledger vs provider report (core/reconcile)
 */

export type AttributeType = 'S' | 'N';

export interface IndexDefinition {
  readonly indexName: string;
  readonly partitionKey: { readonly name: string; readonly type: AttributeType };
  readonly sortKey?: { readonly name: string; readonly type: AttributeType };
}

export interface TableDefinition {
  /** Logical name, also the suffix of the physical table name. */
  readonly id: 'keys' | 'budgets' | 'usage' | 'byok' | 'audit' | 'runs' | 'cache' | 'reconcile';
  readonly partitionKey: { readonly name: string; readonly type: AttributeType };
  readonly sortKey?: { readonly name: string; readonly type: AttributeType };
  readonly globalIndexes: readonly IndexDefinition[];
  /**
   * Indexes no item written by this version carries the keys of, and no reader uses: the CDK data stack still
   * declares them so that a deployed table loses at most one index per CloudFormation update (DynamoDB's rule);
   * a later release drops them one at a time (docs/deploy-lifecycle.md). New local tables do not get them.
   */
  readonly retiredIndexes?: readonly IndexDefinition[];
  /** Attribute holding the DynamoDB TTL (epoch seconds), if any. */
  readonly ttlAttribute?: string;
}

export const KEYS_TABLE: TableDefinition = {
  id: 'keys',
  partitionKey: { name: 'keyId', type: 'S' },
  globalIndexes: [
    { indexName: 'byUser', partitionKey: { name: 'userId', type: 'S' }, sortKey: { name: 'createdAt', type: 'S' } },
    { indexName: 'byStatus', partitionKey: { name: 'status', type: 'S' }, sortKey: { name: 'keyId', type: 'S' } },
  ],
};

export const BUDGETS_TABLE: TableDefinition = {
  id: 'budgets',
  partitionKey: { name: 'pk', type: 'S' },
  sortKey: { name: 'sk', type: 'S' },
  globalIndexes: [],
  ttlAttribute: 'ttl',
};

export const USAGE_TABLE: TableDefinition = {
  id: 'usage',
  partitionKey: { name: 'pk', type: 'S' },
  sortKey: { name: 'sk', type: 'S' },
  // byDay (dayPk) holds only records of the layout before day partitions (this version writes no dayPk) and is
  // read until they expire: a release at least the usage retention after this one retires it. byOrg (orgPk) was
  // dropped by the release that stopped writing it; byKey (keyPk) goes with the next one.
  globalIndexes: [{ indexName: 'byDay', partitionKey: { name: 'dayPk', type: 'S' }, sortKey: { name: 'sk', type: 'S' } }],
  retiredIndexes: [{ indexName: 'byKey', partitionKey: { name: 'keyPk', type: 'S' }, sortKey: { name: 'sk', type: 'S' } }],
  ttlAttribute: 'ttl',
};

export const BYOK_TABLE: TableDefinition = {
  id: 'byok',
  partitionKey: { name: 'userId', type: 'S' },
  sortKey: { name: 'provider', type: 'S' },
  globalIndexes: [],
};


/** The audit log of admin changes (who changed what through /admin), with a TTL. */
export const AUDIT_TABLE: TableDefinition = {
  id: 'audit',
  partitionKey: { name: 'pk', type: 'S' },
  sortKey: { name: 'sk', type: 'S' },
  globalIndexes: [
    { indexName: 'byActor', partitionKey: { name: 'actor', type: 'S' }, sortKey: { name: 'sk', type: 'S' } },
  ],
  ttlAttribute: 'ttl',
};

/**
 * Agent runs: one item per run, written by the gateway (queued) and the agent worker (progress, final
 * status), with a `version` for optimistic concurrency and a TTL.
 */
export const RUNS_TABLE: TableDefinition = {
  id: 'runs',
  partitionKey: { name: 'runId', type: 'S' },
  globalIndexes: [],
  ttlAttribute: 'ttl',
};

/**
 * The response cache (core/cache): one item per cached answer, keyed by a hash of tenant + normalized request,
 * and one item per day of cache and fallback counters; everything expires with DynamoDB TTL.
 */
export const CACHE_TABLE: TableDefinition = {
  id: 'cache',
  partitionKey: { name: 'pk', type: 'S' },
  sortKey: { name: 'sk', type: 'S' },
  globalIndexes: [],
  ttlAttribute: 'ttl',
};

/** Billing reconciliation (core/reconcile): one item per day, provider and model with the drift found. */
export const RECONCILE_TABLE: TableDefinition = {
  id: 'reconcile',
  partitionKey: { name: 'pk', type: 'S' },
  sortKey: { name: 'sk', type: 'S' },
  globalIndexes: [],
  ttlAttribute: 'ttl',
};

export const TABLES: readonly TableDefinition[] = [
  KEYS_TABLE,
  BUDGETS_TABLE,
  USAGE_TABLE,
  BYOK_TABLE,
  AUDIT_TABLE,
  RUNS_TABLE,
  CACHE_TABLE,
  RECONCILE_TABLE,
];

/** Physical table names, passed to adapters as constructor arguments (never read from env inside them). */
export interface TableNames {
  readonly keys: string;
  readonly budgets: string;
  readonly usage: string;
  readonly byok: string;
  /** The admin audit log. */
  readonly audit: string;
  /** Agent runs. */
  readonly runs: string;
  /** Cached answers and daily cache/fallback counters. */
  readonly cache: string;
  /** Billing drift per day, provider and model. */
  readonly reconcile: string;
}

/**
 * Number of partitions a day of usage records is spread over (`day#<date>#<d>`; records of the layout before
 * used the same count in GSI byDay, d = hash(requestId) mod this). A day takes every record of the platform: at
 * 5,000 req/s, 4 partitions took 1,333 WCU/s on the busiest (1.33× DynamoDB's per-partition limit), 16 take about
 * a quarter of that (`npm run bench:usage-shards -- 5000`). A user's records take USAGE_SCOPE_SHARDS consecutive
 * ones from hash(userId), so this must be at least USAGE_SCOPE_SHARDS. Changing it moves where readers look for a
 * record of this layout, so treat it as part of the table layout (a change needs a migration).
 */
export const USAGE_DAY_SHARDS = 16;

/**
 * Number of partitions of a day each user's usage records are spread over: shard n = hash(requestId) mod this
 * of user u is in `day#<date>#<(hash(u) + n) mod USAGE_DAY_SHARDS>`.
 *
 * 8: one usage record is one write (under 1 KB), and DynamoDB allows 1,000 WCU/s per partition, so one user at
 * 1,000 req/s writes 125 WCU/s per partition — 8× under the limit, which leaves room for records up to 2 KB,
 * other users' records in the same partitions, and bursts. A user's report pays one Query per shard and day (run
 * in parallel); findRequest reads one shard a day. Changing it moves where findRequest and a late settle look for
 * a record, so treat it as part of the table layout (a change needs a migration).
 */
export const USAGE_SCOPE_SHARDS = 8;
/**
 * Partitions the per-request holds are spread over (`hold#<n>`, n = hash(requestId) mod this). Every reserve
 * that holds on its own puts one and its settle deletes it (both in transactions: 2 WCU per KB each), so at
 * 5,000 req/s of one org 64 shards keep each partition near 300 WCU/s, under DynamoDB's 1,000. The sweeper
 * queries every shard; a hold's shard is recomputed from its request id by the same code that wrote it.
 */
export const HOLD_SHARDS = 64;
