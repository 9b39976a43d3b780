/**
 * The authenticator's cached check of a key it verified before (a digest of the raw key instead of the HMAC):
 * it must accept exactly what the HMAC accepts. A key store in memory stands in for the table: the cache is
 * the subject, not the store.
 */
import { Authenticator } from '../../lambda/core/auth';
import { generateApiKey, hashApiKey } from '../../lambda/core/api-keys';
import type { KeyStore } from '../../lambda/core/stores';
import type { KeyRecord } from '../../lambda/core/types';

const PEPPER = 'pepper-for-tests';
let nowMs = 1_000_000;

function keyWithStore() {
  const key = generateApiKey();
  const record: KeyRecord = {
    keyId: key.keyId,
    prefix: key.prefix,
    hash: hashApiKey(key.raw, PEPPER),
    userId: 'u1',
    name: 'k',
    scopes: ['ai:complete'],
    status: 'active',
    createdAt: new Date(0).toISOString(),
  };
  const reads: string[] = [];
  const keys = { get: async (id: string) => (reads.push(id), id === record.keyId ? record : undefined) } as unknown as KeyStore;
  const auth = new Authenticator({ keys, pepper: PEPPER, cacheMs: 5_000, clock: { now: () => nowMs } });
  return { key, auth, reads };
}

const bearer = (raw: string) => ({ authorization: `Bearer ${raw}` });

/** The same key id with one character of the secret changed. */
function tampered(raw: string): string {
  const last = raw.at(-1)!;
  return raw.slice(0, -1) + (last === 'A' ? 'B' : 'A');
}

test('a cached key is accepted again and a tampered secret with the same key id is refused, before and after', async () => {
  const { key, auth, reads } = keyWithStore();
  await expect(auth.authenticate(bearer(tampered(key.raw)))).rejects.toMatchObject({ code: 'invalid_api_key' });
  await expect(auth.authenticate(bearer(key.raw))).resolves.toMatchObject({ keyId: key.keyId });
  await expect(auth.authenticate(bearer(key.raw))).resolves.toMatchObject({ keyId: key.keyId });
  await expect(auth.authenticate(bearer(tampered(key.raw)))).rejects.toMatchObject({ code: 'invalid_api_key' });
  await expect(auth.authenticate(bearer(key.raw))).resolves.toMatchObject({ keyId: key.keyId });
  expect(reads).toHaveLength(1);
});

test('a record read again (cache expired) is verified with the HMAC again', async () => {
  const { key, auth, reads } = keyWithStore();
  await auth.authenticate(bearer(key.raw));
  nowMs += 10_000;
  await expect(auth.authenticate(bearer(tampered(key.raw)))).rejects.toMatchObject({ code: 'invalid_api_key' });
  await expect(auth.authenticate(bearer(key.raw))).resolves.toMatchObject({ keyId: key.keyId });
  expect(reads).toHaveLength(2);
});
