/**
 * Envelope encryption of bring-your-own provider keys.
 *
 *   data key (AES-256, fresh per blob) ──► AES-256-GCM(apiKey, AAD = purpose|v1|userId|provider)
 *        │
 *        └─ wrapped by a key provider with the context {purpose: 'tollgate-byok', userId, provider}:
 *             KMS (GenerateDataKey / Decrypt with that EncryptionContext) in AWS,
 *             a local AES-256-GCM master key (the context as AAD) on one machine and in tests.
 *
 * Both layers bind the blob to its user and provider: a blob copied to another user's row fails to decrypt
 * (KMS refuses the context, GCM refuses the AAD). Plaintext data keys are zeroed right after use; the decrypted
 * provider key is returned to the caller and never stored, logged or put in an error message.
 */
import type { KMSClient } from '@aws-sdk/client-kms';
import { lazy, resolveLazily, type Lazily } from '../lazy';

/** The KMS commands, loaded with the first BYOK key operation. */
const kmsSdk = lazy(() => import('@aws-sdk/client-kms'));
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { StoreUnavailableError, TollgateError } from '../errors';
import { BYOK_ENCRYPTION_CONTEXT } from '../secrets';

/** What a blob is bound to. */
export interface ByokBinding {
  readonly userId: string;
  readonly provider: string;
}

/** The KMS encryption context of a binding: the data stack's grant requires `purpose`. */
export function byokEncryptionContext(binding: ByokBinding): Record<string, string> {
  return { ...BYOK_ENCRYPTION_CONTEXT, userId: binding.userId, provider: binding.provider };
}

/** A fresh data key: the plaintext (zero it after use) and the wrapped copy to store. */
export interface DataKey {
  readonly plaintext: Buffer;
  readonly wrapped: Buffer;
}

/** Makes and unwraps data keys for one binding. KMS in AWS, {@link LocalDataKeyProvider} elsewhere. */
export interface DataKeyProvider {
  /** Short tag stored in the blob (`kms`, `local`), so a blob says which provider can open it. */
  readonly id: string;
  generateDataKey(binding: ByokBinding): Promise<DataKey>;
  /** Throws {@link ByokDecryptError} when the wrapped key does not belong to this binding. */
  decryptDataKey(wrapped: Buffer, binding: ByokBinding): Promise<Buffer>;
}

/** A stored blob cannot be opened for this user and provider (tampered, copied, or from another key). */
export class ByokDecryptError extends TollgateError {
  readonly status = 500;
  readonly kind = 'internal' as const;
}

const GCM_IV_BYTES = 12;
const GCM_TAG_BYTES = 16;
const VERSION = 'v1';

function aadOf(binding: ByokBinding): Buffer {
  // JSON keeps the fields unambiguous whatever characters they hold.
  return Buffer.from(JSON.stringify([BYOK_ENCRYPTION_CONTEXT.purpose, VERSION, binding.userId, binding.provider]), 'utf8');
}

function seal(key: Buffer, plaintext: Buffer, aad: Buffer): Buffer {
  const iv = randomBytes(GCM_IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad);
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([iv, ct, cipher.getAuthTag()]);
}

function open(key: Buffer, sealed: Buffer, aad: Buffer): Buffer {
  if (sealed.length < GCM_IV_BYTES + GCM_TAG_BYTES) throw new Error('sealed value too short');
  const iv = sealed.subarray(0, GCM_IV_BYTES);
  const tag = sealed.subarray(sealed.length - GCM_TAG_BYTES);
  const decipher = createDecipheriv('aes-256-gcm', key, iv);
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(sealed.subarray(GCM_IV_BYTES, sealed.length - GCM_TAG_BYTES)), decipher.final()]);
}

function unusable(binding: ByokBinding, cause?: unknown): ByokDecryptError {
  return new ByokDecryptError(
    `The stored ${binding.provider} key of this user cannot be decrypted; store it again with PUT /v1/byok/${binding.provider}.`,
    { code: 'byok_key_unusable', ...(cause === undefined ? {} : { cause }) },
  );
}

/**
 * A data-key provider for one machine and tests: data keys are wrapped with AES-256-GCM under a 32-byte master
 * key, with the encryption context as AAD (the same binding KMS enforces).
 */
export class LocalDataKeyProvider implements DataKeyProvider {
  readonly id = 'local';
  private readonly master: Buffer;

  /** `masterKey`: 32 bytes, or their base64url text. */
  constructor(masterKey: Buffer | string) {
    this.master = typeof masterKey === 'string' ? Buffer.from(masterKey, 'base64url') : Buffer.from(masterKey);
    if (this.master.length !== 32) throw new RangeError('the local BYOK master key must be 32 bytes');
  }

  /** A new random master key as base64url text. */
  static generateMasterKey(): string {
    return randomBytes(32).toString('base64url');
  }

  async generateDataKey(binding: ByokBinding): Promise<DataKey> {
    const plaintext = randomBytes(32);
    return { plaintext, wrapped: seal(this.master, plaintext, this.contextAad(binding)) };
  }

  async decryptDataKey(wrapped: Buffer, binding: ByokBinding): Promise<Buffer> {
    try {
      return open(this.master, wrapped, this.contextAad(binding));
    } catch (err) {
      throw unusable(binding, err);
    }
  }

  private contextAad(binding: ByokBinding): Buffer {
    const context = byokEncryptionContext(binding);
    return Buffer.from(JSON.stringify(Object.keys(context).sort().map((k) => [k, context[k]])), 'utf8');
  }
}

/** Data keys from the data stack's KMS key, always with the binding's encryption context. */
export class KmsDataKeyProvider implements DataKeyProvider {
  readonly id = 'kms';
  private readonly client: () => Promise<Pick<KMSClient, 'send'>>;

  constructor(
    private readonly options: {
      /** The client, or a function creating it on first use. */
      readonly client: Lazily<Pick<KMSClient, 'send'>>;
      /** The data key's ARN (TOLLGATE_DATA_KEY_ARN). */
      readonly keyId: string;
    },
  ) {
    this.client = resolveLazily(options.client);
  }

  async generateDataKey(binding: ByokBinding): Promise<DataKey> {
    try {
      const out = await (await this.client()).send(
        new (await kmsSdk()).GenerateDataKeyCommand({ KeyId: this.options.keyId, KeySpec: 'AES_256', EncryptionContext: byokEncryptionContext(binding) }),
      );
      if (!out.Plaintext || !out.CiphertextBlob) throw new Error('KMS returned no data key');
      return { plaintext: Buffer.from(out.Plaintext), wrapped: Buffer.from(out.CiphertextBlob) };
    } catch (err) {
      throw new StoreUnavailableError('The gateway could not reach its key service to protect the key; try again shortly.', {
        code: 'kms_unavailable',
        cause: err,
      });
    }
  }

  async decryptDataKey(wrapped: Buffer, binding: ByokBinding): Promise<Buffer> {
    try {
      const out = await (await this.client()).send(
        new (await kmsSdk()).DecryptCommand({ KeyId: this.options.keyId, CiphertextBlob: wrapped, EncryptionContext: byokEncryptionContext(binding) }),
      );
      if (!out.Plaintext) throw new Error('KMS returned no plaintext');
      return Buffer.from(out.Plaintext);
    } catch (err) {
      const name = (err as { name?: unknown } | null)?.name;
      // Wrong context or a blob from elsewhere: KMS says InvalidCiphertext (or AccessDenied under the grant's condition).
      if (name === 'InvalidCiphertextException' || name === 'IncorrectKeyException' || name === 'AccessDeniedException') {
        throw unusable(binding, err);
      }
      throw new StoreUnavailableError('The gateway could not reach its key service; try again shortly.', {
        code: 'kms_unavailable',
        cause: err,
      });
    }
  }
}

/**
 * Encrypts and decrypts provider keys: `v1.<provider id>.<wrapped data key>.<iv|ciphertext|tag>` (base64url).
 */
export class ByokCipher {
  private readonly providers: ReadonlyMap<string, DataKeyProvider>;

  /** `provider` encrypts; `alsoDecryptWith` opens blobs written by others (e.g. after moving local → KMS). */
  constructor(
    private readonly provider: DataKeyProvider,
    alsoDecryptWith: readonly DataKeyProvider[] = [],
  ) {
    this.providers = new Map([...alsoDecryptWith, provider].map((p) => [p.id, p]));
  }

  async encrypt(apiKey: string, binding: ByokBinding): Promise<string> {
    const dataKey = await this.provider.generateDataKey(binding);
    try {
      const sealed = seal(dataKey.plaintext, Buffer.from(apiKey, 'utf8'), aadOf(binding));
      return [VERSION, this.provider.id, dataKey.wrapped.toString('base64url'), sealed.toString('base64url')].join('.');
    } finally {
      dataKey.plaintext.fill(0);
    }
  }

  /** The provider key in a blob; throws {@link ByokDecryptError} unless the blob belongs to `binding`. */
  async decrypt(blob: string, binding: ByokBinding): Promise<string> {
    const parts = blob.split('.');
    const provider = parts.length === 4 && parts[0] === VERSION ? this.providers.get(parts[1]!) : undefined;
    if (!provider) throw unusable(binding);
    const dataKey = await provider.decryptDataKey(Buffer.from(parts[2]!, 'base64url'), binding);
    try {
      return open(dataKey, Buffer.from(parts[3]!, 'base64url'), aadOf(binding)).toString('utf8');
    } catch (err) {
      throw unusable(binding, err);
    } finally {
      dataKey.fill(0);
    }
  }
}
