/**
 * The guardrails' state, in the budgets table next to the counters (so reserve can check circuits and count
 * loops in its one transaction). Item layout:
 *
 *   circuit#<scope>[#s<n>] / state         open circuit: openUntil (ms; MAX_SAFE_INTEGER = until acknowledged)
 *   circuits               / <scope>       registry of open circuits, for listing (written with the above)
 *   alert#<scope>          / <dedupe key>  "already alerted" marker, TTL after its window
 *   alertgap#<scope>       / <spacing key> lastAt of the last alert of that kind (warnings: ≥ 6 h apart)
 *   alertlog#<yyyy-mm-dd>  / <at>#<id>     every alert, for the CLI and tests (TTL 90 days)
 *   alertout               / <at>#<id>     outbox: alerts the dispatcher has not published yet (TTL 2 days)
 *   killswitch             / state         what the kill switch did, and who resumed service
 *   veltrip#<scope>        / <yyyy-mm-dd>  velocity trips of the day (trips, lastWindow): the 2nd escalates
 *
 * An alert is recorded with its marker, spacing, log and outbox items (and, for a tripping tier, the circuit)
 * in ONE TransactWriteItems, so a recorded alert is never lost and never recorded twice. A repeat (every request
 * settled past a tier asks again) is answered without that transaction: from this store's memory of markers and
 * spacing it saw, else from one consistent read of the two items (a refused transaction of 3–4 items costs
 * 2 write units an item; the transaction's conditions stay the authority).
 */
import {
  BatchGetItemCommand,
  DeleteItemCommand,
  GetItemCommand,
  QueryCommand,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  type AttributeValue,
  type CancellationReason,
  type DynamoDBClient,
  type TransactWriteItem,
} from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type {
  Acknowledgement,
  Alert,
  CircuitState,
  GuardrailStore,
  KillSwitchState,
  RecordAlertOptions,
} from '../../core/stores';
import { type Clock, systemClock } from '../../core/clock';
import type { ScopeId } from '../../core/types';
import { errorName, translateError } from './client';
import { circuitKey, UNTIL_ACKNOWLEDGED } from './ledger';
import { sleep as realSleep } from './ledger-core';
import type { TableNames } from './schema';

type Item = Record<string, AttributeValue>;
type ItemKey = { readonly pk: string; readonly sk: string };

const DAY_MS = 86_400_000;
const LOG_RETENTION_MS = 90 * DAY_MS;
const OUTBOX_RETENTION_MS = 2 * DAY_MS;
const OUTBOX_PK = 'alertout';
const REGISTRY_PK = 'circuits';
const KILL_SWITCH_KEY = { pk: 'killswitch', sk: 'state' };
/** Alert markers and spacings a store remembers (a bounded memory: forgotten ones are read again). */
const MAX_SEEN = 10_000;

export interface DynamoDbGuardrailStoreOptions {
  readonly tables: Pick<TableNames, 'budgets'>;
  /** Items the platform circuit is spread over: the same number as the platform counter's shards. */
  readonly platformShards: number;
  /** Where "now" comes from (the last day {@link DynamoDbGuardrailStore.listAlerts} reads). @default systemClock */
  readonly clock?: Clock;
  /**
   * Called once for each circuit this store opened (or extended), whichever guard asked: on AWS it writes the
   * `CircuitOpened` metric the circuit alarm watches (lambda/observability/guardrail-events.ts). Not called when
   * an equal or longer circuit was open already. A hook that throws is ignored.
   */
  readonly onCircuitOpened?: (circuit: CircuitState) => void;
  /** How a transaction that met another waits before it is tried again. @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
}

/** The DynamoDB implementation of {@link GuardrailStore}. */
export class DynamoDbGuardrailStore implements GuardrailStore {
  private readonly table: string;
  private readonly platformShards: number;
  private readonly clock: Clock;
  private readonly onCircuitOpened: (circuit: CircuitState) => void;
  private readonly sleep: (ms: number) => Promise<void>;
  /** Alert markers and spacings seen (recorded here, or found), with when each lapses: repeats need no write. */
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly client: DynamoDBClient,
    options: DynamoDbGuardrailStoreOptions,
  ) {
    this.table = options.tables.budgets;
    this.platformShards = options.platformShards;
    this.clock = options.clock ?? systemClock;
    this.sleep = options.sleep ?? realSleep;
    const hook = options.onCircuitOpened;
    this.onCircuitOpened = (circuit) => {
      try {
        hook?.(circuit);
      } catch {
        // A metric must never fail the guard that opened the circuit.
      }
    };
  }

  async recordAlert(alert: Alert, options: RecordAlertOptions): Promise<boolean> {
    const marker = { pk: `alert#${alert.scope}`, sk: options.dedupeKey };
    const gap = options.spacing ? { pk: `alertgap#${alert.scope}`, sk: options.spacing.key } : undefined;
    if (this.isSeen(marker, alert.at) || (gap && this.isSeen(gap, alert.at)) || (await this.refusedAlready(alert, options, marker, gap))) return false;
    const base: TransactWriteItem[] = [
      {
        Put: {
          TableName: this.table,
          Item: marshall({ pk: `alert#${alert.scope}`, sk: options.dedupeKey, alertId: alert.id, at: alert.at, ttl: ttlOf(options.dedupeUntil + DAY_MS) }),
          ConditionExpression: 'attribute_not_exists(pk)',
        },
      },
      ...(options.spacing
        ? [
            {
              Update: {
                TableName: this.table,
                Key: marshall({ pk: `alertgap#${alert.scope}`, sk: options.spacing.key }),
                UpdateExpression: 'SET lastAt = :at, #ttl = :ttl',
                ConditionExpression: 'attribute_not_exists(lastAt) OR lastAt <= :since',
                ExpressionAttributeNames: { '#ttl': 'ttl' },
                ExpressionAttributeValues: {
                  ':at': { N: String(alert.at) },
                  ':since': { N: String(alert.at - options.spacing.ms) },
                  ':ttl': { N: String(ttlOf(alert.at + options.spacing.ms + DAY_MS)) },
                },
              },
            },
          ]
        : []),
      ...this.alertPuts(alert, { outbox: options.outbox ?? true }),
    ];
    const circuit = options.openCircuit ? this.circuitPuts(options.openCircuit) : [];
    let reasons = await this.transact([...base, ...circuit]);
    if (!reasons && options.openCircuit) this.onCircuitOpened(options.openCircuit);
    if (reasons && circuit.length > 0 && !reasons.slice(0, 2).some(failed) && reasons.slice(base.length).some(failed)) {
      // A longer circuit is open already (e.g. until acknowledged): record the alert without shortening it.
      reasons = await this.transact(base);
    }
    if (!reasons || failed(reasons[0])) this.remember(marker, options.dedupeUntil);
    if (gap && options.spacing && !reasons) this.remember(gap, alert.at + options.spacing.ms);
    if (!reasons) return true;
    if (reasons.some(failed)) return false;
    throw unexpected(reasons);
  }

  /**
   * Whether the transaction of {@link recordAlert} would be refused, as one consistent read of its marker and
   * spacing items says: the marker is there, or the last alert of the spacing key is too recent. What it finds
   * is remembered. A failed read says no (the transaction decides).
   */
  private async refusedAlready(alert: Alert, options: RecordAlertOptions, marker: ItemKey, gap: ItemKey | undefined): Promise<boolean> {
    let found: Item[];
    try {
      const out = await this.client.send(
        new BatchGetItemCommand({ RequestItems: { [this.table]: { Keys: [marker, ...(gap ? [gap] : [])].map((k) => marshall(k)), ConsistentRead: true } } }),
      );
      found = out.Responses?.[this.table] ?? [];
    } catch {
      return false;
    }
    let refused = false;
    for (const item of found) {
      const { pk, lastAt } = unmarshall(item) as { pk: string; lastAt?: number };
      if (pk === marker.pk) {
        this.remember(marker, options.dedupeUntil);
        refused = true;
      } else if (gap && options.spacing && typeof lastAt === 'number' && lastAt > alert.at - options.spacing.ms) {
        this.remember(gap, lastAt + options.spacing.ms);
        refused = true;
      }
    }
    return refused;
  }

  private isSeen(key: ItemKey, at: number): boolean {
    const until = this.seen.get(`${key.pk}\n${key.sk}`);
    return until !== undefined && at < until;
  }

  private remember(key: ItemKey, until: number): void {
    if (this.seen.size >= MAX_SEEN) this.seen.clear();
    this.seen.set(`${key.pk}\n${key.sk}`, until);
  }

  async listAlerts(since: number): Promise<Alert[]> {
    const out: Alert[] = [];
    for (let day = Math.floor(since / DAY_MS); day <= Math.floor(this.clock.now() / DAY_MS) + 1; day++) {
      const items = await this.query({
        KeyConditionExpression: 'pk = :pk AND sk >= :from',
        ExpressionAttributeValues: { ':pk': { S: `alertlog#${new Date(day * DAY_MS).toISOString().slice(0, 10)}` }, ':from': { S: pad(since) } },
      });
      out.push(...items.map(toAlert));
    }
    return out;
  }

  async pendingAlerts(limit: number): Promise<Alert[]> {
    const items = await this.query({ KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: OUTBOX_PK } }, Limit: limit });
    return items.map(toAlert);
  }

  async markPublished(alert: Alert): Promise<void> {
    try {
      await this.client.send(new DeleteItemCommand({ TableName: this.table, Key: marshall({ pk: OUTBOX_PK, sk: sortKey(alert) }) }));
    } catch (err) {
      throw translateError(err);
    }
  }

  async openCircuit(state: CircuitState): Promise<boolean> {
    const reasons = await this.transact(this.circuitPuts(state));
    if (!reasons) {
      this.onCircuitOpened(state);
      return true;
    }
    if (reasons.some(failed)) return false;
    throw unexpected(reasons);
  }

  async listCircuits(now: number): Promise<CircuitState[]> {
    const items = await this.query({ KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: REGISTRY_PK } } });
    return items.map((i) => unmarshall(i)).filter((v) => Number(v.openUntil) > now).map(toCircuit);
  }

  async resetCircuit(scope: ScopeId, ack: Acknowledgement): Promise<boolean> {
    // The velocity windows of the last hour are cleared too, or the window that tripped would trip again.
    const velocity = await this.query({
      KeyConditionExpression: 'pk = :pk',
      ExpressionAttributeValues: { ':pk': { S: `vel#${scope}` } },
      ScanIndexForward: false,
      Limit: 20,
      ProjectionExpression: 'pk, sk',
    });
    const items: TransactWriteItem[] = [
      ...velocity.slice(0, 20).map((Key) => ({ Delete: { TableName: this.table, Key } })),
      { Delete: { TableName: this.table, Key: marshall({ pk: REGISTRY_PK, sk: scope }), ConditionExpression: 'attribute_exists(pk)' } },
      ...this.circuitKeys(scope).map((Key) => ({ Delete: { TableName: this.table, Key: marshall(Key) } })),
      ...this.alertPuts({
        id: `reset-${ack.at.toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
        at: ack.at,
        type: 'circuit_reset',
        severity: 'warning',
        scope,
        summary: `Circuit for ${scope} reset by ${ack.by}: ${ack.reason}`,
        details: { scope, by: ack.by, reason: ack.reason },
      }),
    ];
    const registryAt = Math.min(velocity.length, 20);
    const reasons = await this.transact(items);
    if (!reasons) return true;
    if (reasons[registryAt]?.Code === 'ConditionalCheckFailed') return false;
    throw unexpected(reasons);
  }

  async countVelocityTrip(scope: ScopeId, day: string, window: number): Promise<number | undefined> {
    try {
      const out = await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: marshall({ pk: `veltrip#${scope}`, sk: day }),
          UpdateExpression: 'ADD trips :one SET lastWindow = :w, #ttl = :ttl',
          ConditionExpression: 'attribute_not_exists(lastWindow) OR lastWindow < :w',
          ExpressionAttributeNames: { '#ttl': 'ttl' },
          ExpressionAttributeValues: marshall({ ':one': 1, ':w': window, ':ttl': ttlOf(Date.parse(`${day}T00:00:00.000Z`) + 2 * DAY_MS) }),
          ReturnValues: 'UPDATED_NEW',
        }),
      );
      return Number(out.Attributes?.trips?.N ?? 1);
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') return undefined;
      throw translateError(err);
    }
  }

  async getKillSwitch(): Promise<KillSwitchState> {
    let item: Item | undefined;
    try {
      item = (await this.client.send(new GetItemCommand({ TableName: this.table, Key: marshall(KILL_SWITCH_KEY), ConsistentRead: true }))).Item;
    } catch (err) {
      throw translateError(err);
    }
    if (!item) return { active: false, suspendedKeys: 0, completed: true };
    const v = unmarshall(item);
    return {
      active: v.active === true,
      ...(typeof v.activatedAt === 'number' ? { activatedAt: v.activatedAt } : {}),
      ...(typeof v.budgetName === 'string' ? { budgetName: v.budgetName } : {}),
      ...(typeof v.actualMicros === 'number' ? { actualMicros: v.actualMicros } : {}),
      ...(typeof v.thresholdMicros === 'number' ? { thresholdMicros: v.thresholdMicros } : {}),
      suspendedKeys: typeof v.suspendedKeys === 'number' ? v.suspendedKeys : 0,
      completed: v.completed !== false,
      ...(v.resumed ? { resumed: v.resumed as KillSwitchState['resumed'] & object } : {}),
    };
  }

  async activateKillSwitch(info: {
    readonly at: number;
    readonly budgetName: string;
    readonly actualMicros: number;
    readonly thresholdMicros: number;
  }): Promise<'activated' | 'incomplete' | 'already-active'> {
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: marshall(KILL_SWITCH_KEY),
          UpdateExpression:
            'SET active = :true, activatedAt = :at, budgetName = :name, actualMicros = :actual, thresholdMicros = :threshold, ' +
            'suspendedKeys = :zero, completed = :false REMOVE resumed',
          ConditionExpression: 'attribute_not_exists(active) OR active = :false',
          ExpressionAttributeValues: marshall({
            ':true': true,
            ':false': false,
            ':zero': 0,
            ':at': info.at,
            ':name': info.budgetName,
            ':actual': info.actualMicros,
            ':threshold': info.thresholdMicros,
          }),
        }),
      );
      return 'activated';
    } catch (err) {
      if (errorName(err) !== 'ConditionalCheckFailedException') throw translateError(err);
    }
    return (await this.getKillSwitch()).completed ? 'already-active' : 'incomplete';
  }

  async recordKillSwitchProgress(progress: { readonly suspendedKeys: number; readonly completed: boolean }): Promise<void> {
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: marshall(KILL_SWITCH_KEY),
          UpdateExpression: 'SET suspendedKeys = :n, completed = :c',
          ExpressionAttributeValues: marshall({ ':n': progress.suspendedKeys, ':c': progress.completed }),
        }),
      );
    } catch (err) {
      throw translateError(err);
    }
  }

  async deactivateKillSwitch(ack: Acknowledgement, restoredKeys: number): Promise<boolean> {
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: marshall(KILL_SWITCH_KEY),
          UpdateExpression: 'SET active = :false, resumed = :resumed',
          ConditionExpression: 'active = :true',
          ExpressionAttributeValues: marshall({ ':true': true, ':false': false, ':resumed': { ...ack, restoredKeys } }),
        }),
      );
      return true;
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') return false;
      throw translateError(err);
    }
  }

  /** The circuit items of a scope (every shard for the platform). */
  private circuitKeys(scope: ScopeId): Array<{ pk: string; sk: string }> {
    if (scope !== 'platform') return [circuitKey({ scope })];
    return Array.from({ length: this.platformShards }, (_, shard) => circuitKey({ scope, shard }));
  }

  /** Puts of a circuit's items and its registry entry, each only if no longer-open circuit is there. */
  private circuitPuts(state: CircuitState): TransactWriteItem[] {
    const openUntil = state.closesAt ?? UNTIL_ACKNOWLEDGED;
    const fields = {
      scope: state.scope,
      cause: state.cause,
      openedAt: state.openedAt,
      openUntil,
      reason: state.reason,
      ...(state.closesAt === undefined ? {} : { ttl: ttlOf(state.closesAt + DAY_MS) }),
    };
    const condition = {
      ConditionExpression: 'attribute_not_exists(openUntil) OR openUntil < :until',
      ExpressionAttributeValues: { ':until': { N: String(openUntil) } },
    };
    return [
      ...this.circuitKeys(state.scope).map((key) => ({ Put: { TableName: this.table, Item: marshall({ ...key, ...fields }), ...condition } })),
      { Put: { TableName: this.table, Item: marshall({ pk: REGISTRY_PK, sk: state.scope, ...fields }), ...condition } },
    ];
  }

  /** The log and outbox items of an alert. */
  private alertPuts(alert: Alert, options: { readonly outbox: boolean } = { outbox: true }): TransactWriteItem[] {
    const fields = { ...alert, details: { ...alert.details } };
    const log: TransactWriteItem = {
      Put: { TableName: this.table, Item: marshall({ pk: logPk(alert.at), sk: sortKey(alert), ...fields, ttl: ttlOf(alert.at + LOG_RETENTION_MS) }) },
    };
    if (!options.outbox) return [log];
    return [log, { Put: { TableName: this.table, Item: marshall({ pk: OUTBOX_PK, sk: sortKey(alert), ...fields, ttl: ttlOf(alert.at + OUTBOX_RETENTION_MS) }) } }];
  }

  private async query(input: Omit<ConstructorParameters<typeof QueryCommand>[0], 'TableName'>): Promise<Item[]> {
    const out: Item[] = [];
    let startKey: Item | undefined;
    try {
      do {
        const page = await this.client.send(new QueryCommand({ ...input, TableName: this.table, ExclusiveStartKey: startKey }));
        out.push(...(page.Items ?? []));
        startKey = input.Limit !== undefined && out.length >= input.Limit ? undefined : page.LastEvaluatedKey;
      } while (startKey);
    } catch (err) {
      throw translateError(err);
    }
    return out;
  }

  /** One transaction; undefined on success, else the cancellation reasons. */
  private async transact(items: TransactWriteItem[]): Promise<CancellationReason[] | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.client.send(new TransactWriteItemsCommand({ TransactItems: items }));
        return undefined;
      } catch (err) {
        if (errorName(err) !== 'TransactionCanceledException') throw translateError(err);
        const reasons = (err as { CancellationReasons?: CancellationReason[] }).CancellationReasons ?? [];
        const conflict = reasons.some((r) => r.Code === 'TransactionConflict') && !reasons.some(failed);
        if (!conflict || attempt >= 5) return reasons;
        await this.sleep(Math.random() * 20 * 2 ** attempt);
      }
    }
  }
}

function failed(reason: CancellationReason | undefined): boolean {
  return reason?.Code === 'ConditionalCheckFailed';
}

function unexpected(reasons: readonly CancellationReason[]): Error {
  return new Error(`DynamoDB cancelled a guardrails transaction unexpectedly (reasons: ${reasons.map((r) => r.Code ?? 'None').join(',')})`);
}

function ttlOf(ms: number): number {
  return Math.ceil(ms / 1000);
}

function pad(ms: number): string {
  return String(Math.max(0, Math.floor(ms))).padStart(15, '0');
}

function logPk(at: number): string {
  return `alertlog#${new Date(at).toISOString().slice(0, 10)}`;
}

function sortKey(alert: Pick<Alert, 'at' | 'id'>): string {
  return `${pad(alert.at)}#${alert.id}`;
}

function toAlert(item: Item): Alert {
  const v = unmarshall(item);
  return {
    id: String(v.id),
    at: Number(v.at),
    type: String(v.type),
    severity: v.severity === 'critical' ? 'critical' : 'warning',
    scope: v.scope as ScopeId,
    summary: String(v.summary),
    details: (v.details ?? {}) as Alert['details'],
  };
}

function toCircuit(v: Record<string, unknown>): CircuitState {
  const until = Number(v.openUntil);
  return {
    scope: v.scope as ScopeId,
    cause: v.cause as CircuitState['cause'],
    openedAt: Number(v.openedAt),
    ...(until >= UNTIL_ACKNOWLEDGED ? {} : { closesAt: until }),
    reason: String(v.reason ?? ''),
  };
}
