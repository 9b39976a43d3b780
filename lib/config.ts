/**
 * The typed deployment configuration, read from the `tollgate` key of the CDK context (cdk.json, or
 * `-c tollgate='{"stage":"prod"}'`) with defaults, and validated at synth: a bad value throws a
 * {@link DeploymentConfigError} whose message starts with the setting's path, e.g. `tollgate.natGateways: …`.
 * A top-level `-c stage=prod` overrides the stage alone.
 */
import { parseRoutingRules, type RoutingSettings } from '../lambda/core/routing/rules';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { DEFAULT_LIMITS, formatBudgetDefaults } from '../lambda/core/guardrails/defaults';

/** Everything a deployment can set. Every field is filled after {@link resolveDeploymentConfig}. */
export interface DeploymentConfig {
  /** Stage name: part of every resource name, the API stage and the SSM prefix. */
  readonly stage: string;
  /**
   * Cost profile: `dev` (the default: a NAT instance, the agent service scaled to zero on queue depth, no
   * Container Insights, alert destination warned about) or `prod` (NAT gateways, an always-on agent task,
   * Container Insights, an alert destination required). Every value a profile sets can still be set on its own.
   */
  readonly profile: CostProfile;
  /** Region to deploy to; absent means the CLI profile's region. */
  readonly region?: string;
  readonly budget: BudgetConfig;
  readonly alerts: AlertsConfig;
  readonly waf: WafConfig;
  readonly api: ApiConfig;
  readonly gateway: GatewayFunctionConfig;
  readonly agent: AgentConfig;
  /** Limits every key, user and the platform get unless an operator sets their own (README "Safe defaults"). */
  readonly limits: LimitsConfig;
  readonly admin: AdminConfig;
  readonly secrets: GeneratedSecretsConfig;
  /** Retention of every log group the app creates, in days (a value CloudWatch accepts). */
  readonly logRetentionDays: number;
}

/** The cost profiles; see {@link DeploymentConfig.profile}. */
export type CostProfile = 'dev' | 'prod';
export const COST_PROFILES: readonly CostProfile[] = ['dev', 'prod'];

/** How the agent VPC's private subnets reach the internet. */
export type NatKind = 'instance' | 'gateway';

export interface BudgetConfig {
  /** The monthly AWS cost budget in USD (whole dollars or cents). */
  readonly monthlyUsd: number;
  /** Percentages of the budget (actual spend) that notify the budget topic. */
  readonly thresholdsPercent: readonly number[];
  /** Percentages of the budget that notify when AWS forecasts the month's spend to reach them. */
  readonly forecastThresholdsPercent: readonly number[];
}

/** AWS Budgets allows at most this many notifications per budget. */
export const MAX_BUDGET_NOTIFICATIONS = 5;

/** The cost-allocation tag every resource carries, and the budget filters on (activate it once in Billing). */
export const COST_ALLOCATION_TAG = 'tollgate:deployment';

export interface AlertsConfig {
  /** An address subscribed to the alerts topic (confirm the email AWS sends); absent for none. */
  readonly email?: string;
  /** The `slack-webhook-url` secret will be set: the notifier posts alarms and alerts to Slack. */
  readonly slack: boolean;
  /** Synth fails when neither email nor Slack is set (prod); otherwise it only warns (dev). */
  readonly requireDestination: boolean;
  /** The daily-cost alarm threshold in USD (observability). */
  readonly dailyCostUsd: number;
}

export interface WafConfig {
  /**
   * Requests one IP may send in 5 minutes (of those `rateScope` counts) before WAF answers 429 with Retry-After.
   * Raise it for a backend behind one NAT address that calls without an API key, or keep `rateScope`
   * `unauthenticated`.
   */
  readonly ratePerIpPer5Min: number;
  /**
   * What the rate rule counts: `unauthenticated` (the default) leaves requests to `/v1` with an Authorization or
   * x-api-key header to the gateway's per-key limits, so a NAT'd backend is never throttled by address; `all`
   * counts every request.
   */
  readonly rateScope: 'all' | 'unauthenticated';
  /** ISO 3166 alpha-2 country codes blocked outright; empty disables the geo rule. */
  readonly blockedCountries: readonly string[];
  /**
   * More rules of AWSManagedRulesCommonRuleSet to count instead of block everywhere. The body-inspecting rules
   * of every managed group are always counted on `/v1` (prompts carry code, HTML, SQL, paths and URLs) and
   * blocked everywhere else; see lib/stacks/waf.ts.
   */
  readonly commonRuleSetCountOnly: readonly string[];
}

export interface ApiConfig {
  /** Stage-wide steady-state requests per second. */
  readonly throttleRatePerSecond: number;
  /** Stage-wide burst. */
  readonly throttleBurst: number;
}

export interface GatewayFunctionConfig {
  readonly memoryMb: number;
  /** Largest accepted request body (the Lambda enforces it; API Gateway caps bodies at 10 MB). */
  readonly maxBodyBytes: number;
  readonly platformShards: number;
  readonly upstreamTimeoutMs: number;
  /** Serve `bedrock/*` models and grant the gateway InvokeModel on foundation models and inference profiles. */
  readonly bedrock: boolean;
  readonly openaiBaseUrl?: string;
  readonly anthropicBaseUrl?: string;
  /**
   * Routing rules, aliases, fallback lists and budget downgrades (the JSON of `TOLLGATE_ROUTES`, README "Routing"),
   * checked at synth. @default no rules: every request goes to the model it names
   */
  readonly routes?: RoutingSettings;
  /** Billing drift (either way) of one provider and day, in USD, past which the drift alarm fires. @default 5 */
  readonly billingDriftAlarmUsd: number;
}

/**
 * Default limits, as the gateway's environment takes them: budgets as `WINDOW=USD[,…]` or `none`, rates as
 * a number or `none`. Passed to the gateway and the sweeper (whose ledger kill switch uses the platform's).
 */
export interface LimitsConfig {
  /** @default "month=100" */
  readonly keyBudgets: string;
  /** @default "day=10" */
  readonly userBudgets: string;
  /** @default "day=1000" (also the ledger kill switch's limit) */
  readonly platformBudgets: string;
  /** @default "60" */
  readonly keyRpm: string;
  /** @default "100000" */
  readonly keyTpm: string;
}

export interface AgentConfig {
  /** `instance`: one t4g.nano NAT instance (dev); `gateway`: managed NAT gateways (prod). */
  readonly nat: NatKind;
  /** NAT gateways in the agent VPC when `nat` is `gateway` (1 or 2; each costs money every hour). */
  readonly natGateways: number;
  /** Tasks always running; 0 scales the service to zero when the run queue is empty. */
  readonly minTasks: number;
  /** Most tasks the queue depth scales the service out to. */
  readonly maxTasks: number;
  /** ECS Container Insights on the cluster (billed as custom metrics). */
  readonly containerInsights: boolean;
  /** Fargate task CPU units (256 = 0.25 vCPU). */
  readonly cpu: number;
  readonly memoryMb: number;
}

export interface AdminConfig {
  /**
   * IAM role ARNs that may call `/admin/*` (the API's resource policy denies every other principal). Empty:
   * the gateway stack creates one role, `tollgate-<stage>-operator`, that principals of the account may assume.
   */
  readonly operatorRoleArns: readonly string[];
}

export interface GeneratedSecretsConfig {
  /**
   * Delete the generated `key-pepper` and `jwt-secret` parameters when the data stack is deleted. Off by default:
   * a new pepper would invalidate every issued API key.
   */
  readonly removeOnDelete: boolean;
}

/** A deployment setting has a bad value; the message names the setting. */
export class DeploymentConfigError extends Error {
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super(`${setting}: ${message}`);
    this.name = 'DeploymentConfigError';
  }
}

/** The defaults (the `dev` profile), which are also the deployment the cost estimate prices first. */
export const DEFAULT_CONFIG: DeploymentConfig = {
  stage: 'dev',
  profile: 'dev',
  budget: { monthlyUsd: 100, thresholdsPercent: [50, 80, 100], forecastThresholdsPercent: [100] },
  alerts: { dailyCostUsd: 20, slack: false, requireDestination: false },
  waf: { ratePerIpPer5Min: 1000, rateScope: 'unauthenticated', blockedCountries: ['CN', 'RU'], commonRuleSetCountOnly: ['SizeRestrictions_BODY'] },
  api: { throttleRatePerSecond: 100, throttleBurst: 200 },
  gateway: {
    memoryMb: 1024,
    maxBodyBytes: 2 * 1024 * 1024,
    platformShards: 8,
    upstreamTimeoutMs: 600_000,
    bedrock: false,
    billingDriftAlarmUsd: 5,
  },
  agent: { nat: 'instance', natGateways: 1, minTasks: 0, maxTasks: 1, containerInsights: false, cpu: 256, memoryMb: 512 },
  limits: {
    keyBudgets: formatBudgetDefaults(DEFAULT_LIMITS.key),
    userBudgets: formatBudgetDefaults(DEFAULT_LIMITS.user),
    platformBudgets: formatBudgetDefaults(DEFAULT_LIMITS.platform),
    keyRpm: String(DEFAULT_LIMITS.keyRpm),
    keyTpm: String(DEFAULT_LIMITS.keyTpm),
  },
  admin: { operatorRoleArns: [] },
  secrets: { removeOnDelete: false },
  logRetentionDays: 30,
};

/** What each profile changes from {@link DEFAULT_CONFIG}; an explicit setting still wins. */
export const PROFILE_DEFAULTS: Readonly<Record<CostProfile, { readonly agent: Partial<AgentConfig>; readonly alerts: Partial<AlertsConfig> }>> = {
  dev: { agent: {}, alerts: {} },
  prod: {
    agent: { nat: 'gateway', natGateways: 2, minTasks: 1, maxTasks: 2, containerInsights: true },
    alerts: { requireDestination: true },
  },
};

/** Fargate's valid CPU → memory (MiB) combinations, for the sizes an agent plausibly needs. */
const FARGATE_MEMORY: Readonly<Record<number, readonly [number, number, number]>> = {
  // cpu: [min, max, step]
  256: [512, 2048, 512],
  512: [1024, 4096, 1024],
  1024: [2048, 8192, 1024],
  2048: [4096, 16384, 1024],
  4096: [8192, 30720, 1024],
};

const VALID_RETENTION = new Set<number>(
  Object.values(RetentionDays).filter((v): v is number => typeof v === 'number' && v > 0),
);

type Raw = Readonly<Record<string, unknown>>;

function isObject(value: unknown): value is Raw {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads one object level: rejects unknown keys (typos would otherwise silently keep a default). */
function section(raw: unknown, path: string, known: readonly string[]): Raw {
  if (raw === undefined) return {};
  if (!isObject(raw)) throw new DeploymentConfigError(path, 'must be an object');
  for (const key of Object.keys(raw)) {
    if (!known.includes(key)) {
      throw new DeploymentConfigError(`${path}.${key}`, `is not a setting (known: ${known.join(', ')})`);
    }
  }
  return raw;
}

function integer(raw: Raw, path: string, key: string, fallback: number, min: number, max: number): number {
  const value = raw[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new DeploymentConfigError(`${path}.${key}`, `must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function boolean(raw: Raw, path: string, key: string, fallback: boolean): boolean {
  const value = raw[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new DeploymentConfigError(`${path}.${key}`, `must be true or false, got ${JSON.stringify(value)}`);
  return value;
}

function usd(raw: Raw, path: string, key: string, fallback: number, max: number): number {
  const value = raw[key];
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > max || Math.round(value * 100) !== value * 100) {
    throw new DeploymentConfigError(`${path}.${key}`, `must be a dollar amount above 0 and at most ${max}, with at most 2 decimals, got ${JSON.stringify(value)}`);
  }
  return value;
}

function stringList(raw: Raw, path: string, key: string, fallback: readonly string[], pattern: RegExp, what: string): readonly string[] {
  const value = raw[key];
  if (value === undefined) return fallback;
  if (!Array.isArray(value)) throw new DeploymentConfigError(`${path}.${key}`, `must be a list of ${what}`);
  for (const item of value) {
    if (typeof item !== 'string' || !pattern.test(item)) {
      throw new DeploymentConfigError(`${path}.${key}`, `must be a list of ${what}, got ${JSON.stringify(item)}`);
    }
  }
  if (new Set(value).size !== value.length) throw new DeploymentConfigError(`${path}.${key}`, 'has duplicates');
  return value as string[];
}

function httpsUrl(raw: Raw, path: string, key: string): string | undefined {
  const value = raw[key];
  if (value === undefined) return undefined;
  let ok = false;
  if (typeof value === 'string') {
    try {
      ok = new URL(value).protocol === 'https:';
    } catch {
      ok = false;
    }
  }
  if (!ok) throw new DeploymentConfigError(`${path}.${key}`, `must be an https:// URL, got ${JSON.stringify(value)}`);
  return value as string;
}

/**
 * Fills defaults into a raw `tollgate` context value and validates it.
 * @param raw the context value: an object, or a JSON string of one (as `-c tollgate=...` passes it)
 * @param overrides.stage a stage name that wins over `raw.stage` (the top-level `stage` context)
 */
export function resolveDeploymentConfig(raw: unknown, overrides: { readonly stage?: unknown } = {}): DeploymentConfig {
  let parsed = raw;
  if (typeof raw === 'string') {
    try {
      parsed = JSON.parse(raw);
    } catch {
      throw new DeploymentConfigError('tollgate', 'is not valid JSON');
    }
  }
  const root = section(parsed, 'tollgate', [
    'stage',
    'profile',
    'region',
    'budget',
    'alerts',
    'waf',
    'api',
    'gateway',
    'agent',
    'limits',
    'admin',
    'secrets',
    'logRetentionDays',
  ]);

  const stage = overrides.stage ?? root.stage ?? DEFAULT_CONFIG.stage;
  if (typeof stage !== 'string' || !/^[a-z][a-z0-9-]{0,19}$/.test(stage)) {
    throw new DeploymentConfigError('tollgate.stage', `must be 1-20 lower-case letters, digits or "-", starting with a letter, got ${JSON.stringify(stage)}`);
  }
  const profile = root.profile ?? DEFAULT_CONFIG.profile;
  if (typeof profile !== 'string' || !(COST_PROFILES as readonly string[]).includes(profile)) {
    throw new DeploymentConfigError('tollgate.profile', `must be one of ${COST_PROFILES.join(', ')}, got ${JSON.stringify(profile)}`);
  }
  const p = PROFILE_DEFAULTS[profile as CostProfile];
  const d: DeploymentConfig = {
    ...DEFAULT_CONFIG,
    agent: { ...DEFAULT_CONFIG.agent, ...p.agent },
    alerts: { ...DEFAULT_CONFIG.alerts, ...p.alerts },
  };
  const region = root.region;
  if (region !== undefined && (typeof region !== 'string' || !/^[a-z]{2}(-gov)?-[a-z]+-\d$/.test(region))) {
    throw new DeploymentConfigError('tollgate.region', `must be an AWS region such as "us-east-1", got ${JSON.stringify(region)}`);
  }

  const b = section(root.budget, 'tollgate.budget', ['monthlyUsd', 'thresholdsPercent', 'forecastThresholdsPercent']);
  const percentages = (key: string, fallback: readonly number[], min: number): number[] => {
    const list = b[key] ?? fallback;
    if (
      !Array.isArray(list) ||
      list.length < min ||
      list.length > MAX_BUDGET_NOTIFICATIONS ||
      !list.every((t, i) => typeof t === 'number' && t > 0 && t <= 1000 && (i === 0 || t > list[i - 1]))
    ) {
      throw new DeploymentConfigError(`tollgate.budget.${key}`, `must be ${min} to ${MAX_BUDGET_NOTIFICATIONS} increasing percentages above 0 and at most 1000, got ${JSON.stringify(list)}`);
    }
    return list as number[];
  };
  const thresholds = percentages('thresholdsPercent', d.budget.thresholdsPercent, 1);
  const forecastThresholds = percentages('forecastThresholdsPercent', d.budget.forecastThresholdsPercent, 0);
  if (thresholds.length + forecastThresholds.length > MAX_BUDGET_NOTIFICATIONS) {
    throw new DeploymentConfigError('tollgate.budget', `AWS Budgets allows ${MAX_BUDGET_NOTIFICATIONS} notifications per budget; thresholdsPercent and forecastThresholdsPercent have ${thresholds.length + forecastThresholds.length}`);
  }

  const a = section(root.alerts, 'tollgate.alerts', ['email', 'slack', 'requireDestination', 'dailyCostUsd']);
  if (a.email !== undefined && (typeof a.email !== 'string' || !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(a.email))) {
    throw new DeploymentConfigError('tollgate.alerts.email', `must be an email address, got ${JSON.stringify(a.email)}`);
  }

  const w = section(root.waf, 'tollgate.waf', ['ratePerIpPer5Min', 'rateScope', 'blockedCountries', 'commonRuleSetCountOnly']);
  const rateScope = w.rateScope ?? d.waf.rateScope;
  if (rateScope !== 'all' && rateScope !== 'unauthenticated') {
    throw new DeploymentConfigError('tollgate.waf.rateScope', `must be "unauthenticated" or "all", got ${JSON.stringify(rateScope)}`);
  }
  const api = section(root.api, 'tollgate.api', ['throttleRatePerSecond', 'throttleBurst']);
  const g = section(root.gateway, 'tollgate.gateway', [
    'memoryMb',
    'maxBodyBytes',
    'platformShards',
    'upstreamTimeoutMs',
    'bedrock',
    'openaiBaseUrl',
    'anthropicBaseUrl',
    'routes',
    'billingDriftAlarmUsd',
  ]);
  const lm = section(root.limits, 'tollgate.limits', ['keyBudgets', 'userBudgets', 'platformBudgets', 'keyRpm', 'keyTpm']);
  const budgetText = (key: keyof LimitsConfig): string => {
    const value = lm[key] ?? d.limits[key];
    const text = typeof value === 'number' ? String(value) : value;
    const ok = typeof text === 'string' && (text === 'none' || /^(hour|day|month)=\d+(\.\d{1,2})?(,(hour|day|month)=\d+(\.\d{1,2})?)*$/.test(text));
    if (!ok) throw new DeploymentConfigError(`tollgate.limits.${key}`, `must be "WINDOW=USD[,WINDOW=USD]" (hour, day, month) or "none", got ${JSON.stringify(value)}`);
    return text as string;
  };
  const rateText = (key: 'keyRpm' | 'keyTpm'): string => {
    const value = lm[key] ?? d.limits[key];
    const text = typeof value === 'number' ? String(value) : value;
    if (typeof text !== 'string' || !(text === 'none' || /^[1-9]\d{0,7}$/.test(text))) {
      throw new DeploymentConfigError(`tollgate.limits.${key}`, `must be a whole number from 1 to 99999999 or "none", got ${JSON.stringify(value)}`);
    }
    return text;
  };
  const ag = section(root.agent, 'tollgate.agent', ['nat', 'natGateways', 'minTasks', 'maxTasks', 'containerInsights', 'cpu', 'memoryMb']);
  const nat = ag.nat ?? d.agent.nat;
  if (nat !== 'instance' && nat !== 'gateway') {
    throw new DeploymentConfigError('tollgate.agent.nat', `must be "instance" or "gateway", got ${JSON.stringify(nat)}`);
  }
  const minTasks = integer(ag, 'tollgate.agent', 'minTasks', d.agent.minTasks, 0, 10);
  const maxTasks = integer(ag, 'tollgate.agent', 'maxTasks', Math.max(d.agent.maxTasks, minTasks, 1), 1, 10);
  if (maxTasks < minTasks) {
    throw new DeploymentConfigError('tollgate.agent.maxTasks', `must be at least minTasks (${minTasks}), got ${maxTasks}`);
  }
  const ad = section(root.admin, 'tollgate.admin', ['operatorRoleArns']);
  const sec = section(root.secrets, 'tollgate.secrets', ['removeOnDelete']);

  const cpu = integer(ag, 'tollgate.agent', 'cpu', d.agent.cpu, 256, 4096);
  const memoryRange = FARGATE_MEMORY[cpu];
  if (!memoryRange) {
    throw new DeploymentConfigError('tollgate.agent.cpu', `must be one of ${Object.keys(FARGATE_MEMORY).join(', ')}, got ${cpu}`);
  }
  const agentMemory = integer(ag, 'tollgate.agent', 'memoryMb', Math.max(d.agent.memoryMb, memoryRange[0]), 512, 30720);
  const [lo, hi, step] = memoryRange;
  if (agentMemory < lo || agentMemory > hi || agentMemory % step !== 0) {
    throw new DeploymentConfigError('tollgate.agent.memoryMb', `must be ${lo} to ${hi} in steps of ${step} for cpu ${cpu}, got ${agentMemory}`);
  }

  const throttleRate = integer(api, 'tollgate.api', 'throttleRatePerSecond', d.api.throttleRatePerSecond, 1, 10_000);
  const throttleBurst = integer(api, 'tollgate.api', 'throttleBurst', d.api.throttleBurst, 1, 5_000);

  const logRetentionDays = root.logRetentionDays ?? d.logRetentionDays;
  if (typeof logRetentionDays !== 'number' || !VALID_RETENTION.has(logRetentionDays)) {
    throw new DeploymentConfigError('tollgate.logRetentionDays', `must be a CloudWatch retention (${[...VALID_RETENTION].sort((x, y) => x - y).join(', ')}), got ${JSON.stringify(logRetentionDays)}`);
  }

  return {
    stage,
    profile: profile as CostProfile,
    region: region as string | undefined,
    budget: {
      monthlyUsd: usd(b, 'tollgate.budget', 'monthlyUsd', d.budget.monthlyUsd, 1_000_000),
      thresholdsPercent: thresholds,
      forecastThresholdsPercent: forecastThresholds,
    },
    alerts: {
      email: a.email as string | undefined,
      slack: boolean(a, 'tollgate.alerts', 'slack', d.alerts.slack),
      requireDestination: boolean(a, 'tollgate.alerts', 'requireDestination', d.alerts.requireDestination),
      dailyCostUsd: usd(a, 'tollgate.alerts', 'dailyCostUsd', d.alerts.dailyCostUsd, 1_000_000),
    },
    waf: {
      // WAF accepts 10 to 2,000,000,000 per evaluation window.
      ratePerIpPer5Min: integer(w, 'tollgate.waf', 'ratePerIpPer5Min', d.waf.ratePerIpPer5Min, 10, 2_000_000_000),
      rateScope,
      blockedCountries: stringList(w, 'tollgate.waf', 'blockedCountries', d.waf.blockedCountries, /^[A-Z]{2}$/, 'two-letter upper-case country codes'),
      commonRuleSetCountOnly: stringList(w, 'tollgate.waf', 'commonRuleSetCountOnly', d.waf.commonRuleSetCountOnly, /^[A-Za-z0-9_]{1,128}$/, 'rule names'),
    },
    api: { throttleRatePerSecond: throttleRate, throttleBurst },
    gateway: {
      memoryMb: integer(g, 'tollgate.gateway', 'memoryMb', d.gateway.memoryMb, 128, 10_240),
      // The same bounds lambda/config.ts enforces at cold start, checked here so a bad value fails the synth.
      maxBodyBytes: integer(g, 'tollgate.gateway', 'maxBodyBytes', d.gateway.maxBodyBytes, 1024, 10 * 1024 * 1024),
      platformShards: integer(g, 'tollgate.gateway', 'platformShards', d.gateway.platformShards, 1, 64),
      upstreamTimeoutMs: integer(g, 'tollgate.gateway', 'upstreamTimeoutMs', d.gateway.upstreamTimeoutMs, 1_000, 840_000),
      bedrock: boolean(g, 'tollgate.gateway', 'bedrock', d.gateway.bedrock),
      openaiBaseUrl: httpsUrl(g, 'tollgate.gateway', 'openaiBaseUrl'),
      anthropicBaseUrl: httpsUrl(g, 'tollgate.gateway', 'anthropicBaseUrl'),
      ...(g.routes !== undefined ? { routes: routesOf(g.routes) } : {}),
      billingDriftAlarmUsd: integer(g, 'tollgate.gateway', 'billingDriftAlarmUsd', d.gateway.billingDriftAlarmUsd, 1, 1_000_000),
    },
    agent: {
      nat,
      natGateways: integer(ag, 'tollgate.agent', 'natGateways', d.agent.natGateways, 1, 2),
      minTasks,
      maxTasks,
      containerInsights: boolean(ag, 'tollgate.agent', 'containerInsights', d.agent.containerInsights),
      cpu,
      memoryMb: agentMemory,
    },
    limits: {
      keyBudgets: budgetText('keyBudgets'),
      userBudgets: budgetText('userBudgets'),
      platformBudgets: budgetText('platformBudgets'),
      keyRpm: rateText('keyRpm'),
      keyTpm: rateText('keyTpm'),
    },
    admin: {
      operatorRoleArns: stringList(ad, 'tollgate.admin', 'operatorRoleArns', d.admin.operatorRoleArns, /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@\/-]{1,512}$/, 'IAM role ARNs (arn:aws:iam::<account>:role/<name>)'),
    },
    secrets: { removeOnDelete: boolean(sec, 'tollgate.secrets', 'removeOnDelete', d.secrets.removeOnDelete) },
    logRetentionDays,
  };
}

/** Names shared by the stacks, derived from the stage in one place. */
export function resourceName(config: Pick<DeploymentConfig, 'stage'>, suffix: string): string {
  return `tollgate-${config.stage}-${suffix}`;
}

function routesOf(value: unknown): RoutingSettings {
  try {
    return parseRoutingRules(JSON.stringify(value));
  } catch (err) {
    throw new DeploymentConfigError('tollgate.gateway.routes', err instanceof Error ? err.message : String(err));
  }
}
