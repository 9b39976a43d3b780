/**
 * BYOK keys in the byok table: pk userId, sk provider. Items hold the encrypted blob (see core/byok/crypto.ts)
 * and what may be shown (prefix, status, dates); never a key in plain text.
 */
import { DeleteItemCommand, GetItemCommand, PutItemCommand, QueryCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { ByokRecord, ByokStore } from '../../core/byok/service';
import { translateError } from './client';
import type { TableNames } from './schema';

/** The DynamoDB implementation of {@link ByokStore}. */
export class DynamoDbByokStore implements ByokStore {
  private readonly table: string;

  constructor(
    private readonly client: DynamoDBClient,
    tables: Pick<TableNames, 'byok'>,
  ) {
    this.table = tables.byok;
  }

  async get(userId: string, provider: string): Promise<ByokRecord | undefined> {
    try {
      const { Item } = await this.client.send(
        new GetItemCommand({ TableName: this.table, Key: marshall({ userId, provider }), ConsistentRead: true }),
      );
      return Item ? (unmarshall(Item) as ByokRecord) : undefined;
    } catch (err) {
      throw translateError(err);
    }
  }

  async put(record: ByokRecord): Promise<void> {
    try {
      await this.client.send(new PutItemCommand({ TableName: this.table, Item: marshall(record, { removeUndefinedValues: true }) }));
    } catch (err) {
      throw translateError(err);
    }
  }

  async delete(userId: string, provider: string): Promise<boolean> {
    try {
      const out = await this.client.send(
        new DeleteItemCommand({ TableName: this.table, Key: marshall({ userId, provider }), ReturnValues: 'ALL_OLD' }),
      );
      return out.Attributes !== undefined;
    } catch (err) {
      throw translateError(err);
    }
  }

  async list(userId: string): Promise<ByokRecord[]> {
    try {
      const out = await this.client.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: 'userId = :u',
          ExpressionAttributeValues: marshall({ ':u': userId }),
          ConsistentRead: true,
        }),
      );
      return (out.Items ?? []).map((i) => unmarshall(i) as ByokRecord);
    } catch (err) {
      throw translateError(err);
    }
  }
}
