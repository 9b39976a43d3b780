/**
 * The headless Chromium the browser tests drive. `npm install` brings it: `@sparticuz/chromium` (a devDependency)
 * ships a Chromium binary inside the package and unpacks it to the temp directory on first use. A system
 * Chromium at /usr/bin/chromium (Debian's package) is preferred when present. Neither found is a failure that
 * names the install step, never a skip.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { chromium, type BrowserContext } from 'playwright-core';

/** TOLLGATE_SYSTEM_CHROMIUM names another system browser; a missing path there forces the bundled one. */
export const SYSTEM_CHROMIUM = process.env.TOLLGATE_SYSTEM_CHROMIUM || '/usr/bin/chromium';
export const BUNDLED_CHROMIUM_PACKAGE = '@sparticuz/chromium';

const REPO_ROOT = join(__dirname, '..', '..');
const run = promisify(execFile);

export interface BrowserSource {
  /** The system browser preferred when it exists (tests pass a missing path to force the bundled one). */
  systemPath?: string;
  /** The registry package that ships the binary (tests pass a missing name to see the failure). */
  bundledPackage?: string;
}

/**
 * The Chromium binary to launch: the system one when present, else the one `@sparticuz/chromium` ships. The
 * package is ESM-only, which jest's CommonJS module system cannot load, so a plain Node process resolves it.
 */
export async function chromiumExecutable(source: BrowserSource = {}): Promise<string> {
  const systemPath = source.systemPath ?? SYSTEM_CHROMIUM;
  if (existsSync(systemPath)) return systemPath;
  const pkg = source.bundledPackage ?? BUNDLED_CHROMIUM_PACKAGE;
  const script = `import(${JSON.stringify(pkg)}).then(async (m) => process.stdout.write(await m.default.executablePath()))`;
  let path: string;
  try {
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO_ROOT });
    path = stdout.trim();
  } catch (err) {
    const detail = (err as { stderr?: string }).stderr?.trim().split('\n').find((l) => /Error/.test(l)) ?? String(err);
    throw new Error(
      `No Chromium for the browser tests: ${systemPath} is absent and ${pkg} did not provide one (${detail}). ` +
        `Run \`npm install\` (or \`npm ci\`) in ${REPO_ROOT}: it installs ${pkg}, which ships the browser.`,
    );
  }
  if (!path || !existsSync(path)) {
    throw new Error(
      `No Chromium for the browser tests: ${pkg} reported '${path}', which does not exist. ` +
        `Reinstall it with \`npm ci\` in ${REPO_ROOT}.`,
    );
  }
  return path;
}

/** A headless Chromium with its own profile directory; the caller closes it. `timeout` bounds launch and waits. */
export async function launchBrowser(
  profileDir: string,
  options: BrowserSource & { timeout: number },
): Promise<BrowserContext> {
  const executablePath = await chromiumExecutable(options);
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath,
    timeout: options.timeout,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  context.setDefaultTimeout(options.timeout);
  context.setDefaultNavigationTimeout(options.timeout);
  return context;
}
