/**
 * Creates the tables of {@link TABLES} where they are missing (DynamoDB Local, tests). The deployed tables come
 * from the CDK data stack, which reads the same definitions.
 */
import {
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  UpdateTimeToLiveCommand,
  type AttributeDefinition,
  type DynamoDBClient,
  type KeySchemaElement,
} from '@aws-sdk/client-dynamodb';
import { errorName, translateError } from './client';
import { TABLES, type TableDefinition, type TableNames } from './schema';

export interface EnsureTablesOptions {
  /** How long to wait for a table (and its indexes) to become ACTIVE. @default 60_000 */
  readonly timeoutMs?: number;
}

/**
 * Creates every missing table (on-demand billing, GSIs projecting ALL attributes, TTL on `ttlAttribute`) and
 * waits until all are ACTIVE. Idempotent: existing tables are left as they are, apart from enabling TTL.
 */
export async function ensureTables(
  client: DynamoDBClient,
  names: TableNames,
  options: EnsureTablesOptions = {},
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  try {
    await Promise.all(TABLES.map((def) => ensureTable(client, def, names[def.id], timeoutMs)));
  } catch (err) {
    throw translateError(err);
  }
}

async function ensureTable(client: DynamoDBClient, def: TableDefinition, name: string, timeoutMs: number): Promise<void> {
  if (!(await tableExists(client, name))) {
    try {
      await client.send(new CreateTableCommand(createTableInput(def, name)));
    } catch (err) {
      if (errorName(err) !== 'ResourceInUseException') throw err; // created concurrently: fine
    }
  }
  await waitUntilActive(client, name, timeoutMs);
  if (def.ttlAttribute) await enableTtl(client, name, def.ttlAttribute);
}

function createTableInput(def: TableDefinition, name: string): ConstructorParameters<typeof CreateTableCommand>[0] {
  const attributes = new Map<string, AttributeDefinition>();
  const keySchema = (pk: TableDefinition['partitionKey'], sk?: TableDefinition['sortKey']): KeySchemaElement[] => {
    attributes.set(pk.name, { AttributeName: pk.name, AttributeType: pk.type });
    const schema: KeySchemaElement[] = [{ AttributeName: pk.name, KeyType: 'HASH' }];
    if (sk) {
      attributes.set(sk.name, { AttributeName: sk.name, AttributeType: sk.type });
      schema.push({ AttributeName: sk.name, KeyType: 'RANGE' });
    }
    return schema;
  };
  const tableKeys = keySchema(def.partitionKey, def.sortKey);
  const indexes = def.globalIndexes.map((index) => ({
    IndexName: index.indexName,
    KeySchema: keySchema(index.partitionKey, index.sortKey),
    Projection: { ProjectionType: 'ALL' as const },
  }));
  return {
    TableName: name,
    BillingMode: 'PAY_PER_REQUEST',
    KeySchema: tableKeys,
    AttributeDefinitions: [...attributes.values()],
    GlobalSecondaryIndexes: indexes.length ? indexes : undefined,
  };
}

async function tableExists(client: DynamoDBClient, name: string): Promise<boolean> {
  try {
    await client.send(new DescribeTableCommand({ TableName: name }));
    return true;
  } catch (err) {
    if (errorName(err) === 'ResourceNotFoundException') return false;
    throw err;
  }
}

async function waitUntilActive(client: DynamoDBClient, name: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: name }));
    const indexesActive = (Table?.GlobalSecondaryIndexes ?? []).every((i) => i.IndexStatus === 'ACTIVE');
    if (Table?.TableStatus === 'ACTIVE' && indexesActive) return;
    if (Date.now() > deadline) throw new Error(`table ${name} did not become ACTIVE within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function enableTtl(client: DynamoDBClient, name: string, attribute: string): Promise<void> {
  const { TimeToLiveDescription } = await client.send(new DescribeTimeToLiveCommand({ TableName: name }));
  const status = TimeToLiveDescription?.TimeToLiveStatus;
  if (status === 'ENABLED' || status === 'ENABLING') return;
  try {
    await client.send(
      new UpdateTimeToLiveCommand({ TableName: name, TimeToLiveSpecification: { AttributeName: attribute, Enabled: true } }),
    );
  } catch (err) {
    // Enabled concurrently by another caller: DynamoDB says so with a ValidationException.
    if (!(errorName(err) === 'ValidationException' && /already enabled/i.test(String((err as Error).message)))) throw err;
  }
}
