/**
 * tollgate for bench:portkey, assembled as `npm start` assembles it (lambda/local/main.ts): DynamoDB Local in
 * memory, the tables, createGateway with local BYOK data keys, the local server on loopback; logging at warn
 * (as `npm start -- --quiet`). Its OpenAI upstream is the bench's fake (OPENAI_BASE_URL). Tells the parent its
 * URL, a key with generous limits and DynamoDB Local's pid over IPC. Counts the DynamoDB calls it makes per
 * command (a transaction counted once, and by its items; around `send`, as item calls skip the SDK middleware): the parent asks with the message 'store-calls'.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { createGateway } from '../../lambda/compose';
import { loadConfig } from '../../lambda/config';
import { LocalDataKeyProvider } from '../../lambda/core/byok/crypto';
import { systemClock } from '../../lambda/core/clock';
import { createApiKey } from '../../lambda/core/key-admin';
import { jsonLogger } from '../../lambda/core/log';
import { startDynamoDbLocal } from '../../lambda/local/dynamodb-local';
import { createLocalServer } from '../../lambda/local/server';
import { createDynamoDbClient } from '../../lambda/store/dynamodb/client';
import { ensureTables } from '../../lambda/store/dynamodb/create-tables';

async function main(): Promise<void> {
  const dynamo = await startDynamoDbLocal({ port: 0, inMemory: true, startTimeoutMs: 180_000 });
  const stop = async () => {
    await dynamo.stop();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('disconnect', () => void stop());
  const log = jsonLogger({ level: 'warn' });
  const config = { ...loadConfig(process.env), dynamodbEndpoint: dynamo.endpoint, adminAuth: 'local-token' as const };
  const dynamodb = createDynamoDbClient({ region: config.region, endpoint: dynamo.endpoint, cacheMiddleware: true, directCalls: true });
  // Counted around send: item calls go out directly, past any middleware.
  const storeCalls: Record<string, number> = {};
  const send = dynamodb.send.bind(dynamodb) as (command: { input: unknown }, ...rest: unknown[]) => Promise<unknown>;
  (dynamodb as { send: unknown }).send = (command: { input: unknown }, ...rest: unknown[]) => {
    const table = (command.input as { TableName?: string }).TableName;
    const name = `${command.constructor.name.replace(/Command$/, '')}${table ? ` ${table.replace(/^tollgate-benchportkey-/, '')}` : ''}`;
    storeCalls[name] = (storeCalls[name] ?? 0) + 1;
    const items = (command.input as { TransactItems?: unknown[] }).TransactItems;
    if (items) storeCalls[`${name} items`] = (storeCalls[`${name} items`] ?? 0) + items.length;
    return send(command, ...rest);
  };
  process.on('message', (message) => {
    if (message === 'store-calls') process.send?.({ storeCalls: { ...storeCalls } });
  });
  await ensureTables(dynamodb, config.tables);
  const keyPepper = randomBytes(16).toString('hex');
  const gateway = createGateway({
    config,
    adminToken: `tga-${randomBytes(24).toString('base64url')}`,
    byokDataKeys: new LocalDataKeyProvider(randomBytes(32)),
    secrets: { keyPepper, openaiApiKey: 'sk-bench-upstream' },
    dynamodb,
    log,
    batchUsageWrites: true,
  });
  const { raw } = await createApiKey(
    gateway,
    { userId: 'bench', rpm: 1_000_000, tpm: 1_000_000_000, budget: { window: 'day', limit: 1_000_000_000_000 } },
    { pepper: keyPepper, clock: systemClock },
  );
  await gateway.ledger.setLimit('user:bench', 'month', 1_000_000_000_000);
  await gateway.ledger.setLimit('platform', 'month', 10_000_000_000_000);
  const server = createLocalServer({ app: gateway.app, maxBodyBytes: config.maxBodyBytes, log });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  process.send?.({ ready: { url, key: raw, dynamoPid: dynamo.pid } });
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
