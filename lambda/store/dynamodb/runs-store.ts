/**
 * Agent runs in the runs table (pk `runId`), one item per run. Every save is conditional on the version the
 * writer read, so two workers holding copies of one message cannot both record the run.
 */
import { GetItemCommand, PutItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { type AgentRun, RunConflictError, type RunStore } from '../../core/agent/run';
import { errorName, translateError } from './client';

export interface DynamoDbRunStoreOptions {
  readonly table: string;
  /** How long a run is kept after it was created (DynamoDB TTL). @default 30 */
  readonly retentionDays?: number;
}

export class DynamoDbRunStore implements RunStore {
  private readonly table: string;
  private readonly retentionSeconds: number;

  constructor(
    private readonly client: DynamoDBClient,
    options: DynamoDbRunStoreOptions,
  ) {
    this.table = options.table;
    this.retentionSeconds = (options.retentionDays ?? 30) * 86_400;
  }

  async create(run: AgentRun): Promise<void> {
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.table,
          Item: this.item(run),
          ConditionExpression: 'attribute_not_exists(runId)',
        }),
      );
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') {
        throw new RunConflictError(`Run ${run.id} exists already.`, { code: 'run_conflict', cause: err });
      }
      throw translateError(err);
    }
  }

  async get(id: string): Promise<AgentRun | undefined> {
    try {
      const { Item } = await this.client.send(
        new GetItemCommand({ TableName: this.table, Key: marshall({ runId: id }), ConsistentRead: true }),
      );
      if (!Item) return undefined;
      const { runId, ttl: _ttl, ...rest } = unmarshall(Item) as Record<string, unknown>;
      return { ...rest, id: runId } as unknown as AgentRun;
    } catch (err) {
      throw translateError(err);
    }
  }

  async save(run: AgentRun): Promise<AgentRun> {
    const next: AgentRun = { ...run, version: run.version + 1 };
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.table,
          Item: this.item(next),
          ConditionExpression: '#v = :v',
          ExpressionAttributeNames: { '#v': 'version' },
          ExpressionAttributeValues: marshall({ ':v': run.version }),
        }),
      );
      return next;
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') {
        throw new RunConflictError(`Run ${run.id} was changed by another writer.`, { code: 'run_conflict', cause: err });
      }
      throw translateError(err);
    }
  }

  private item(run: AgentRun) {
    const { id, ...rest } = run;
    const ttl = Math.floor(Date.parse(run.createdAt) / 1000) + this.retentionSeconds;
    return marshall({ runId: id, ...rest, ttl }, { removeUndefinedValues: true, convertClassInstanceToMap: false });
  }
}

