import { BatchWriteItemCommand } from '@aws-sdk/client-dynamodb';
import { BudgetsClient, DescribeBudgetCommand } from '@aws-sdk/client-budgets';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import { marshall } from '@aws-sdk/util-dynamodb';
import type { SNSEvent } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { loadConfig } from '../../lambda/config';
import { systemClock } from '../../lambda/core/clock';
import { CircuitOpenError } from '../../lambda/core/errors';
import { KillSwitch } from '../../lambda/core/guardrails/kill-switch';
import { silentLogger } from '../../lambda/core/log';
import type { KeyRecord } from '../../lambda/core/types';
import { budgetsReader, createKillSwitchHandler, killSwitchReporter, snsAlertPublisher } from '../../lambda/handlers/kill-switch';
import { DynamoDbGuardrailStore } from '../../lambda/store/dynamodb/guardrails-store';
import { DynamoDbKeyStore } from '../../lambda/store/dynamodb/key-store';
import { DynamoDbKeyStatusBatch } from '../../lambda/store/dynamodb/key-status-batch';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { createTestTables, type TestTables } from '../support/dynamo';
import { BUDGET_NOTIFICATION } from './fixtures';

const BUDGET = 'tollgate-dev-monthly';
const TOPIC = 'arn:aws:sns:us-east-1:123456789012:tollgate-dev-alerts';
const budgetsMock = mockClient(BudgetsClient);
const snsMock = mockClient(SNSClient);

function snsEvent(message: string, subject = `AWS Budgets: ${BUDGET} has exceeded your alert threshold`): SNSEvent {
  return {
    Records: [
      {
        EventSource: 'aws:sns',
        EventVersion: '1.0',
        EventSubscriptionArn: 'arn:aws:sns:us-east-1:123456789012:tollgate-dev-budget:sub',
        Sns: {
          Type: 'Notification',
          MessageId: `m-${Math.random()}`,
          TopicArn: 'arn:aws:sns:us-east-1:123456789012:tollgate-dev-budget',
          Subject: subject,
          Message: message,
          Timestamp: '2026-11-23T02:00:00.000Z',
          SignatureVersion: '1',
          Signature: 'sig',
          SigningCertUrl: 'https://sns.example/cert',
          UnsubscribeUrl: 'https://sns.example/unsub',
          MessageAttributes: {},
        },
      },
    ],
  };
}

function describeBudget(actual: string, limit = '100.0'): void {
  budgetsMock.on(DescribeBudgetCommand).resolves({
    Budget: {
      BudgetName: BUDGET,
      BudgetType: 'COST',
      TimeUnit: 'MONTHLY',
      BudgetLimit: { Amount: limit, Unit: 'USD' },
      CalculatedSpend: { ActualSpend: { Amount: actual, Unit: 'USD' } },
    },
  });
}

function key(keyId: string, status: KeyRecord['status'] = 'active', actor?: KeyRecord['statusChangedBy']): KeyRecord {
  return {
    keyId,
    prefix: `sk-tg-${keyId.slice(0, 6)}`,
    hash: `h-${keyId}`,
    userId: `user-${keyId}`,
    name: 'k',
    scopes: ['ai:complete'],
    status,
    ...(actor ? { statusChangedBy: actor } : {}),
    createdAt: '2026-11-01T00:00:00.000Z',
  };
}

/** Writes many keys fast (BatchWriteItem, 25 at a time, a few batches in parallel). */
async function seedKeys(db: TestTables, records: readonly KeyRecord[]): Promise<void> {
  const batches: KeyRecord[][] = [];
  for (let i = 0; i < records.length; i += 25) batches.push(records.slice(i, i + 25));
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < batches.length) {
        let items = batches[next++]!.map((r) => ({ PutRequest: { Item: marshall(r, { removeUndefinedValues: true }) } }));
        while (items.length) {
          const out = await db.client.send(new BatchWriteItemCommand({ RequestItems: { [db.tables.keys]: items } }));
          items = (out.UnprocessedItems?.[db.tables.keys] ?? []) as typeof items;
        }
      }
    }),
  );
}

describe('kill switch', () => {
  let db: TestTables;
  let handler: ReturnType<typeof createKillSwitchHandler>;
  let keys: DynamoDbKeyStore;
  let store: DynamoDbGuardrailStore;

  beforeAll(async () => {
    db = await createTestTables();
    const config = {
      ...loadConfig({ TOLLGATE_BUDGET_NAME: BUDGET, TOLLGATE_ACCOUNT_ID: '123456789012', TOLLGATE_ALERTS_TOPIC_ARN: TOPIC, TOLLGATE_PLATFORM_SHARDS: '4' }),
      tables: db.tables,
    };
    handler = createKillSwitchHandler({ config, dynamodb: db.client, budgets: new BudgetsClient({ region: 'us-east-1' }), sns: new SNSClient({ region: 'us-east-1' }), log: silentLogger });
    keys = new DynamoDbKeyStore(db.client, db.tables);
    store = new DynamoDbGuardrailStore(db.client, { tables: db.tables, platformShards: 4 });
  });
  afterAll(() => db.cleanup());
  beforeEach(() => {
    budgetsMock.reset();
    snsMock.reset();
    snsMock.on(PublishCommand).resolves({ MessageId: 'x' });
  });

  it('when a forged notification claims the budget is exceeded but DescribeBudget says otherwise, nothing changes', async () => {
    await keys.create(key('forged-check'));
    describeBudget('41.20');
    await handler(snsEvent(BUDGET_NOTIFICATION));
    expect(budgetsMock.commandCalls(DescribeBudgetCommand)[0]!.args[0].input).toEqual({ AccountId: '123456789012', BudgetName: BUDGET });
    expect((await keys.get('forged-check'))!.status).toBe('active');
    expect((await store.getKillSwitch()).active).toBe(false);
    expect(snsMock.commandCalls(PublishCommand)).toHaveLength(0);
  });

  it('when the notification names another budget or is a forecast or a lower threshold, it is ignored without asking Budgets', async () => {
    await handler(snsEvent(BUDGET_NOTIFICATION.replaceAll(BUDGET, 'someone-elses-budget')));
    await handler(snsEvent(BUDGET_NOTIFICATION.replaceAll('ACTUAL', 'FORECASTED')));
    expect(budgetsMock.commandCalls(DescribeBudgetCommand)).toHaveLength(0);
    describeBudget('85.00');
    await handler(snsEvent(BUDGET_NOTIFICATION.replaceAll('$100.00 for', '$80.00 for').replace('> $100.00', '> $80.00')));
    expect((await store.getKillSwitch()).active).toBe(false);
    expect((await keys.get('forged-check'))!.status).toBe('active');
  });

  it('when a real notification is confirmed, 5,000 active keys are suspended, hand-suspended keys untouched, the platform stopped and reported; a repeat changes nothing; resume restores exactly those keys', async () => {
    const active = Array.from({ length: 5_000 }, (_, i) => key(`ks-${String(i).padStart(5, '0')}`));
    await seedKeys(db, [...active, key('by-hand', 'suspended', 'operator'), key('revoked-one', 'revoked', 'operator')]);
    describeBudget('104.37');

    // How long this takes is a machine's speed, not behaviour: `npm run bench:kill-switch` times it.
    await handler(snsEvent(BUDGET_NOTIFICATION), { getRemainingTimeInMillis: () => 300_000 });

    const state = await store.getKillSwitch();
    expect(state).toMatchObject({ active: true, completed: true, budgetName: BUDGET, actualMicros: 104_370_000 });
    expect(state.suspendedKeys).toBe(5_001); // the 5,000 plus the key of the forged-notification test
    let suspendedByKillSwitch = 0;
    for await (const page of keys.listAll({ status: 'suspended' })) suspendedByKillSwitch += page.filter((k) => k.statusChangedBy === 'kill-switch').length;
    expect(suspendedByKillSwitch).toBe(5_001);
    let stillActive = 0;
    for await (const page of keys.listAll({ status: 'active' })) stillActive += page.length;
    expect(stillActive).toBe(0);
    expect((await keys.get('by-hand'))!.statusChangedBy).toBe('operator');

    // The platform circuit is open on every shard until acknowledged.
    const ledger = new DynamoDbLedger(db.client, { tables: db.tables, platformShards: 4, usageRetentionDays: 1 });
    const err = await ledger
      .reserve({ requestId: 'r-ks', now: Date.now(), expiresAt: Date.now() + 60_000, amount: 1, counters: [], rateCharges: [], circuits: [{ scope: 'platform', shard: 3 }], context: { keyId: 'x', userId: 'y', model: 'm' } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CircuitOpenError);

    // Reported to the alerts topic in the notifier's shape.
    const published = snsMock.commandCalls(PublishCommand);
    expect(published).toHaveLength(1);
    expect(published[0]!.args[0].input.TopicArn).toBe(TOPIC);
    const message = JSON.parse(published[0]!.args[0].input.Message!);
    expect(message).toMatchObject({ source: 'tollgate', type: 'kill-switch', details: { budget: BUDGET, suspended: 5_001, completed: true } });
    expect(message.summary).toContain('5001 keys suspended');

    // A repeated notification changes nothing and reports nothing.
    await keys.create(key('created-after'));
    await handler(snsEvent(BUDGET_NOTIFICATION));
    expect((await keys.get('created-after'))!.status).toBe('active');
    expect(snsMock.commandCalls(PublishCommand)).toHaveLength(1);

    // Resume: exactly the kill switch's keys come back; the hand-suspended and revoked ones stay.
    const killSwitch = new KillSwitch({
      keys,
      bulk: new DynamoDbKeyStatusBatch(db.client, db.tables),
      store,
      budgets: budgetsReader(new BudgetsClient({ region: 'us-east-1' }), '123456789012'),
      reporter: killSwitchReporter(store, snsAlertPublisher(new SNSClient({ region: 'us-east-1' }), TOPIC)),
      clock: systemClock,
      log: silentLogger,
      budgetName: BUDGET,
    });
    await expect(killSwitch.resume({ by: 'ops', reason: '  ' })).rejects.toThrow(/needs a reason/);
    const resumed = await killSwitch.resume({ by: 'ops@example.com', reason: 'runaway job stopped, budget raised' });
    expect(resumed).toEqual({ restoredKeys: 5_001, wasActive: true });
    expect((await keys.get('ks-04999'))!.status).toBe('active');
    expect((await keys.get('by-hand'))!.status).toBe('suspended');
    expect((await keys.get('revoked-one'))!.status).toBe('revoked');
    expect((await store.getKillSwitch()).resumed).toMatchObject({ by: 'ops@example.com', reason: 'runaway job stopped, budget raised', restoredKeys: 5_001 });
    await expect(
      ledger.reserve({ requestId: 'r-ks2', now: Date.now(), expiresAt: Date.now() + 60_000, amount: 1, counters: [], rateCharges: [], circuits: [{ scope: 'platform', shard: 3 }], context: { keyId: 'x', userId: 'y', model: 'm' } }),
    ).resolves.toBeDefined();
    // ~15,000 writes on one DynamoDB Local: seconds on a quiet machine, minutes on a loaded one. The timeout only
    // catches a hang.
  }, 600_000);
});
