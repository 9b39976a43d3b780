/**
 * The audit log of administrative changes, whatever the path: `npm run admin` against the tables, the admin
 * API (`/admin/*`) and the kill switch. One item per change, naming who made it (the OS user or `--actor` of a
 * CLI run, the IAM ARN API Gateway vouched for or `local-admin`, `kill-switch`), what it changed (an action
 * and a target), the state before and after, and the reason given.
 *
 *   pk audit#<yyyy-mm-dd>   sk <iso>#<changeId>   actor   (GSI byActor: actor, sk)   ttl
 *
 * A change's id and time are fixed once by whoever makes the change, so a retried write lands on the same
 * item: writing one entry twice is harmless (conditional put, "already recorded" is success).
 */
import {
  type AttributeValue,
  ConditionalCheckFailedException,
  PutItemCommand,
  QueryCommand,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { translateError } from './client';

/** Values an audit entry may carry about a change: ids, numbers, statuses. Never a secret. */
export type AuditValue = string | number | boolean | null;

/** A state of the thing changed, as far as the audit log shows it (no secret, no key hash). */
export type AuditState = Readonly<Record<string, AuditValue>>;

/** How the change was made. */
export type AuditVia = 'cli' | 'api' | 'kill-switch';

/** One administrative change. */
export interface AuditEntry {
  /** Unique per change, fixed before the first write (a retry reuses it). */
  readonly requestId: string;
  /** ISO-8601, fixed with the id. */
  readonly at: string;
  /** The OS user / `--actor` (CLI), the IAM principal ARN or `local-admin` (API), `kill-switch`. */
  readonly actor: string;
  /** e.g. `keys.create`, `keys.revoke`, `budgets.set`, `circuits.reset`, `killswitch.activate`. */
  readonly action: string;
  /** What was changed: a key id, a scope, `platform`. */
  readonly target: string;
  readonly via?: AuditVia;
  /** The state before the change (absent for a creation). */
  readonly before?: AuditState;
  /** The state the change sets. */
  readonly after?: AuditState;
  /** Why, as the operator said it (`--reason`, `--ack`). */
  readonly reason?: string;
  readonly details?: Readonly<Record<string, AuditValue>>;
  readonly sourceIp?: string;
}

/** Which entries to list. */
export interface AuditQuery {
  /** Epoch ms: entries at or after. */
  readonly since: number;
  /** Epoch ms: entries before. @default now */
  readonly until?: number;
  /** Only this actor's changes. */
  readonly actor?: string;
  /** Only changes whose target is, or names, this key id (or any target equal to it). */
  readonly target?: string;
  /** @default 200 */
  readonly limit?: number;
}

/** Where administrative changes are recorded. */
export interface AuditLog {
  /** Records one change; recording the same change (same id and time) again is a no-op. */
  record(entry: AuditEntry): Promise<void>;
  /** Entries of one UTC day (`yyyy-mm-dd`), oldest first. */
  listDay(day: string): Promise<AuditEntry[]>;
  /** Entries in a time range, newest first, filtered. */
  list(query: AuditQuery): Promise<AuditEntry[]>;
}

export interface DynamoDbAuditLogOptions {
  readonly table: string;
  /** @default 400 */
  readonly retentionDays?: number;
}

const DAY_MS = 86_400_000;

/** Whether an entry concerns `target` (a key id, a scope, a user): its target or a before/after value. */
export function auditMentions(entry: AuditEntry, target: string): boolean {
  if (entry.target === target || entry.target === `key:${target}` || entry.target === `user:${target}` || entry.target === `org:${target}`) return true;
  const values = [entry.before, entry.after, entry.details].flatMap((s) => (s ? Object.values(s) : []));
  return values.includes(target);
}

/** The DynamoDB implementation of {@link AuditLog}. */
export class DynamoDbAuditLog implements AuditLog {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly options: DynamoDbAuditLogOptions,
  ) {}

  async record(entry: AuditEntry): Promise<void> {
    const at = Date.parse(entry.at);
    if (Number.isNaN(at)) throw new RangeError(`audit entry time "${entry.at}" is not a date`);
    const item = {
      pk: `audit#${entry.at.slice(0, 10)}`,
      sk: `${entry.at}#${entry.requestId}`,
      ...entry,
      ttl: Math.floor(at / 1000) + (this.options.retentionDays ?? 400) * 86_400,
    };
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.options.table,
          Item: marshall(item, { removeUndefinedValues: true }),
          ConditionExpression: 'attribute_not_exists(sk)',
        }),
      );
    } catch (err) {
      // The same change written again (a retry): already recorded.
      if (err instanceof ConditionalCheckFailedException || (err as { name?: string })?.name === 'ConditionalCheckFailedException') return;
      throw translateError(err);
    }
  }

  async listDay(day: string): Promise<AuditEntry[]> {
    const out: AuditEntry[] = [];
    await this.query({ pk: `audit#${day}`, forward: true }, (e) => {
      out.push(e);
      return true;
    });
    return out;
  }

  async list(query: AuditQuery): Promise<AuditEntry[]> {
    const until = query.until ?? Date.now();
    const limit = query.limit ?? 200;
    const from = new Date(query.since).toISOString();
    const to = new Date(until).toISOString();
    const out: AuditEntry[] = [];
    if (query.since > until) return out;
    const take = (e: AuditEntry): boolean => {
      if (query.target !== undefined && !auditMentions(e, query.target)) return true;
      out.push(e);
      return out.length < limit;
    };
    if (query.actor !== undefined) {
      // One query on the actor index, newest first.
      await this.query({ index: 'byActor', actor: query.actor, from, to, forward: false }, take);
      return out;
    }
    // Day partitions from the newest to the oldest.
    const firstDay = Date.parse(`${from.slice(0, 10)}T00:00:00.000Z`);
    for (let day = Date.parse(`${to.slice(0, 10)}T00:00:00.000Z`); day >= firstDay; day -= DAY_MS) {
      const more = await this.query({ pk: `audit#${new Date(day).toISOString().slice(0, 10)}`, from, to, forward: false }, take);
      if (!more) break;
    }
    return out;
  }

  /** Pages through one partition (or the actor index), handing entries to `take` until it says stop. */
  private async query(
    q: { pk?: string; index?: string; actor?: string; from?: string; to?: string; forward: boolean },
    take: (e: AuditEntry) => boolean,
  ): Promise<boolean> {
    const names: Record<string, string> = {};
    const values: Record<string, string> = {};
    let condition: string;
    if (q.index) {
      condition = '#a = :a';
      names['#a'] = 'actor';
      values[':a'] = q.actor!;
    } else {
      condition = 'pk = :pk';
      values[':pk'] = q.pk!;
    }
    if (q.from !== undefined && q.to !== undefined) {
      condition += ' AND sk BETWEEN :from AND :to';
      values[':from'] = q.from;
      // `<iso>#id` sorts after `<iso>`: the upper bound takes everything up to `to` itself.
      values[':to'] = `${q.to}#\uffff`;
    }
    let start: Record<string, AttributeValue> | undefined;
    try {
      do {
        const page = await this.client.send(
          new QueryCommand({
            TableName: this.options.table,
            ...(q.index ? { IndexName: q.index } : {}),
            KeyConditionExpression: condition,
            ...(Object.keys(names).length ? { ExpressionAttributeNames: names } : {}),
            ExpressionAttributeValues: marshall(values),
            ScanIndexForward: q.forward,
            ExclusiveStartKey: start,
          }),
        );
        for (const item of page.Items ?? []) {
          const { pk: _pk, sk: _sk, ttl: _ttl, ...entry } = unmarshall(item);
          if (!take(entry as AuditEntry)) return false;
        }
        start = page.LastEvaluatedKey;
      } while (start);
    } catch (err) {
      throw translateError(err);
    }
    return true;
  }
}
