/**
 * API keys in the keys table: one item per key, keyed by keyId, with the fields of {@link KeyRecord} as
 * attributes (never the raw key: only its HMAC). GSIs byUser (userId, createdAt) and byStatus (status, keyId).
 */
import {
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  ScanCommand,
  UpdateItemCommand,
  type AttributeValue,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { InvalidRequestError } from '../../core/errors';
import type { KeyStatusChange, KeyStore } from '../../core/stores';
import type { KeyRecord, KeyStatus } from '../../core/types';
import { errorName, translateError } from './client';
import type { TableNames } from './schema';

type Item = Record<string, AttributeValue>;

/** The DynamoDB implementation of {@link KeyStore}. */
export class DynamoDbKeyStore implements KeyStore {
  private readonly table: string;

  constructor(
    private readonly client: DynamoDBClient,
    tables: Pick<TableNames, 'keys'>,
  ) {
    this.table = tables.keys;
  }

  async get(keyId: string): Promise<KeyRecord | undefined> {
    try {
      // Consistent read: a suspension must bite on the next cache miss, not a second later.
      const { Item } = await this.client.send(
        new GetItemCommand({ TableName: this.table, Key: marshall({ keyId }), ConsistentRead: true }),
      );
      return Item ? toRecord(Item) : undefined;
    } catch (err) {
      throw translateError(err);
    }
  }

  /** Writes a new key; throws {@link InvalidRequestError} (code `key_exists`) when the keyId is taken. */
  async create(record: KeyRecord): Promise<void> {
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.table,
          Item: marshall(record, { removeUndefinedValues: true }),
          ConditionExpression: 'attribute_not_exists(keyId)',
        }),
      );
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') {
        throw new InvalidRequestError(`A key with id "${record.keyId}" already exists.`, { code: 'key_exists' });
      }
      throw translateError(err);
    }
  }

  async listByUser(userId: string): Promise<KeyRecord[]> {
    const out: KeyRecord[] = [];
    for await (const page of this.pages({
      index: 'byUser',
      condition: 'userId = :u',
      values: { ':u': { S: userId } },
    })) {
      out.push(...page);
    }
    return out;
  }

  /** Pages of keys: a Query on byStatus when a status is given, else a Scan. */
  listAll(options: { readonly status?: KeyStatus } = {}): AsyncIterable<KeyRecord[]> {
    if (options.status === undefined) return this.pages({});
    return this.pages({
      index: 'byStatus',
      condition: '#status = :s',
      names: { '#status': 'status' },
      values: { ':s': { S: options.status } },
    });
  }

  /**
   * Sets status, actor and reason (a missing reason removes the old one). Returns false when the key does not
   * exist or is not in the `onlyIfStatus`/`onlyIfActor` state; the store does not judge transitions itself.
   */
  async setStatus(
    keyId: string,
    change: KeyStatusChange,
  ): Promise<boolean> {
    const conditions = ['attribute_exists(keyId)'];
    const values: Item = { ':status': { S: change.status }, ':actor': { S: change.actor } };
    if (change.onlyIfStatus !== undefined) {
      conditions.push('#status = :onlyStatus');
      values[':onlyStatus'] = { S: change.onlyIfStatus };
    }
    if (change.onlyIfActor !== undefined) {
      conditions.push('statusChangedBy = :onlyActor');
      values[':onlyActor'] = { S: change.onlyIfActor };
    }
    let update = 'SET #status = :status, statusChangedBy = :actor';
    if (change.reason !== undefined) {
      update += ', statusReason = :reason';
      values[':reason'] = { S: change.reason };
    } else {
      update += ' REMOVE statusReason';
    }
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: marshall({ keyId }),
          UpdateExpression: update,
          ConditionExpression: conditions.join(' AND '),
          ExpressionAttributeNames: { '#status': 'status' },
          ExpressionAttributeValues: values,
        }),
      );
      return true;
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') return false;
      throw translateError(err);
    }
  }

  /** Records a use; never moves lastUsedAt backwards and never creates a key. */
  async touchLastUsed(keyId: string, atIso: string): Promise<void> {
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: marshall({ keyId }),
          UpdateExpression: 'SET lastUsedAt = :t',
          ConditionExpression: 'attribute_exists(keyId) AND (attribute_not_exists(lastUsedAt) OR lastUsedAt < :t)',
          ExpressionAttributeValues: { ':t': { S: atIso } },
        }),
      );
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') return;
      throw translateError(err);
    }
  }

  private async *pages(query: {
    readonly index?: string;
    readonly condition?: string;
    readonly names?: Record<string, string>;
    readonly values?: Item;
  }): AsyncGenerator<KeyRecord[]> {
    let startKey: Item | undefined;
    do {
      let items: Item[] | undefined;
      try {
        const common = {
          TableName: this.table,
          IndexName: query.index,
          ExclusiveStartKey: startKey,
          ExpressionAttributeNames: query.names,
          ExpressionAttributeValues: query.values,
        };
        const page = query.condition
          ? await this.client.send(new QueryCommand({ ...common, KeyConditionExpression: query.condition }))
          : await this.client.send(new ScanCommand(common));
        items = page.Items;
        startKey = page.LastEvaluatedKey;
      } catch (err) {
        throw translateError(err);
      }
      const records = (items ?? []).map(toRecord);
      if (records.length) yield records;
    } while (startKey);
  }
}

function toRecord(item: Item): KeyRecord {
  return unmarshall(item) as KeyRecord;
}
