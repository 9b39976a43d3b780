/**
 * The real Claude Code and Codex CLIs for the e2e suite. Both ship as npm packages whose native binary comes in
 * a per-platform optional dependency (`@anthropic-ai/claude-code-linux-x64`: `claude`, ~360 MB;
 * `@openai/codex-linux-x64`: `vendor/<triple>/bin/codex`, ~400 MB); neither needs a download at install or
 * run time (Claude Code's postinstall only copies its binary over a stub; it is skipped here and the
 * platform binary run directly). Too large for devDependencies, they are installed once per machine by
 * the suite into TOLLGATE_AGENTS_DIR (default ~/.cache/tollgate-agents/<versions>), outside the repository.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export const CLAUDE_CODE_VERSION = '2.1.328';
export const CODEX_VERSION = '0.169.0';

function platformSuffix(): string {
  const arch = process.arch === 'arm64' ? 'arm64' : 'x64';
  if (process.platform === 'linux') return `linux-${arch}`;
  if (process.platform === 'darwin') return `darwin-${arch}`;
  return `win32-${arch}`;
}

function agentsDir(): string {
  return process.env.TOLLGATE_AGENTS_DIR ?? join(homedir(), '.cache', 'tollgate-agents', `claude-${CLAUDE_CODE_VERSION}-codex-${CODEX_VERSION}`);
}

function installed(dir: string): boolean {
  return (
    existsSync(join(dir, 'node_modules', '@openai', `codex-${platformSuffix()}`)) &&
    existsSync(join(dir, 'node_modules', '@anthropic-ai', `claude-code-${platformSuffix()}`))
  );
}

/**
 * Installs both packages once per machine (npm, registry only, no install scripts). Jest's global setup calls it
 * before the workers start; an install is made in a folder of its own and renamed into place, so two processes
 * installing at once never see half an install. Throws with npm's output on failure.
 */
export function ensureAgentBinaries(): string {
  const dir = agentsDir();
  if (installed(dir)) return dir;
  const staging = `${dir}.installing-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  execFileSync(
    'npm',
    ['install', '--prefix', staging, '--no-save', '--no-audit', '--no-fund', '--ignore-scripts', `@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}`, `@openai/codex@${CODEX_VERSION}`],
    { stdio: 'pipe', timeout: 15 * 60_000 },
  );
  try {
    rmSync(dir, { recursive: true, force: true });
    renameSync(staging, dir);
  } catch (err) {
    // Another process put its install in place first: use that one.
    rmSync(staging, { recursive: true, force: true });
    if (!installed(dir)) throw err;
  }
  return dir;
}

/** The path of the native `claude` binary. */
export function claudeBinary(): string {
  const dir = ensureAgentBinaries();
  return join(dir, 'node_modules', '@anthropic-ai', `claude-code-${platformSuffix()}`, process.platform === 'win32' ? 'claude.exe' : 'claude');
}

/** How to run `codex`: its own launcher (bin/codex.js), which finds the platform binary and puts its ripgrep on PATH. */
export function codexCommand(): { readonly command: string; readonly args: readonly string[] } {
  const dir = ensureAgentBinaries();
  return { command: process.execPath, args: [join(dir, 'node_modules', '@openai', 'codex', 'bin', 'codex.js')] };
}
