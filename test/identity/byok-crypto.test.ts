/**
 * Envelope encryption of BYOK keys: the local provider and the KMS provider (KMS mocked at the edge with
 * aws-sdk-client-mock, playing KMS's rule that Decrypt needs the same encryption context).
 */
import { DecryptCommand, GenerateDataKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { mockClient } from 'aws-sdk-client-mock';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ByokCipher, ByokDecryptError, KmsDataKeyProvider, LocalDataKeyProvider } from '../../lambda/core/byok/crypto';
import { StoreUnavailableError } from '../../lambda/core/errors';

const KEY = 'sk-user-own-key-ABCDEFGH12345678';
const KEY_ARN = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';

describe('local data-key provider', () => {
  const cipher = new ByokCipher(new LocalDataKeyProvider(LocalDataKeyProvider.generateMasterKey()));

  it('when a key is encrypted and decrypted for the same user and provider, it round-trips and the blob hides it', async () => {
    const blob = await cipher.encrypt(KEY, { userId: 'alice', provider: 'openai' });
    expect(blob).not.toContain(KEY);
    expect(blob).not.toContain(Buffer.from(KEY).toString('base64url').slice(0, 12));
    await expect(cipher.decrypt(blob, { userId: 'alice', provider: 'openai' })).resolves.toBe(KEY);
  });

  it('when the same key is encrypted twice, the blobs differ (fresh data key and IV)', async () => {
    const b = { userId: 'alice', provider: 'openai' };
    expect(await cipher.encrypt(KEY, b)).not.toBe(await cipher.encrypt(KEY, b));
  });

  it.each([
    ['another user', { userId: 'bob', provider: 'openai' }],
    ['another provider', { userId: 'alice', provider: 'anthropic' }],
  ])('when a blob is opened for %s, it fails', async (_what, binding) => {
    const blob = await cipher.encrypt(KEY, { userId: 'alice', provider: 'openai' });
    await expect(cipher.decrypt(blob, binding)).rejects.toBeInstanceOf(ByokDecryptError);
  });

  it('when a blob is tampered with or opened under another master key, it fails', async () => {
    const binding = { userId: 'alice', provider: 'openai' };
    const blob = await cipher.encrypt(KEY, binding);
    const parts = blob.split('.');
    const ct = Buffer.from(parts[3]!, 'base64url');
    ct[ct.length - 20]! ^= 1;
    await expect(cipher.decrypt([...parts.slice(0, 3), ct.toString('base64url')].join('.'), binding)).rejects.toBeInstanceOf(ByokDecryptError);
    const other = new ByokCipher(new LocalDataKeyProvider(LocalDataKeyProvider.generateMasterKey()));
    await expect(other.decrypt(blob, binding)).rejects.toBeInstanceOf(ByokDecryptError);
    await expect(cipher.decrypt('v1.kms.AAAA.BBBB', binding)).rejects.toBeInstanceOf(ByokDecryptError);
  });
});

describe('KMS data-key provider (KMS mocked at the edge)', () => {
  const kms = mockClient(KMSClient);
  // The fake KMS wraps data keys under its own key with the encryption context as AAD, as KMS binds them.
  const kmsMaster = randomBytes(32);
  const ctxAad = (ctx: Record<string, string> | undefined) => Buffer.from(JSON.stringify(Object.entries(ctx ?? {}).sort()));

  beforeEach(() => {
    kms.reset();
    kms.on(GenerateDataKeyCommand).callsFake((input: { EncryptionContext?: Record<string, string>; KeySpec?: string }) => {
      expect(input.KeySpec).toBe('AES_256');
      const plaintext = randomBytes(32);
      const iv = randomBytes(12);
      const c = createCipheriv('aes-256-gcm', kmsMaster, iv).setAAD(ctxAad(input.EncryptionContext));
      const wrapped = Buffer.concat([iv, c.update(plaintext), c.final(), c.getAuthTag()]);
      return { Plaintext: new Uint8Array(plaintext), CiphertextBlob: new Uint8Array(wrapped), KeyId: KEY_ARN };
    });
    kms.on(DecryptCommand).callsFake((input: { CiphertextBlob?: Uint8Array; EncryptionContext?: Record<string, string> }) => {
      const blob = Buffer.from(input.CiphertextBlob!);
      try {
        const d = createDecipheriv('aes-256-gcm', kmsMaster, blob.subarray(0, 12)).setAAD(ctxAad(input.EncryptionContext));
        d.setAuthTag(blob.subarray(blob.length - 16));
        return { Plaintext: new Uint8Array(Buffer.concat([d.update(blob.subarray(12, blob.length - 16)), d.final()])), KeyId: KEY_ARN };
      } catch {
        throw Object.assign(new Error('InvalidCiphertextException'), { name: 'InvalidCiphertextException' });
      }
    });
  });

  afterAll(() => kms.restore());

  const cipher = () => new ByokCipher(new KmsDataKeyProvider({ client: new KMSClient({ region: 'us-east-1' }), keyId: KEY_ARN }));

  it('when a key is encrypted, KMS is asked for an AES-256 data key of the data key with the BYOK context for that user and provider', async () => {
    const blob = await cipher().encrypt(KEY, { userId: 'alice', provider: 'openai' });
    expect(blob.startsWith('v1.kms.')).toBe(true);
    const [call] = kms.commandCalls(GenerateDataKeyCommand);
    expect(call!.args[0].input).toEqual({
      KeyId: KEY_ARN,
      KeySpec: 'AES_256',
      EncryptionContext: { purpose: 'tollgate-byok', userId: 'alice', provider: 'openai' },
    });
    await expect(cipher().decrypt(blob, { userId: 'alice', provider: 'openai' })).resolves.toBe(KEY);
    expect(kms.commandCalls(DecryptCommand)[0]!.args[0].input.EncryptionContext).toEqual({ purpose: 'tollgate-byok', userId: 'alice', provider: 'openai' });
  });

  it("when a blob is copied to another user's row, KMS refuses the context and the key is unusable", async () => {
    const blob = await cipher().encrypt(KEY, { userId: 'alice', provider: 'openai' });
    await expect(cipher().decrypt(blob, { userId: 'mallory', provider: 'openai' })).rejects.toBeInstanceOf(ByokDecryptError);
  });

  it('when KMS is unreachable, the failure is a 503 that names no secret', async () => {
    kms.on(GenerateDataKeyCommand).rejects(Object.assign(new Error('socket hang up'), { name: 'TimeoutError' }));
    const err = await cipher().encrypt(KEY, { userId: 'alice', provider: 'openai' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect((err as Error).message).not.toContain(KEY);
  });
});
