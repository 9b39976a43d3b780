/**
 * The admin CLI's commands as data: each command's usage line, what it does, the options it takes and an
 * example. `--help` / `-h` / `help` print from here, and the parser checks every option against it, so what
 * the help says is what the CLI accepts.
 */

export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  /** `--name VALUE`'s VALUE placeholder. */
  readonly value?: string;
  readonly help: string;
  readonly short?: string;
}

/** Every option the CLI knows (a command takes the global ones plus those it lists). */
export const OPTIONS: Readonly<Record<string, OptionSpec>> = {
  help: { type: 'boolean', short: 'h', help: 'show this help' },
  json: { type: 'boolean', help: 'machine output: exact amounts (micro-USD integers or 6-decimal strings) and ISO-8601 UTC times' },
  aws: { type: 'boolean', help: 'use the deployed tables (TOLLGATE_STAGE / TOLLGATE_TABLE_*), pepper from SSM' },
  url: { type: 'string', value: 'URL', help: "call a gateway's /admin API instead of the tables (SigV4 unless --admin-token)" },
  'admin-token': { type: 'string', value: 'TOKEN', help: 'the local admin token (tga-…, printed by npm start, kept in .tollgate/admin-token)' },
  region: { type: 'string', value: 'REGION', help: 'AWS region for SigV4 with --url' },
  actor: { type: 'string', value: 'NAME', help: 'who makes the change, for the audit log (default: $TOLLGATE_ACTOR, else your OS user)' },
  user: { type: 'string', value: 'USER', help: 'user id' },
  org: { type: 'string', value: 'ORG', help: 'org (team) id' },
  name: { type: 'string', value: 'NAME', help: 'a label for the key' },
  scopes: { type: 'string', value: 'a,b', help: 'comma-separated scopes (ai:complete, ai:embed, ai:usage, ai:agent, ai:byok, …)' },
  rpm: { type: 'string', value: 'N|none', help: 'requests per minute (default: the platform default; none = no limit)' },
  tpm: { type: 'string', value: 'N|none', help: 'tokens per minute (default: the platform default; none = no limit)' },
  cache: { type: 'boolean', help: "use the response cache for this key's requests" },
  'budget-usd': { type: 'string', value: 'USD|none', help: "the key's own spend limit, e.g. 5 or 12.50" },
  window: { type: 'string', value: 'hour|day|month', help: 'budget or report window' },
  range: { type: 'string', value: 'hour|today|yesterday|7d|month', help: 'the report\'s time range (default: the --window, else today)' },
  expires: { type: 'string', value: 'ISO', help: 'expiry time of the key, e.g. 2027-01-31' },
  reason: { type: 'string', value: 'TEXT', help: 'why (kept in the audit log)' },
  by: { type: 'string', value: 'user|key|org|model', help: 'group usage by' },
  id: { type: 'string', value: 'ID', help: 'only this user, key or org' },
  day: { type: 'string', value: 'YYYY-MM-DD', help: 'the UTC day' },
  since: { type: 'string', value: 'WHEN', help: 'from when: 2h, 7d, today, yesterday, 2026-12-06 09:00 (default 7d)' },
  key: { type: 'string', value: 'KEY_ID', help: 'only changes of this key (or scope, user, org)' },
  limit: { type: 'string', value: 'N', help: 'at most N entries (default 200)' },
  service: { type: 'string', value: 'NAME', help: 'service name' },
  ttl: { type: 'string', value: '15m|1h', help: 'token lifetime (at most 1h)' },
  'on-behalf-of': { type: 'string', value: 'USER', help: 'the user the service acts for' },
  ack: { type: 'string', value: 'TEXT', help: 'the acknowledgement: why it is safe (recorded with who gave it)' },
  'since-hours': { type: 'string', value: 'N', help: 'alerts of the last N hours (default 24)' },
  'max-repeats': { type: 'string', value: 'N|none', help: 'identical calls in a row before the loop guard stops the key' },
  'max-failures': { type: 'string', value: 'N|none', help: 'failing tool calls in a row before the loop guard stops the key' },
};

/** Options every command takes. */
export const GLOBAL_OPTIONS = ['help', 'json', 'aws', 'url', 'admin-token', 'region', 'actor'] as const;

export interface CommandSpec {
  /** `keys create`. */
  readonly name: string;
  readonly args?: string;
  readonly summary: string;
  readonly options: readonly string[];
  /** Options that must be given. */
  readonly required?: readonly string[];
  readonly details?: string;
  readonly example?: string;
  /** Works over --url (the admin API). @default true */
  readonly overHttp?: boolean;
}

export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'keys create',
    summary: 'create an API key (the key is printed once)',
    options: ['user', 'org', 'name', 'scopes', 'rpm', 'tpm', 'cache', 'budget-usd', 'window', 'expires', 'reason'],
    required: ['user'],
    details: '--budget-usd without --window sets a monthly budget (and says so).',
    example: 'npm run admin -- keys create --user alice --org research --budget-usd 20 --window day',
  },
  { name: 'keys list', summary: 'list keys (all, or one user\'s)', options: ['user'], example: 'npm run admin -- keys list --user alice' },
  { name: 'keys show', args: 'KEY_ID', summary: "one key: status, rate limits and budgets (own or default)", options: [] },
  { name: 'keys suspend', args: 'KEY_ID', summary: 'stop a key until resumed', options: ['reason'] },
  { name: 'keys resume', args: 'KEY_ID', summary: 'let a suspended key work again', options: ['reason'] },
  { name: 'keys revoke', args: 'KEY_ID', summary: 'stop a key for good', options: ['reason'], example: 'npm run admin -- keys revoke k_123 --reason "left the team"' },
  {
    name: 'budgets set',
    args: 'SCOPE WINDOW USD|none|default',
    summary: 'set a spend limit (SCOPE: key:ID, user:ID, org:ID or platform; WINDOW: hour, day or month)',
    options: ['reason'],
    details: 'none = no limit at all (no default applies); default = forget this scope\'s own limit.',
    example: 'npm run admin -- budgets set org:research day 50 --reason "Q4 pilot"',
  },
  { name: 'budgets show', args: 'SCOPE', summary: "a scope's limits and spend per window", options: [], example: 'npm run admin -- budgets show user:alice' },
  {
    name: 'usage',
    summary: 'requests, tokens and cost grouped by user, key, org or model',
    options: ['by', 'id', 'window'],
    example: 'npm run admin -- usage --by org --window month',
  },
  { name: 'report', summary: "the dashboard's summary in the terminal (refusals, budgets in force, spend)", options: ['range', 'window', 'org'], overHttp: false },
  {
    name: 'audit',
    summary: 'administrative changes, newest first: who, what, before → after, why',
    options: ['since', 'key', 'limit', 'day', 'id'],
    details: 'Filters: --since WHEN, --key KEY_ID (or a scope), --actor NAME (here a filter, not who you are).',
    example: 'npm run admin -- audit --since yesterday --key k_123',
  },
  { name: 'circuits list', summary: 'open circuit breakers: why and until when', options: [], overHttp: false },
  {
    name: 'circuits reset',
    args: 'SCOPE',
    summary: 'close a circuit breaker (acknowledge it)',
    options: ['ack', 'by'],
    required: ['ack'],
    example: 'npm run admin -- circuits reset key:k_123 --ack "fixed the retry loop"',
    overHttp: false,
  },
  { name: 'alerts', summary: 'recorded guardrail alerts', options: ['since-hours'], overHttp: false },
  { name: 'killswitch status', summary: 'whether the kill switch stopped the platform', options: [], overHttp: false },
  { name: 'killswitch resume', summary: 'restore the keys the kill switch suspended', options: ['ack', 'by'], required: ['ack'], overHttp: false },
  { name: 'loopguard set', args: 'KEY_ID', summary: "a key's loop guard thresholds", options: ['max-repeats', 'max-failures'], overHttp: false },
  { name: 'loopguard show', args: 'KEY_ID', summary: "a key's loop guard thresholds", options: [], overHttp: false },
  { name: 'tokens issue', summary: 'issue a service token (JWT) for a registered service', options: ['service', 'scopes', 'ttl', 'on-behalf-of', 'org'], required: ['service', 'scopes'] },
  { name: 'services register', summary: 'register a service that may get tokens', options: ['service', 'scopes', 'rpm', 'tpm'], required: ['service'] },
  { name: 'reconcile', summary: "compare the ledger with the providers' cost reports", options: ['day'], overHttp: false },
];

/** The command groups (first words). */
export const GROUPS = [...new Set(COMMANDS.map((c) => c.name.split(' ')[0]!))];

/** A group's sub-commands (`keys` → create, list, …); empty for single-word commands. */
export function actionsOf(group: string): string[] {
  return COMMANDS.filter((c) => c.name.startsWith(`${group} `)).map((c) => c.name.split(' ')[1]!);
}

export function findCommand(group: string | undefined, action: string | undefined): CommandSpec | undefined {
  if (!group) return undefined;
  return COMMANDS.find((c) => c.name === `${group} ${action ?? ''}`.trim()) ?? COMMANDS.find((c) => c.name === group);
}

function optionLine(name: string): string {
  const o = OPTIONS[name]!;
  const flag = `${o.short ? `-${o.short}, ` : ''}--${name}${o.value ? ` ${o.value}` : ''}`;
  return `  ${flag.padEnd(30)} ${o.help}`;
}

function usageLine(c: CommandSpec): string {
  const req = (c.required ?? []).map((r) => `--${r}${OPTIONS[r]?.value ? ` ${OPTIONS[r]!.value}` : ''}`);
  return `npm run admin -- ${c.name}${c.args ? ` ${c.args}` : ''}${req.length ? ` ${req.join(' ')}` : ''}${c.options.some((o) => !c.required?.includes(o)) ? ' [options]' : ''}`;
}

/** The help of one command. */
export function commandHelp(c: CommandSpec): string {
  const own = c.options.filter((o) => o !== 'by' || c.name === 'usage');
  return [
    `usage: ${usageLine(c)}`,
    '',
    `${c.summary[0]!.toUpperCase()}${c.summary.slice(1)}.`,
    ...(c.details ? [c.details] : []),
    ...(own.length ? ['', 'options:', ...own.map(optionLine)] : []),
    '',
    'global options:',
    ...GLOBAL_OPTIONS.map(optionLine),
    ...(c.overHttp === false ? ['', '(reads and writes the tables: not available with --url)'] : []),
    ...(c.example ? ['', `example: ${c.example}`] : []),
  ].join('\n');
}

/** The help of a group (`keys`): its commands. */
export function groupHelp(group: string): string {
  const cmds = COMMANDS.filter((c) => c.name === group || c.name.startsWith(`${group} `));
  return [
    `usage: npm run admin -- ${group} ${actionsOf(group).length ? `${actionsOf(group).join('|')} …` : '[options]'}`,
    '',
    ...cmds.map((c) => `  ${`${c.name}${c.args ? ` ${c.args}` : ''}`.padEnd(44)} ${c.summary}`),
    '',
    `Run "npm run admin -- ${group} ${actionsOf(group)[0] ?? ''} --help" for a command's options.`.replace('  --', ' --'),
  ].join('\n');
}

/** The CLI's overview (no arguments, `help`, `--help`). */
export function overview(): string {
  return [
    'usage: npm run admin -- <command> [options]',
    '',
    'Manage keys, budgets and guardrails, and see usage and the audit log. Against the local gateway\'s',
    'DynamoDB (npm start) by default; --aws for the deployed tables; --url URL for a gateway\'s admin API.',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${`${c.name}${c.args ? ` ${c.args}` : ''}`.padEnd(44)} ${c.summary}`),
    '',
    'global options:',
    ...GLOBAL_OPTIONS.map(optionLine),
    '',
    'Run "npm run admin -- <command> --help" (or "help <command>") for its options and an example.',
  ].join('\n');
}

/** The one-line reminder printed under a usage error. */
export function shortUsage(c: CommandSpec | undefined, group?: string): string {
  if (c) return `usage: ${usageLine(c)}   (--help for more)`;
  if (group && GROUPS.includes(group)) return `usage: npm run admin -- ${group} ${actionsOf(group).join('|')} …   (--help for more)`;
  return `usage: npm run admin -- <command> [options]   commands: ${GROUPS.join(', ')}   (--help for more)`;
}
