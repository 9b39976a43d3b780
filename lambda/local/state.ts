/**
 * The local installation's state, kept in a git-ignored folder (`.tollgate/` at the repository root, or
 * TOLLGATE_HOME): the API-key pepper, the DynamoDB Local data, and where a running `npm start` listens.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export function stateDir(env: Readonly<Record<string, string | undefined>> = process.env): string {
  const dir = resolve(env.TOLLGATE_HOME || join(__dirname, '..', '..', '.tollgate'));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** The pepper of this installation: TOLLGATE_KEY_PEPPER, or a random one created once and kept on disk. */
export function loadOrCreatePepper(dir: string, env: Readonly<Record<string, string | undefined>> = process.env): string {
  if (env.TOLLGATE_KEY_PEPPER) return env.TOLLGATE_KEY_PEPPER;
  const file = join(dir, 'pepper');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const pepper = randomBytes(32).toString('base64url');
  writeFileSync(file, `${pepper}\n`, { mode: 0o600 });
  return pepper;
}

/**
 * The local admin token (`/admin/*`, the dashboard link): TOLLGATE_ADMIN_TOKEN, or one created once and kept in
 * `.tollgate/admin-token` (mode 0600), so a bookmarked dashboard link still works after a restart. Delete the
 * file to get a new one.
 */
export function loadOrCreateAdminToken(dir: string, env: Readonly<Record<string, string | undefined>> = process.env): string {
  if (env.TOLLGATE_ADMIN_TOKEN) return env.TOLLGATE_ADMIN_TOKEN;
  const file = join(dir, 'admin-token');
  if (existsSync(file)) {
    const token = readFileSync(file, 'utf8').trim();
    if (token) return token;
  }
  const token = `tga-${randomBytes(24).toString('base64url')}`;
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return token;
}

/** What a running local gateway publishes so the admin CLI can reach the same DynamoDB Local. */
export interface RunningLocal {
  readonly pid: number;
  readonly url: string;
  readonly dynamodbEndpoint: string;
  readonly adminToken: string;
}

export function writeRunning(dir: string, running: RunningLocal): void {
  writeFileSync(join(dir, 'running.json'), JSON.stringify(running, null, 2), { mode: 0o600 });
}

export function clearRunning(dir: string): void {
  rmSync(join(dir, 'running.json'), { force: true });
}

/** The running local gateway, if its process is still alive. */
export function readRunning(dir: string): RunningLocal | undefined {
  const file = join(dir, 'running.json');
  if (!existsSync(file)) return undefined;
  try {
    const running = JSON.parse(readFileSync(file, 'utf8')) as RunningLocal;
    process.kill(running.pid, 0);
    return running;
  } catch {
    return undefined;
  }
}
