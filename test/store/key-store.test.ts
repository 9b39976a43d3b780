import { InvalidRequestError } from '../../lambda/core/errors';
import type { KeyRecord } from '../../lambda/core/types';
import { DynamoDbKeyStore } from '../../lambda/store/dynamodb/key-store';
import { createTestTables, type TestTables } from '../support/dynamo';

let db: TestTables;
let store: DynamoDbKeyStore;

beforeAll(async () => {
  db = await createTestTables();
  store = new DynamoDbKeyStore(db.client, db.tables);
});
afterAll(() => db.cleanup());

function key(keyId: string, overrides: Partial<KeyRecord> = {}): KeyRecord {
  return {
    keyId,
    prefix: `sk-tg-${keyId.slice(0, 6)}…`,
    hash: 'a'.repeat(64),
    userId: 'alice',
    name: `key ${keyId}`,
    scopes: ['ai:complete', 'ai:usage'],
    status: 'active',
    createdAt: '2099-11-23T10:00:00.000Z',
    ...overrides,
  };
}

describe('DynamoDbKeyStore', () => {
  it('when a key is created, it reads back field for field (scopes and optional limits included)', async () => {
    const record = key('k-roundtrip', { orgId: 'acme', rpm: 60, tpm: 40_000, expiresAt: '2027-01-01T00:00:00.000Z' });
    await store.create(record);
    expect(await store.get('k-roundtrip')).toEqual(record);
  });

  it('when a key does not exist, get returns undefined', async () => {
    expect(await store.get('k-missing')).toBeUndefined();
  });

  it('when a keyId is taken, create throws InvalidRequestError and leaves the first key unchanged', async () => {
    await store.create(key('k-dup', { name: 'first' }));
    await expect(store.create(key('k-dup', { name: 'second' }))).rejects.toThrow(InvalidRequestError);
    expect((await store.get('k-dup'))?.name).toBe('first');
  });

  it('when keys of several users exist, listByUser returns only that user’s keys', async () => {
    await store.create(key('k-bob-1', { userId: 'bob', createdAt: '2099-11-01T00:00:00.000Z' }));
    await store.create(key('k-bob-2', { userId: 'bob', createdAt: '2099-11-02T00:00:00.000Z' }));
    await store.create(key('k-carol-1', { userId: 'carol' }));
    const bobs = await store.listByUser('bob');
    expect(bobs.map((k) => k.keyId)).toEqual(['k-bob-1', 'k-bob-2']);
  });

  it('when the kill switch suspends a key, only its own suspension can be undone by it', async () => {
    await store.create(key('k-ks'));
    expect(await store.setStatus('k-ks', { status: 'suspended', actor: 'kill-switch', reason: 'budget', onlyIfStatus: 'active' })).toBe(true);
    expect(await store.get('k-ks')).toMatchObject({ status: 'suspended', statusChangedBy: 'kill-switch', statusReason: 'budget' });

    // An operator takes over the suspension: the kill switch must no longer resume it.
    expect(await store.setStatus('k-ks', { status: 'suspended', actor: 'operator' })).toBe(true);
    const resumed = await store.setStatus('k-ks', {
      status: 'active',
      actor: 'kill-switch',
      onlyIfStatus: 'suspended',
      onlyIfActor: 'kill-switch',
    });
    expect(resumed).toBe(false);
    const after = await store.get('k-ks');
    expect(after).toMatchObject({ status: 'suspended', statusChangedBy: 'operator' });
    expect(after?.statusReason).toBeUndefined();
  });

  it('when setStatus targets a missing key, it returns false and creates nothing', async () => {
    expect(await store.setStatus('k-ghost', { status: 'revoked', actor: 'operator' })).toBe(false);
    expect(await store.get('k-ghost')).toBeUndefined();
  });

  it('when listing all keys by status, the pages hold exactly the keys in that status', async () => {
    await store.create(key('k-rev-1'));
    await store.create(key('k-rev-2'));
    await store.setStatus('k-rev-1', { status: 'revoked', actor: 'operator' });
    await store.setStatus('k-rev-2', { status: 'revoked', actor: 'operator' });
    const revoked: string[] = [];
    for await (const page of store.listAll({ status: 'revoked' })) revoked.push(...page.map((k) => k.keyId));
    expect(revoked.sort()).toEqual(['k-rev-1', 'k-rev-2']);

    const all: string[] = [];
    for await (const page of store.listAll()) all.push(...page.map((k) => k.keyId));
    expect(all).toEqual(expect.arrayContaining(['k-rev-1', 'k-bob-1', 'k-ks']));
  });

  it('when touchLastUsed gets an older time than stored, lastUsedAt does not move backwards', async () => {
    await store.create(key('k-touch'));
    await store.touchLastUsed('k-touch', '2099-11-23T12:00:00.000Z');
    await store.touchLastUsed('k-touch', '2099-11-23T11:00:00.000Z');
    expect((await store.get('k-touch'))?.lastUsedAt).toBe('2099-11-23T12:00:00.000Z');
    await store.touchLastUsed('k-nobody', '2099-11-23T12:00:00.000Z');
    expect(await store.get('k-nobody')).toBeUndefined();
  });
});
