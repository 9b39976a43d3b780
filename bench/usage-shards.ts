/**
 * What the usage table's day partitions (usage-store.ts: USAGE_DAY_SHARDS a day, a user's records over
 * USAGE_SCOPE_SHARDS of them) buy on the write side and cost on the read side.
 *
 * Writes (counted, not timed): RATE requests a second for 60 s with request ids shaped like the gateway's, sent
 * by one user with one key in one org, then by many users (the platform); every record's partition key comes
 * from the real `usageItem` (the table has no index a record writes). The figure is the busiest partition key's
 * writes in any one second times the write units of one record (its DynamoDB item size, computed), as a ratio
 * of DynamoDB's 1,000 WCU/s per partition, next to the single-partition layout v1 (every record of the user on
 * one key).
 *
 * Reads (timed on DynamoDB Local, interleaved, medians): the same records written in both layouts; a user's
 * day report and a findRequest through the store, as ratios of the single-partition reads the store ran in
 * layout v1 (the baseline, measured in the same run).
 *
 *   npm run bench:usage-shards              (1,000 req/s, 2,000 records read back)
 *   npm run bench:usage-shards -- 3000 5000 (another rate and record count)
 */
import { BatchWriteItemCommand, QueryCommand, type AttributeValue, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { randomUUID } from 'node:crypto';
import type { UsageRecord } from '../lambda/core/types';
import { startDynamoDbLocal } from '../lambda/local/dynamodb-local';
import { createDynamoDbClient } from '../lambda/store/dynamodb/client';
import { ensureTables } from '../lambda/store/dynamodb/create-tables';
import { USAGE_SCOPE_SHARDS, type TableNames } from '../lambda/store/dynamodb/schema';
import { DynamoDbUsageStore, usageItem, usageRecordFromItem, usageSortKey } from '../lambda/store/dynamodb/usage-store';

type Item = Record<string, AttributeValue>;

const PARTITION_WCU_PER_SECOND = 1_000;
const SECONDS = 60;
const ROUNDS = 11;
/** The next UTC midnight: a whole day of records ahead of now, which no retention TTL can have expired. */
const DAY = Math.ceil(Date.now() / 86_400_000) * 86_400_000;

function record(requestId: string, at: number): UsageRecord {
  return {
    requestId,
    timestamp: new Date(at).toISOString(),
    userId: 'user-8f14e45fceea167a',
    keyId: 'k7Qx3vR9sT2wY5zA',
    orgId: 'org-analytics-platform',
    provider: 'bedrock',
    model: 'anthropic.claude-3-5-sonnet-20241022-v2:0',
    requestType: 'chat',
    endpoint: '/v1/chat/completions',
    stream: true,
    usage: { inputTokens: 183_204, outputTokens: 4_096, cachedInputTokens: 150_000, cacheWriteTokens: 12_000 },
    costMicros: 1_234_567,
    costEstimated: false,
    overshootMicros: 1_234,
    outcome: 'ok',
    httpStatus: 200,
    durationMs: 18_532,
    userAgent: 'AsyncOpenAI/Python 1.54.4 langchain-openai/0.2.9 (Linux; x86_64) CPython/3.12.7',
    byok: false,
  };
}

/** DynamoDB's item size: attribute names plus values (strings in UTF-8, numbers ~1 byte per 2 digits + 1). */
function itemBytes(item: Item): number {
  let bytes = 0;
  for (const [name, value] of Object.entries(item)) {
    bytes += Buffer.byteLength(name);
    if (value.S !== undefined) bytes += Buffer.byteLength(value.S);
    else if (value.N !== undefined) bytes += Math.ceil(value.N.replace(/^-|\.|^0+/g, '').length / 2) + 1;
    else bytes += 1;
  }
  return bytes;
}

function writeSpread(rate: number): void {
  const sample = usageItem(record(`req_${randomUUID().replace(/-/g, '')}`, DAY), { retentionDays: 400 });
  const bytes = itemBytes(sample);
  const wcu = Math.ceil(bytes / 1024);
  const busiest = { one: 0, many: 0 };
  const keys = { one: new Set<string>(), many: new Set<string>() };
  for (let second = 0; second < SECONDS; second++) {
    for (const who of ['one', 'many'] as const) {
      const perKey = new Map<string, number>();
      for (let i = 0; i < rate; i++) {
        const r = record(`req_${randomUUID().replace(/-/g, '')}`, DAY + second * 1000 + Math.floor((i * 1000) / rate));
        const key = usageItem(who === 'one' ? r : { ...r, userId: `user-${randomUUID()}` }, { retentionDays: 400 }).pk!.S!;
        keys[who].add(key);
        perKey.set(key, (perKey.get(key) ?? 0) + 1);
      }
      for (const writes of perKey.values()) busiest[who] = Math.max(busiest[who], writes);
    }
  }
  console.log(`writes: ${rate.toLocaleString('en-US')} req/s for ${SECONDS} s (record ${bytes} bytes = ${wcu} WCU each, no index)`);
  console.log(`  partition                       keys   busiest key writes/s   WCU/s    of the 1,000 WCU/s partition limit`);
  const row = (label: string, count: number, writes: number) =>
    `  ${label.padEnd(31)} ${String(count).padStart(4)}   ${String(writes).padStart(20)}   ${String(writes * wcu).padStart(5)}    ${((writes * wcu) / PARTITION_WCU_PER_SECOND).toFixed(2)}×`;
  console.log(row('v1: user#<id>, one user', 1, rate));
  console.log(row('day#<date>#<d>, one user', keys.one.size, busiest.one));
  console.log(row('day#<date>#<d>, many users', keys.many.size, busiest.many));
  // The fields the gateway bounds, at their bounds: ids of 128 characters (JWT ids), a 256-character user agent
  // (core/pipeline/settle.ts cuts it there; header bytes above 0x7F take 2 bytes in UTF-8).
  const long = 'x'.repeat(128);
  const largest = itemBytes(
    usageItem({ ...record(`req_${randomUUID().replace(/-/g, '')}`, DAY), userId: long, keyId: long, orgId: long, userAgent: 'é'.repeat(256) }, { retentionDays: 400 }),
  );
  const largestWcu = Math.ceil(largest / 1024);
  console.log(
    `  largest record with bounded fields: ${largest} bytes = ${largestWcu} WCU → busiest key of one user ${busiest.one * largestWcu} WCU/s = ` +
      `${((busiest.one * largestWcu) / PARTITION_WCU_PER_SECOND).toFixed(2)}× the limit`,
  );
}

async function putAll(client: DynamoDBClient, table: string, items: readonly Item[]): Promise<void> {
  const batches: Item[][] = [];
  for (let i = 0; i < items.length; i += 25) batches.push(items.slice(i, i + 25));
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < batches.length) {
        let requests = batches[next++]!.map((Item) => ({ PutRequest: { Item } }));
        for (let attempt = 0; requests.length > 0; attempt++) {
          if (attempt >= 50) throw new Error('DynamoDB Local kept items unprocessed');
          const out = await client.send(new BatchWriteItemCommand({ RequestItems: { [table]: requests } }));
          requests = (out.UnprocessedItems?.[table] ?? []) as typeof requests;
        }
      }
    }),
  );
}

/** The store's query in layout v1: one partition, every page, items turned into records. */
async function preShardQuery(client: DynamoDBClient, table: string, userId: string, from: string, to: string): Promise<number> {
  const records: UsageRecord[] = [];
  let start: Item | undefined;
  do {
    const page = await client.send(
      new QueryCommand({
        TableName: table,
        KeyConditionExpression: 'pk = :p AND sk BETWEEN :from AND :to',
        ExpressionAttributeValues: { ':p': { S: `user#${userId}` }, ':from': { S: from }, ':to': { S: to } },
        ExclusiveStartKey: start,
      }),
    );
    records.push(...(page.Items ?? []).map(usageRecordFromItem));
    start = page.LastEvaluatedKey;
  } while (start);
  return records.length;
}

/** findRequest on layout v1: the user's one partition newest first, at most 5,000 read. */
async function preShardFind(client: DynamoDBClient, table: string, userId: string, requestId: string): Promise<UsageRecord | undefined> {
  let start: Item | undefined;
  let scanned = 0;
  do {
    const page = await client.send(
      new QueryCommand({
        TableName: table,
        KeyConditionExpression: 'pk = :p',
        FilterExpression: 'requestId = :r',
        ExpressionAttributeValues: { ':p': { S: `user#${userId}` }, ':r': { S: requestId } },
        ScanIndexForward: false,
        Limit: Math.min(500, 5_000 - scanned),
        ExclusiveStartKey: start,
      }),
    );
    if (page.Items?.[0]) return usageRecordFromItem(page.Items[0]);
    scanned += page.ScannedCount ?? 0;
    start = page.LastEvaluatedKey;
  } while (start && scanned < 5_000);
  return undefined;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return performance.now() - started;
}

async function readCost(count: number): Promise<void> {
  const dynamo = await startDynamoDbLocal({ port: 0, inMemory: true, startTimeoutMs: 120_000 });
  const client = createDynamoDbClient({ region: 'us-east-1', endpoint: dynamo.endpoint, requestTimeoutMs: 60_000, maxAttempts: 10 });
  try {
    const names = (prefix: string): TableNames => ({
      keys: `${prefix}-keys`, budgets: `${prefix}-budgets`, usage: `${prefix}-usage`, byok: `${prefix}-byok`,
      audit: `${prefix}-audit`, runs: `${prefix}-runs`, cache: `${prefix}-cache`, reconcile: `${prefix}-reconcile`,
    });
    const [sharded, before] = [names('sharded'), names('before')];
    await ensureTables(client, sharded);
    await ensureTables(client, before);
    const records = Array.from({ length: count }, (_, i) => record(`req_${randomUUID().replace(/-/g, '')}`, DAY + Math.floor((i * 86_400_000) / count)));
    const items = records.map((r) => usageItem(r, { retentionDays: 400 }));
    await putAll(client, sharded.usage, items);
    await putAll(
      client,
      before.usage,
      items.map((i, n) => ({ ...i, pk: { S: `user#${records[0]!.userId}` }, sk: { S: usageSortKey(records[n]!.timestamp, records[n]!.requestId) } })),
    );

    // Today is the records' day, as for a request looked up the day it was made.
    const store = new DynamoDbUsageStore(client, sharded, { now: () => DAY + 43_200_000 });
    const user = records[0]!.userId;
    const [from, to] = [new Date(DAY).toISOString(), new Date(DAY + 86_400_000).toISOString()];
    const target = records[Math.floor(count / 2)]!; // half way back in the key's history
    const t = { before: [] as number[], sharded: [] as number[], findBefore: [] as number[], findSharded: [] as number[] };
    for (let round = 0; round < ROUNDS; round++) {
      let got = 0;
      t.before.push(await timed(async () => (got = await preShardQuery(client, before.usage, user, from, to))));
      if (got !== count) throw new Error(`the single-partition query found ${got} of ${count}`);
      t.sharded.push(await timed(async () => (got = (await store.query({ by: 'user', id: user, from, to })).length)));
      if (got !== count) throw new Error(`the sharded query found ${got} of ${count}`);
      let found: UsageRecord | undefined;
      t.findBefore.push(await timed(async () => (found = await preShardFind(client, before.usage, target.userId, target.requestId))));
      if (found?.requestId !== target.requestId) throw new Error('the single-partition findRequest missed the record');
      t.findSharded.push(await timed(async () => (found = await store.findRequest({ keyId: target.keyId, userId: target.userId, requestId: target.requestId, maxScanned: 5_000 }))));
      if (found?.requestId !== target.requestId) throw new Error('the sharded findRequest missed the record');
    }
    const row = (label: string, ms: number, base: number) => `  ${label.padEnd(52)} ${ms.toFixed(1).padStart(8)} ms   ${(ms / base).toFixed(2).padStart(5)}× baseline`;
    console.log(`reads: ${count.toLocaleString('en-US')} records of one user in one day, DynamoDB Local, medians of ${ROUNDS} interleaved rounds`);
    console.log(row('baseline: day report, one partition (before)', median(t.before), median(t.before)));
    console.log(row(`day report, ${USAGE_SCOPE_SHARDS} day partitions + v1/v2 ones in parallel`, median(t.sharded), median(t.before)));
    console.log(row('baseline: findRequest half way back, one partition', median(t.findBefore), median(t.findBefore)));
    console.log(row('findRequest half way back, its one day partition', median(t.findSharded), median(t.findBefore)));
  } finally {
    client.destroy();
    await dynamo.stop();
  }
}

async function main(): Promise<void> {
  const rate = Number(process.argv[2] ?? 1_000);
  const count = Number(process.argv[3] ?? 2_000);
  if (!Number.isInteger(rate) || rate < 1 || rate > 20_000) throw new Error('rate must be an integer from 1 to 20000 req/s');
  if (!Number.isInteger(count) || count < 1 || count > 50_000) throw new Error('record count must be an integer from 1 to 50000');
  writeSpread(rate);
  await readCost(count);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : String(err));
  process.exitCode = 1;
});
