import { newRun, RunConflictError } from '../../lambda/core/agent/run';
import { DynamoDbRunStore } from '../../lambda/store/dynamodb/runs-store';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { createTestTables, type TestTables } from '../support/dynamo';

let db: TestTables;
let table: string;
let store: DynamoDbRunStore;

beforeAll(async () => {
  db = await createTestTables();
  table = db.tables.runs;
  store = new DynamoDbRunStore(db.client, { table, retentionDays: 7 });
});

afterAll(async () => {
  await db.cleanup();
});

const run = (id: string) =>
  newRun(
    { instructions: 'Classify.', input: ['a', ''], model: 'gpt-4o', maxCostMicros: 500_000 },
    { id, userId: 'alice', orgId: 'acme', keyId: 'k1' },
    { now: Date.parse('2099-11-23T10:00:00Z'), defaultMaxCostMicros: 1_000_000 },
  );

describe('DynamoDbRunStore', () => {
  it('when a run is created and read back, every field survives, with a TTL from its creation', async () => {
    const created = run('run_a');
    await store.create(created);
    expect(await store.get('run_a')).toEqual(created);
    const { Item } = await db.client.send(new GetItemCommand({ TableName: table, Key: { runId: { S: 'run_a' } } }));
    expect(Number(Item!.ttl!.N)).toBe(Date.parse('2099-11-23T10:00:00Z') / 1000 + 7 * 86_400);
    await expect(store.create(created)).rejects.toBeInstanceOf(RunConflictError);
  });

  it('when two writers save from the same version, the second gets RunConflictError and changes nothing', async () => {
    await store.create(run('run_b'));
    const read = (await store.get('run_b'))!;
    const first = await store.save({ ...read, status: 'running', attempts: 1 });
    expect(first.version).toBe(1);
    await expect(store.save({ ...read, status: 'failed' })).rejects.toBeInstanceOf(RunConflictError);
    expect(await store.get('run_b')).toMatchObject({ status: 'running', attempts: 1, version: 1 });
    const done = await store.save({ ...first, status: 'succeeded', steps: 2, costMicros: 1234, outputs: [{ item: 0, value: 'positive' }], result: 'ok' });
    expect(await store.get('run_b')).toEqual(done);
  });

  it('when a run is missing, get answers undefined', async () => {
    expect(await store.get('run_missing')).toBeUndefined();
  });
});
