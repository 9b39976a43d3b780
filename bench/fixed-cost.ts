/**
 * `npm run cost [-- --assembly cdk.out]`: the fixed monthly cost of a deployment, read from its synthesized
 * CloudFormation templates and priced at us-east-1 list prices, with each line's assumption. "Fixed" means what
 * the account pays with zero traffic; per-request and per-GB charges are listed as notes, not guessed.
 *
 * Without --assembly it synthesizes the default deployment (cdk.json's context, bundling skipped) into a
 * temporary directory first. Amounts are computed in integer micro-USD and printed in dollars.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MICROS_PER_USD, displayUsd, type MicroUsd } from '../lambda/core/money';

/** A CloudFormation template as synthesized (only what the estimate reads). */
export interface CfnTemplate {
  readonly Resources?: Readonly<Record<string, { readonly Type: string; readonly Properties?: Readonly<Record<string, unknown>> }>>;
}

/** List prices in micro-USD (us-east-1, checked against the AWS pricing pages in 2026). */
export interface PriceList {
  readonly region: string;
  readonly natGatewayPerHour: MicroUsd;
  readonly natGatewayPerGb: MicroUsd;
  readonly publicIpv4PerHour: MicroUsd;
  readonly wafWebAclPerMonth: MicroUsd;
  readonly wafRulePerMonth: MicroUsd;
  readonly fargateArmVcpuPerHour: MicroUsd;
  readonly fargateArmGbPerHour: MicroUsd;
  readonly fargateX86VcpuPerHour: MicroUsd;
  readonly fargateX86GbPerHour: MicroUsd;
  readonly alarmMetricPerMonth: MicroUsd;
  readonly dashboardPerMonth: MicroUsd;
  readonly kmsKeyPerMonth: MicroUsd;
  /** Budgets with actions beyond the two free ones cost $0.10 a day; budgets without actions are free. */
  readonly budgetActionPerDay: MicroUsd;
  readonly freeActionBudgets: number;
}

export const US_EAST_1: PriceList = {
  region: 'us-east-1',
  natGatewayPerHour: 45_000,
  natGatewayPerGb: 45_000,
  publicIpv4PerHour: 5_000,
  wafWebAclPerMonth: 5_000_000,
  wafRulePerMonth: 1_000_000,
  fargateArmVcpuPerHour: 32_380,
  fargateArmGbPerHour: 3_560,
  fargateX86VcpuPerHour: 40_480,
  fargateX86GbPerHour: 4_445,
  alarmMetricPerMonth: 100_000,
  dashboardPerMonth: 3_000_000,
  kmsKeyPerMonth: 1_000_000,
  budgetActionPerDay: 100_000,
  freeActionBudgets: 2,
};

const HOURS_PER_MONTH = 730;
const DAYS_PER_MONTH = 30;

export interface CostLine {
  readonly item: string;
  readonly quantity: number;
  readonly monthly: MicroUsd;
  readonly assumption: string;
}

export interface CostEstimate {
  readonly lines: readonly CostLine[];
  readonly total: MicroUsd;
  /** Charges that depend on traffic or data volume, so are not in the total. */
  readonly notes: readonly string[];
}

type Resource = { readonly Type: string; readonly Properties?: Readonly<Record<string, unknown>> };

function resourcesOf(templates: readonly CfnTemplate[], type: string): Resource[] {
  return templates.flatMap((t) => Object.values(t.Resources ?? {}).filter((r) => r.Type === type));
}

/** How many metrics an alarm is billed for: 1 for a plain alarm, each metric of a math alarm, 3 per anomaly band. */
function billedAlarmMetrics(alarm: Resource): number {
  const metrics = alarm.Properties?.Metrics as ReadonlyArray<{ MetricStat?: unknown; Expression?: string }> | undefined;
  if (!metrics) return 1;
  const anomaly = metrics.some((m) => typeof m.Expression === 'string' && /ANOMALY_DETECTION_BAND/i.test(m.Expression));
  const stats = metrics.filter((m) => m.MetricStat !== undefined).length;
  return anomaly ? 3 * Math.max(stats, 1) : stats;
}

/** Prices the fixed monthly cost of the resources in `templates`. */
export function estimateFixedCost(templates: readonly CfnTemplate[], prices: PriceList = US_EAST_1): CostEstimate {
  const lines: CostLine[] = [];
  const add = (item: string, quantity: number, monthly: number, assumption: string) => {
    if (quantity > 0) lines.push({ item, quantity, monthly: Math.round(monthly), assumption });
  };

  const nats = resourcesOf(templates, 'AWS::EC2::NatGateway').length;
  add('NAT gateway hours', nats, nats * prices.natGatewayPerHour * HOURS_PER_MONTH,
    `${nats} × ${HOURS_PER_MONTH} h × ${displayUsd(prices.natGatewayPerHour)}/h; data processed is extra (see notes)`);

  const eips = resourcesOf(templates, 'AWS::EC2::EIP').length;
  add('Public IPv4 addresses (NAT EIPs)', eips, eips * prices.publicIpv4PerHour * HOURS_PER_MONTH,
    `${eips} × ${HOURS_PER_MONTH} h × ${displayUsd(prices.publicIpv4PerHour)}/h`);

  const acls = resourcesOf(templates, 'AWS::WAFv2::WebACL');
  add('WAF web ACLs', acls.length, acls.length * prices.wafWebAclPerMonth, `${displayUsd(prices.wafWebAclPerMonth)} per web ACL per month`);
  const rules = acls.reduce((n, acl) => n + ((acl.Properties?.Rules as unknown[] | undefined)?.length ?? 0), 0);
  add('WAF rules', rules, rules * prices.wafRulePerMonth,
    `${displayUsd(prices.wafRulePerMonth)} per rule per month (a managed rule group counts as one rule); $0.60 per million requests is extra`);

  const tasks = new Map<string, Resource>();
  for (const stackResources of templates.map((t) => t.Resources ?? {})) {
    for (const [id, r] of Object.entries(stackResources)) if (r.Type === 'AWS::ECS::TaskDefinition') tasks.set(id, r);
  }
  for (const service of resourcesOf(templates, 'AWS::ECS::Service')) {
    const count = Number(service.Properties?.DesiredCount ?? 1);
    const ref = (service.Properties?.TaskDefinition as { Ref?: string } | undefined)?.Ref;
    const task = ref ? tasks.get(ref) : undefined;
    if (!task || count === 0) continue;
    const cpu = Number(task.Properties?.Cpu);
    const memory = Number(task.Properties?.Memory);
    const arm = (task.Properties?.RuntimePlatform as { CpuArchitecture?: string } | undefined)?.CpuArchitecture === 'ARM64';
    const vcpuPrice = arm ? prices.fargateArmVcpuPerHour : prices.fargateX86VcpuPerHour;
    const gbPrice = arm ? prices.fargateArmGbPerHour : prices.fargateX86GbPerHour;
    const perHour = (cpu * vcpuPrice) / 1024 + (memory * gbPrice) / 1024;
    add(`Fargate tasks (${arm ? 'ARM64' : 'x86_64'})`, count, count * perHour * HOURS_PER_MONTH,
      `${count} task(s) × ${cpu / 1024} vCPU + ${memory / 1024} GB, always on, ${HOURS_PER_MONTH} h at ${displayUsd(vcpuPrice)}/vCPU-h and ${displayUsd(gbPrice)}/GB-h`);
  }

  const alarms = resourcesOf(templates, 'AWS::CloudWatch::Alarm');
  const alarmMetrics = alarms.reduce((n, a) => n + billedAlarmMetrics(a), 0);
  add('CloudWatch alarm metrics', alarmMetrics, alarmMetrics * prices.alarmMetricPerMonth,
    `${alarms.length} standard-resolution alarms watching ${alarmMetrics} metrics at ${displayUsd(prices.alarmMetricPerMonth)} each (math alarms pay per metric, anomaly-detection alarms 3 per metric); the first 10 alarm metrics of an account are free`);

  const dashboards = resourcesOf(templates, 'AWS::CloudWatch::Dashboard').length;
  add('CloudWatch dashboards', dashboards, dashboards * prices.dashboardPerMonth,
    `${displayUsd(prices.dashboardPerMonth)} per dashboard per month (an account's first 3 dashboards are free)`);

  const keys = resourcesOf(templates, 'AWS::KMS::Key').length;
  add('KMS customer-managed keys', keys, keys * prices.kmsKeyPerMonth,
    `${displayUsd(prices.kmsKeyPerMonth)} per key per month; each yearly rotation adds ${displayUsd(prices.kmsKeyPerMonth)}/month for the first two rotations; requests are extra`);

  const budgets = resourcesOf(templates, 'AWS::Budgets::Budget').length;
  const actions = resourcesOf(templates, 'AWS::Budgets::BudgetsAction').length;
  const paidActions = Math.max(actions - prices.freeActionBudgets, 0);
  lines.push({
    item: 'AWS Budgets',
    quantity: budgets,
    monthly: paidActions * prices.budgetActionPerDay * DAYS_PER_MONTH,
    assumption: `${budgets} budget(s) with notifications only (no budget actions: ${actions}); budgets without actions are free, action-enabled ones beyond ${prices.freeActionBudgets} cost ${displayUsd(prices.budgetActionPerDay)}/day`,
  });

  // SecureStrings are written by `npm run secrets`, not by CloudFormation: count the names the templates grant.
  const secretNames = new Set<string>();
  for (const m of JSON.stringify(templates).matchAll(/:parameter\/tollgate\/[a-z0-9-]+\/([a-z0-9-]+)/g)) secretNames.add(m[1]);
  lines.push({
    item: 'SSM SecureString secrets',
    quantity: secretNames.size,
    monthly: 0,
    assumption: `${secretNames.size} standard-tier parameters granted in the templates (${[...secretNames].sort().join(', ')}): free at standard throughput`,
  });

  const total = lines.reduce((sum, l) => sum + l.monthly, 0);
  const notes = [
    `NAT gateway data processing: ${displayUsd(prices.natGatewayPerGb)} per GB through NAT (provider calls from the agent; DynamoDB and S3 use the free gateway endpoints)`,
    'WAF: $0.60 per million requests inspected',
    'API Gateway REST: $3.50 per million requests; Lambda: per request and GB-second (arm64)',
    'DynamoDB on demand: per read/write request unit; storage $0.25/GB-month; PITR $0.20/GB-month',
    'CloudWatch Logs: $0.50/GB ingested (API access logs, Lambda logs, VPC flow logs of rejected traffic); Container Insights metrics per cluster/service/task',
    'ECR: $0.10/GB-month for the agent image',
  ];
  return { lines, total, notes };
}

/** Reads every `*.template.json` of a cloud assembly directory. */
export function readAssemblyTemplates(dir: string): Record<string, CfnTemplate> {
  const out: Record<string, CfnTemplate> = {};
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.template.json')).sort()) {
    out[file.replace(/\.template\.json$/, '')] = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as CfnTemplate;
  }
  return out;
}

/** Synthesizes the default deployment (cdk.json context, bundling skipped) into a temporary directory. */
async function synthesizeDefault(): Promise<string> {
  const { App } = await import('aws-cdk-lib');
  const { resolveDeploymentConfig } = await import('../lib/config');
  const { addTollgate } = await import('../lib/tollgate');
  const cdkJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8')) as { context: Record<string, unknown> };
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-cost-'));
  const app = new App({ outdir, context: { ...cdkJson.context, 'aws:cdk:bundling-stacks': [] } });
  addTollgate(app, resolveDeploymentConfig(cdkJson.context.tollgate));
  app.synth();
  return outdir;
}

function usd(micros: MicroUsd): string {
  return `$${(micros / MICROS_PER_USD).toFixed(2)}`;
}

async function main(): Promise<void> {
  const flag = process.argv.indexOf('--assembly');
  const dir = flag >= 0 ? process.argv[flag + 1] : await synthesizeDefault();
  const templates = readAssemblyTemplates(dir);
  if (Object.keys(templates).length === 0) throw new Error(`no *.template.json in ${dir}`);
  const estimate = estimateFixedCost(Object.values(templates));
  const width = Math.max(...estimate.lines.map((l) => l.item.length));
  process.stdout.write(`Fixed monthly cost of ${Object.keys(templates).join(', ')} at ${US_EAST_1.region} list prices (${HOURS_PER_MONTH} h/month)\n\n`);
  for (const l of estimate.lines) {
    process.stdout.write(`${l.item.padEnd(width)}  ${String(l.quantity).padStart(3)}  ${usd(l.monthly).padStart(9)}   ${l.assumption}\n`);
  }
  process.stdout.write(`${'Total'.padEnd(width)}       ${usd(estimate.total).padStart(9)}   per month before any traffic\n\nNot included (usage-based):\n`);
  for (const n of estimate.notes) process.stdout.write(`  - ${n}\n`);
  if (flag < 0) fs.rmSync(dir, { recursive: true, force: true });
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
