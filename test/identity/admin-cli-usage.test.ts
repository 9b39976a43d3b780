/**
 * The admin CLI as a newcomer meets it: help on every command, one-line errors with the usage (exit 2) for a
 * wrong command line, unknown values rejected with the valid ones listed; and how it prints money and times
 * for people (`--json` stays exact). Command-line mistakes are refused before any table is touched.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, UsageError } from '../../lambda/admin/cli';
import { COMMANDS } from '../../lambda/admin/commands';
import { localTime, parseSince, relativeTime } from '../../lambda/admin/format';
import { changeText } from '../../lambda/admin/render';
import { humanUsd } from '../../lambda/core/money';
import { requestLine, textLogger } from '../../lambda/local/text-log';

jest.setTimeout(120_000);

const ROOT = join(__dirname, '..', '..');

async function admin(...args: string[]): Promise<string> {
  const lines: string[] = [];
  await run(args, (t) => lines.push(t));
  return lines.join('\n');
}

describe('help', () => {
  it('when run with no arguments, --help, -h or help, it prints the commands (not a source path)', async () => {
    for (const args of [[], ['--help'], ['-h'], ['help']]) {
      const text = await admin(...args);
      expect(text).toMatch(/^usage: npm run admin -- <command>/);
      expect(text).toContain('keys create');
      expect(text).toContain('audit');
      expect(text).not.toMatch(/cli\.ts/);
    }
  });

  it('when --help follows any command or sub-command, it prints that command\'s options', async () => {
    for (const c of COMMANDS) {
      const words = c.name.split(' ');
      const text = await admin(...words, '--help');
      expect(text).toContain(`usage: npm run admin -- ${c.name}`);
      for (const o of c.options.filter((x) => x !== 'by' || c.name === 'usage')) expect(text).toContain(`--${o}`);
      expect(await admin('help', ...words)).toBe(text);
    }
    expect(await admin('keys', '--help')).toContain('keys revoke KEY_ID');
  });
});

describe('mistakes in the command line', () => {
  const refused = async (args: string[], message: RegExp) => {
    const err = await run(args, () => undefined).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).message).toMatch(message);
    expect((err as UsageError).message).not.toContain('\n');
    expect((err as UsageError).usage).toMatch(/^usage: npm run admin -- /);
  };

  it('when an option is unknown, misspelt or not for this command, it says which', async () => {
    await refused(['keys', 'create', '--user', 'a', '--budget', '5'], /unknown option --budget for "keys create"/);
    await refused(['keys', 'list', '--budget-usd', '5'], /"keys list" does not take --budget-usd/);
    await refused(['keys', 'create', '--user'], /--user needs a value/);
    await refused(['keys', 'create'], /"keys create" needs --user/);
    await refused(['keys', 'show'], /needs KEY_ID/);
  });

  it('when a value is not one of the valid ones, the valid ones are listed', async () => {
    await refused(['usage', '--by', 'team'], /--by must be one of user, key, org, model \(got "team"\)/);
    await refused(['usage', 'team'], /user, key, org, model/);
    await refused(['report', '--window', 'week'], /--window must be one of hour, day, month/);
    await refused(['keyz'], /unknown command "keyz"; commands: keys, budgets, usage/);
    await refused(['keys', 'delete', 'k1'], /"keys" takes create, list, show, suspend, resume, revoke/);
    await refused(['keys', 'create', '--user', 'a', '--window', 'day'], /--window applies to --budget-usd/);
  });

  it('when run as a program, a mistake is one line and the usage on stderr, exit 2 (no stack trace); --help exits 0', async () => {
    const home = mkdtempSync(join(tmpdir(), 'tollgate-cli-usage-'));
    const cli = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        execFile(join(ROOT, 'node_modules', '.bin', 'tsx'), [join(ROOT, 'lambda', 'admin', 'cli.ts'), ...args], { cwd: ROOT, env: { ...process.env, TOLLGATE_HOME: home } }, (err, stdout, stderr) =>
          resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        );
      });
    try {
      const bad = await cli(['keys', 'list', '--nope']);
      expect(bad.code).toBe(2);
      expect(bad.stdout).toBe('');
      expect(bad.stderr.trim().split('\n')).toEqual(['admin: unknown option --nope for "keys list"', expect.stringMatching(/^usage: npm run admin -- keys list/)]);
      expect(bad.stderr).not.toMatch(/ERR_PARSE_ARGS|\n\s+at /);
      const help = await cli(['--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain('usage: npm run admin -- <command>');
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe('formatting for people', () => {
  it('money: whole cents with separators from a cent up, exact under a cent, $0.00 for nothing', () => {
    expect(humanUsd(1_234_567_890)).toBe('$1,234.57');
    expect(humanUsd(5_000_000)).toBe('$5.00');
    expect(humanUsd(153_412)).toBe('$0.15');
    expect(humanUsd(10_000)).toBe('$0.01');
    expect(humanUsd(9_999)).toBe('$0.009999');
    expect(humanUsd(4)).toBe('$0.000004');
    expect(humanUsd(1_200)).toBe('$0.0012');
    expect(humanUsd(0)).toBe('$0.00');
    expect(humanUsd(-2_500_000)).toBe('-$2.50');
    expect(humanUsd(1_000_000_000_000)).toBe('$1,000,000.00');
  });

  it('times: local YYYY-MM-DD HH:MM:SS without milliseconds, relative to a given now, and typed ones', () => {
    const now = new Date(2031, 5, 10, 12, 0, 0).getTime();
    expect(localTime(now)).toBe('2031-06-10 12:00:00');
    expect(localTime(new Date(now).toISOString())).toBe('2031-06-10 12:00:00');
    expect(relativeTime(now - 3 * 60_000, now)).toBe('3 min ago');
    expect(relativeTime(now - 5 * 3_600_000, now)).toBe('5 h ago');
    expect(relativeTime(now + 3 * 86_400_000, now)).toBe('in 3 days');
    expect(parseSince('2h', now)).toBe(now - 7_200_000);
    expect(parseSince('7d', now)).toBe(now - 7 * 86_400_000);
    expect(parseSince('yesterday', now)).toBe(new Date(2031, 5, 9).getTime());
    expect(parseSince('2031-06-01 09:30', now)).toBe(new Date(2031, 5, 1, 9, 30).getTime());
    expect(() => parseSince('last tuesday', now)).toThrow(/--since must be a time/);
  });

  it('an audit change reads as before → after, with dollars as money', () => {
    expect(changeText({ before: { status: 'active' }, after: { status: 'revoked' } })).toBe('status: active → revoked');
    expect(changeText({ before: { day: 'default' }, after: { day: '2.500000' } })).toBe('day: default → $2.50');
    expect(changeText({ after: { keyId: 'k1', userId: 'ana', orgId: 'research', rpm: 'default', 'budget.day': '5.000000' } })).toBe('user=ana org=research budget.day=$5.00');
  });

  it('npm start logs one readable line per request; the settle line is folded into it; secrets are redacted', () => {
    const lines: string[] = [];
    const log = textLogger({ sink: (l) => lines.push(l) });
    log.log('info', 'request settled', { requestId: 'r1', costMicros: 4 });
    log.log('info', 'request', { method: 'POST', path: '/v1/chat/completions', model: 'mock/gpt-4o-mini', status: 200, durationMs: 12.4, costMicros: 4, keyId: 'k1', userId: 'demo' });
    log.log('warn', 'request', { method: 'POST', path: '/v1/messages', status: 429, durationMs: 3, keyId: 'k1', errorCode: 'insufficient_quota', refusalReason: 'budget', refusalScope: 'user:ana', refusalWindow: 'day' });
    log.log('error', 'request', { method: 'POST', path: '/v1/chat/completions', status: 502, durationMs: 9, keyId: 'k1', errorCode: 'upstream_error' });
    log.log('warn', 'upstream said Bearer sk-live-abcdefghijklmnop', { apiKey: 'sk-abcdefghijklmnop' });
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^\d{2}:\d{2}:\d{2} POST \/v1\/chat\/completions mock\/gpt-4o-mini 200 12ms \$0\.000004 key k1 \(demo\)$/);
    expect(lines[1]).toMatch(/POST \/v1\/messages - 429 3ms - key k1 refused: budget user:ana\/day \(insufficient_quota\)$/);
    expect(lines[2]).toMatch(/502 9ms - key k1 failed: upstream_error$/);
    expect(lines[3]).not.toContain('abcdefghijklmnop');
    expect(requestLine({ method: 'GET', path: '/v1/models', status: 401, durationMs: 1 }, new Date(2031, 0, 1, 9, 5, 7))).toBe('09:05:07 GET /v1/models - 401 1ms - no key');
  });
});
