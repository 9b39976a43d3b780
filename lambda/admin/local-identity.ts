/**
 * The local installation's identity secrets, kept next to the pepper in the git-ignored state folder: the
 * `jwt-secret` value service tokens are signed with, and the master key of the local BYOK data-key provider.
 * Each is created once (random, 256 bits) unless the environment provides it.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LocalDataKeyProvider } from '../core/byok/crypto';
import { generateJwtSecretEntry } from '../core/jwt';
import { EnvSecretSource } from '../core/secrets';

type Env = Readonly<Record<string, string | undefined>>;

function loadOrCreate(file: string, create: () => string): string {
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const value = create();
  writeFileSync(file, `${value}\n`, { mode: 0o600 });
  return value;
}

/** `TOLLGATE_SECRET_JWT_SECRET`, or `.tollgate/jwt-secret` (created as `local1:<random>`). */
export function loadOrCreateJwtSecret(dir: string, env: Env = process.env): string {
  return env[EnvSecretSource.variableFor('jwt-secret')] || loadOrCreate(join(dir, 'jwt-secret'), () => generateJwtSecretEntry('local1'));
}

/** `TOLLGATE_BYOK_LOCAL_KEY`, or `.tollgate/byok-master-key` (32 random bytes, base64url). */
export function loadOrCreateByokMasterKey(dir: string, env: Env = process.env): string {
  return env.TOLLGATE_BYOK_LOCAL_KEY || loadOrCreate(join(dir, 'byok-master-key'), () => LocalDataKeyProvider.generateMasterKey());
}
