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
 * usage     pk user#<id> / sk <iso>#<requestId>         GSI byKey (keyPk, sk), byOrg (orgPk, sk),
 *                                                     byDay (dayPk = day#<date>#<n>, sk), TTL
 * byok      pk userId / sk provider                   (identity issue)
 */

export type AttributeType = 'S' | 'N';

export interface IndexDefinition {
  readonly indexName: string;
  readonly partitionKey: { readonly name: string; readonly type: AttributeType };
  readonly sortKey?: { readonly name: string; readonly type: AttributeType };
}

export interface TableDefinition {
  /** Logical name, also the suffix of the physical table name. */
  readonly id: 'keys' | 'budgets' | 'usage' | 'byok';
  readonly partitionKey: { readonly name: string; readonly type: AttributeType };
  readonly sortKey?: { readonly name: string; readonly type: AttributeType };
  readonly globalIndexes: readonly IndexDefinition[];
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
  globalIndexes: [
    { indexName: 'byKey', partitionKey: { name: 'keyPk', type: 'S' }, sortKey: { name: 'sk', type: 'S' } },
    { indexName: 'byOrg', partitionKey: { name: 'orgPk', type: 'S' }, sortKey: { name: 'sk', type: 'S' } },
    { indexName: 'byDay', partitionKey: { name: 'dayPk', type: 'S' }, sortKey: { name: 'sk', type: 'S' } },
  ],
  ttlAttribute: 'ttl',
};

export const BYOK_TABLE: TableDefinition = {
  id: 'byok',
  partitionKey: { name: 'userId', type: 'S' },
  sortKey: { name: 'provider', type: 'S' },
  globalIndexes: [],
};

export const TABLES: readonly TableDefinition[] = [KEYS_TABLE, BUDGETS_TABLE, USAGE_TABLE, BYOK_TABLE];

/** Physical table names, passed to adapters as constructor arguments (never read from env inside them). */
export interface TableNames {
  readonly keys: string;
  readonly budgets: string;
  readonly usage: string;
  readonly byok: string;
}

/** Number of partitions the `day#` usage index and the hold items are spread over. */
export const USAGE_DAY_SHARDS = 4;
export const HOLD_SHARDS = 16;
