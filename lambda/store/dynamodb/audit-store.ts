/**
 * The audit log of admin changes: one item per change made through `/admin/*`, naming the caller (the IAM ARN
 * API Gateway vouched for, or `local-admin`), the action, its target and a secret-free summary.
 *
 *   pk audit#<yyyy-mm-dd>   sk <iso>#<requestId>   actor   (GSI byActor: actor, sk)   ttl
 */
import { PutItemCommand, QueryCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { translateError } from './client';

/** Values an audit entry may carry about a change: ids, numbers, statuses. Never a secret. */
export type AuditValue = string | number | boolean | null;

/** One admin change. */
export interface AuditEntry {
  readonly requestId: string;
  /** ISO-8601. */
  readonly at: string;
  /** The IAM principal ARN, or `local-admin`. */
  readonly actor: string;
  /** e.g. `keys.create`, `keys.suspend`, `budgets.set`. */
  readonly action: string;
  /** What was changed: a key id, a scope. */
  readonly target: string;
  readonly details?: Readonly<Record<string, AuditValue>>;
  readonly sourceIp?: string;
}

/** Where admin changes are recorded. */
export interface AuditLog {
  record(entry: AuditEntry): Promise<void>;
  /** Entries of one UTC day (`yyyy-mm-dd`), oldest first. */
  listDay(day: string): Promise<AuditEntry[]>;
}

export interface DynamoDbAuditLogOptions {
  readonly table: string;
  /** @default 400 */
  readonly retentionDays?: number;
}

/** The DynamoDB implementation of {@link AuditLog}. */
export class DynamoDbAuditLog implements AuditLog {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly options: DynamoDbAuditLogOptions,
  ) {}

  async record(entry: AuditEntry): Promise<void> {
    const at = Date.parse(entry.at);
    const item = {
      pk: `audit#${entry.at.slice(0, 10)}`,
      sk: `${entry.at}#${entry.requestId}`,
      ...entry,
      ttl: Math.floor(at / 1000) + (this.options.retentionDays ?? 400) * 86_400,
    };
    try {
      await this.client.send(new PutItemCommand({ TableName: this.options.table, Item: marshall(item, { removeUndefinedValues: true }) }));
    } catch (err) {
      throw translateError(err);
    }
  }

  async listDay(day: string): Promise<AuditEntry[]> {
    const out: AuditEntry[] = [];
    let start: Record<string, import('@aws-sdk/client-dynamodb').AttributeValue> | undefined;
    try {
      do {
        const page = await this.client.send(
          new QueryCommand({
            TableName: this.options.table,
            KeyConditionExpression: 'pk = :pk',
            ExpressionAttributeValues: marshall({ ':pk': `audit#${day}` }),
            ExclusiveStartKey: start,
          }),
        );
        for (const item of page.Items ?? []) {
          const { pk: _pk, sk: _sk, ttl: _ttl, ...entry } = unmarshall(item);
          out.push(entry as AuditEntry);
        }
        start = page.LastEvaluatedKey;
      } while (start);
    } catch (err) {
      throw translateError(err);
    }
    return out;
  }
}

