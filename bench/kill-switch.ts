/**
 * How long the kill switch takes to stop a platform with many keys, on its own DynamoDB Local: a confirmed
 * AWS Budgets notification suspends every active key (then `resume` restores them). The test suite proves
 * what the pass does (test/guardrails/kill-switch.test.ts); this bench times it, because a test must not
 * judge machine speed.
 *
 * The figure is a ratio against a baseline measured in the same run on the same DynamoDB Local: writing the
 * same number of keys with BatchWriteItem (25 a request, 8 requests in flight). A pass that writes each key
 * once in batches should stay within a small multiple of that, however fast or busy the machine is.
 *
 *   npm run bench:kill-switch            (5,000 keys)
 *   npm run bench:kill-switch -- 20000   (another count)
 *
 * Budgets and SNS cannot run here: they are answered by aws-sdk-client-mock, as in the tests.
 */
import { BatchWriteItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BudgetsClient, DescribeBudgetCommand } from '@aws-sdk/client-budgets';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import { marshall } from '@aws-sdk/util-dynamodb';
import type { SNSEvent } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { loadConfig } from '../lambda/config';
import { systemClock } from '../lambda/core/clock';
import { KillSwitch } from '../lambda/core/guardrails/kill-switch';
import { silentLogger } from '../lambda/core/log';
import type { KeyRecord } from '../lambda/core/types';
import { budgetsReader, createKillSwitchHandler, killSwitchReporter, snsAlertPublisher } from '../lambda/handlers/kill-switch';
import { startDynamoDbLocal } from '../lambda/local/dynamodb-local';
import { createDynamoDbClient } from '../lambda/store/dynamodb/client';
import { ensureTables } from '../lambda/store/dynamodb/create-tables';
import { DynamoDbGuardrailStore } from '../lambda/store/dynamodb/guardrails-store';
import { DynamoDbKeyStatusBatch } from '../lambda/store/dynamodb/key-status-batch';
import { DynamoDbKeyStore } from '../lambda/store/dynamodb/key-store';
import type { TableNames } from '../lambda/store/dynamodb/schema';
import { BUDGET_NOTIFICATION } from '../test/guardrails/fixtures';

const BUDGET = 'tollgate-dev-monthly';
const TOPIC = 'arn:aws:sns:us-east-1:123456789012:tollgate-dev-alerts';

function key(keyId: string): KeyRecord {
  return {
    keyId,
    prefix: `sk-tg-${keyId.slice(0, 6)}`,
    hash: `h-${keyId}`,
    userId: `user-${keyId}`,
    name: 'k',
    scopes: ['ai:complete'],
    status: 'active',
    createdAt: new Date(systemClock.now()).toISOString(),
  };
}

/** BatchWriteItem, 25 a request, 8 requests in flight: the baseline. */
async function seedKeys(client: DynamoDBClient, table: string, records: readonly KeyRecord[]): Promise<void> {
  const batches: KeyRecord[][] = [];
  for (let i = 0; i < records.length; i += 25) batches.push(records.slice(i, i + 25));
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < batches.length) {
        let items = batches[next++]!.map((r) => ({ PutRequest: { Item: marshall(r, { removeUndefinedValues: true }) } }));
        while (items.length) {
          const out = await client.send(new BatchWriteItemCommand({ RequestItems: { [table]: items } }));
          items = (out.UnprocessedItems?.[table] ?? []) as typeof items;
        }
      }
    }),
  );
}

function snsEvent(): SNSEvent {
  return {
    Records: [
      {
        EventSource: 'aws:sns',
        EventVersion: '1.0',
        EventSubscriptionArn: 'arn:aws:sns:us-east-1:123456789012:tollgate-dev-budget:sub',
        Sns: {
          Type: 'Notification',
          MessageId: 'bench',
          TopicArn: 'arn:aws:sns:us-east-1:123456789012:tollgate-dev-budget',
          Subject: `AWS Budgets: ${BUDGET} has exceeded your alert threshold`,
          Message: BUDGET_NOTIFICATION,
          Timestamp: new Date(systemClock.now()).toISOString(),
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

async function timed<T>(work: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await work();
  return { value, ms: performance.now() - started };
}

async function main(): Promise<void> {
  const count = Number(process.argv[2] ?? 5_000);
  if (!Number.isInteger(count) || count < 1 || count > 100_000) throw new Error('key count must be an integer from 1 to 100000');
  mockClient(BudgetsClient)
    .on(DescribeBudgetCommand)
    .resolves({
      Budget: {
        BudgetName: BUDGET,
        BudgetType: 'COST',
        TimeUnit: 'MONTHLY',
        BudgetLimit: { Amount: '100.0', Unit: 'USD' },
        CalculatedSpend: { ActualSpend: { Amount: '104.37', Unit: 'USD' } },
      },
    });
  mockClient(SNSClient).on(PublishCommand).resolves({ MessageId: 'bench' });

  const dynamo = await startDynamoDbLocal({ port: 0, inMemory: true, startTimeoutMs: 120_000 });
  // Retries as in the tests: a busy DynamoDB Local answers lock timeouts that real DynamoDB would not.
  const client = createDynamoDbClient({ region: 'us-east-1', endpoint: dynamo.endpoint, requestTimeoutMs: 60_000, maxAttempts: 10 });
  try {
    const tables: TableNames = { keys: 'ks-keys', budgets: 'ks-budgets', usage: 'ks-usage', byok: 'ks-byok', audit: 'ks-audit', runs: 'ks-runs' };
    await ensureTables(client, tables);
    const config = {
      ...loadConfig({ TOLLGATE_BUDGET_NAME: BUDGET, TOLLGATE_ACCOUNT_ID: '123456789012', TOLLGATE_ALERTS_TOPIC_ARN: TOPIC, TOLLGATE_PLATFORM_SHARDS: '4' }),
      tables,
    };
    const keys = new DynamoDbKeyStore(client, tables);
    const store = new DynamoDbGuardrailStore(client, { tables, platformShards: 4 });
    const handler = createKillSwitchHandler({ config, dynamodb: client, budgets: new BudgetsClient({ region: 'us-east-1' }), sns: new SNSClient({ region: 'us-east-1' }), log: silentLogger });

    const seed = await timed(() => seedKeys(client, tables.keys, Array.from({ length: count }, (_, i) => key(`ks-${String(i).padStart(6, '0')}`))));
    const pass = await timed(() => handler(snsEvent(), { getRemainingTimeInMillis: () => 900_000 }));
    const state = await store.getKillSwitch();
    if (state.suspendedKeys !== count || !state.completed) throw new Error(`the pass suspended ${state.suspendedKeys} of ${count} keys (completed: ${state.completed})`);
    const killSwitch = new KillSwitch({
      keys,
      bulk: new DynamoDbKeyStatusBatch(client, tables),
      store,
      budgets: budgetsReader(new BudgetsClient({ region: 'us-east-1' }), '123456789012'),
      reporter: killSwitchReporter(store, snsAlertPublisher(new SNSClient({ region: 'us-east-1' }), TOPIC)),
      clock: systemClock,
      log: silentLogger,
      budgetName: BUDGET,
    });
    const resume = await timed(() => killSwitch.resume({ by: 'bench', reason: 'bench run' }));
    if (resume.value.restoredKeys !== count) throw new Error(`resume restored ${resume.value.restoredKeys} of ${count} keys`);

    const row = (label: string, ms: number) =>
      `${label.padEnd(34)} ${(ms / 1000).toFixed(2).padStart(8)} s   ${(ms / seed.ms).toFixed(2).padStart(6)} × baseline`;
    console.log(`kill switch on ${count.toLocaleString('en-US')} active keys (DynamoDB Local, this machine, this run)`);
    console.log(row('baseline: BatchWriteItem the keys', seed.ms));
    console.log(row('kill switch pass (suspend all)', pass.ms));
    console.log(row('resume (restore all)', resume.ms));
  } finally {
    client.destroy();
    await dynamo.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : String(err));
  process.exitCode = 1;
});
