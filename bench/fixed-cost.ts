/**
 * `npm run cost [-- --assembly cdk.out] [--models N]`: the fixed monthly cost of a deployment, read from its
 * synthesized CloudFormation templates and priced at us-east-1 list prices, with each line's assumption. "Fixed"
 * means what the account pays with zero traffic; per-request and per-GB charges are listed as notes, not guessed.
 * The custom metrics the gateway publishes once traffic flows (one set per provider × model) are priced apart, as
 * "an active month", because they exist only in the hours they receive data.
 *
 * Without --assembly it synthesizes both cost profiles (`dev` and `prod`, cdk.json's context otherwise, bundling
 * skipped) into temporary directories and prints both. Amounts are integer micro-USD, printed in dollars.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MICROS_PER_USD, displayUsd, type MicroUsd } from '../lambda/core/money';
import { ERROR_CLASSES, GUARDRAIL_METRICS, REQUEST_METRICS } from '../lambda/observability/metric-names';

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
  /** Each yearly rotation adds this per key per month, for the first two rotations. */
  readonly kmsRotationPerMonth: MicroUsd;
  /** Standard custom metrics (Container Insights and EMF metrics are billed as these), first 10,000 tier. */
  readonly customMetricPerMonth: MicroUsd;
  /** EC2 on-demand prices per hour by instance type (the NAT instance). */
  readonly ec2PerHour: Readonly<Record<string, MicroUsd>>;
  readonly ebsGp3PerGbMonth: MicroUsd;
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
  kmsRotationPerMonth: 1_000_000,
  customMetricPerMonth: 300_000,
  ec2PerHour: { 't4g.nano': 4_200, 't4g.micro': 8_400, 't4g.small': 16_800 },
  ebsGp3PerGbMonth: 80_000,
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

/** Container Insights metrics per cluster, per service and per task-definition family (ECS, standard insights). */
export const CONTAINER_INSIGHTS_METRICS = { perCluster: 8, perService: 13, perTaskFamily: 8 } as const;

/** The NAT instance's root volume when the template does not size it (the Amazon Linux 2023 AMI's 8 GB). */
const DEFAULT_ROOT_VOLUME_GB = 8;

export interface EstimateOptions {
  /**
   * Provider × model combinations that receive traffic in a month, for the per-model metric estimate.
   * @default 3
   */
  readonly activeModels?: number;
}

export interface CostEstimate {
  readonly lines: readonly CostLine[];
  /** What the account pays with no traffic at all. */
  readonly total: MicroUsd;
  /** Custom metrics the gateway publishes once traffic flows (per model), priced for a month of steady use. */
  readonly activeMonthLines: readonly CostLine[];
  /** `total` plus the active-month metrics. */
  readonly activeMonthTotal: MicroUsd;
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
export function estimateFixedCost(templates: readonly CfnTemplate[], prices: PriceList = US_EAST_1, options: EstimateOptions = {}): CostEstimate {
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

  for (const instance of resourcesOf(templates, 'AWS::EC2::Instance')) {
    const type = String(instance.Properties?.InstanceType);
    const hourly = prices.ec2PerHour[type];
    if (hourly === undefined) throw new Error(`no price for EC2 instance type ${type}`);
    add(`EC2 instance ${type} (NAT instance)`, 1, hourly * HOURS_PER_MONTH, `${HOURS_PER_MONTH} h × ${displayUsd(hourly)}/h, standard CPU credits`);
    const mappings = (instance.Properties?.BlockDeviceMappings as Array<{ Ebs?: { VolumeSize?: number } }> | undefined) ?? [];
    const gb = mappings.reduce((n, m) => n + (m.Ebs?.VolumeSize ?? DEFAULT_ROOT_VOLUME_GB), 0) || DEFAULT_ROOT_VOLUME_GB;
    add('EBS gp3 root volume (NAT instance)', gb, gb * prices.ebsGp3PerGbMonth, `${gb} GB × ${displayUsd(prices.ebsGp3PerGbMonth)}/GB-month`);
    const publicIp = ((instance.Properties?.NetworkInterfaces as Array<{ AssociatePublicIpAddress?: boolean }> | undefined) ?? []).some((n) => n.AssociatePublicIpAddress);
    if (publicIp) {
      add('Public IPv4 address (NAT instance)', 1, prices.publicIpv4PerHour * HOURS_PER_MONTH, `${HOURS_PER_MONTH} h × ${displayUsd(prices.publicIpv4PerHour)}/h`);
    }
  }

  const acls = resourcesOf(templates, 'AWS::WAFv2::WebACL');
  add('WAF web ACLs', acls.length, acls.length * prices.wafWebAclPerMonth, `${displayUsd(prices.wafWebAclPerMonth)} per web ACL per month`);
  const rules = acls.reduce((n, acl) => n + ((acl.Properties?.Rules as unknown[] | undefined)?.length ?? 0), 0);
  add('WAF rules', rules, rules * prices.wafRulePerMonth,
    `${displayUsd(prices.wafRulePerMonth)} per rule per month (a managed rule group counts as one rule); $0.60 per million requests is extra`);

  const tasks = new Map<string, Resource>();
  for (const stackResources of templates.map((t) => t.Resources ?? {})) {
    for (const [id, r] of Object.entries(stackResources)) if (r.Type === 'AWS::ECS::TaskDefinition') tasks.set(id, r);
  }
  const scalableTargets = resourcesOf(templates, 'AWS::ApplicationAutoScaling::ScalableTarget');
  const services = templates.flatMap((t) => Object.entries(t.Resources ?? {}).filter(([, r]) => r.Type === 'AWS::ECS::Service'));
  for (const [serviceId, service] of services) {
    // A scaled service costs its minimum when idle; scale-out is paid per run-hour (see notes).
    const target = scalableTargets.find((t) => JSON.stringify(t.Properties?.ResourceId ?? '').includes(serviceId));
    const count = target ? Number(target.Properties?.MinCapacity ?? 0) : Number(service.Properties?.DesiredCount ?? 1);
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

  const kmsKeys = resourcesOf(templates, 'AWS::KMS::Key');
  add('KMS customer-managed keys', kmsKeys.length, kmsKeys.length * prices.kmsKeyPerMonth,
    `${displayUsd(prices.kmsKeyPerMonth)} per key per month; requests are extra`);
  const rotating = kmsKeys.filter((k) => k.Properties?.EnableKeyRotation === true).length;
  add('KMS key rotations', rotating, rotating * prices.kmsRotationPerMonth,
    `${rotating} keys rotate yearly: +${displayUsd(prices.kmsRotationPerMonth)}/key/month after the first rotation (priced here), +${displayUsd(2 * prices.kmsRotationPerMonth)} after the second and no more after that`);

  const insightsClusters = resourcesOf(templates, 'AWS::ECS::Cluster').filter((c) =>
    ((c.Properties?.ClusterSettings as Array<{ Name: string; Value: string }> | undefined) ?? []).some(
      (x) => x.Name === 'containerInsights' && x.Value !== 'disabled',
    ),
  ).length;
  if (insightsClusters > 0) {
    const taskFamilies = resourcesOf(templates, 'AWS::ECS::TaskDefinition').length;
    const metrics = insightsClusters * CONTAINER_INSIGHTS_METRICS.perCluster + services.length * CONTAINER_INSIGHTS_METRICS.perService + taskFamilies * CONTAINER_INSIGHTS_METRICS.perTaskFamily;
    add('Container Insights metrics', metrics, metrics * prices.customMetricPerMonth,
      `${insightsClusters} cluster × ${CONTAINER_INSIGHTS_METRICS.perCluster} + ${services.length} service × ${CONTAINER_INSIGHTS_METRICS.perService} + ${taskFamilies} task family × ${CONTAINER_INSIGHTS_METRICS.perTaskFamily} custom metrics at ${displayUsd(prices.customMetricPerMonth)} (estimate; billed while the cluster reports)`);
  }

  const logGroups = resourcesOf(templates, 'AWS::Logs::LogGroup');
  const withRetention = logGroups.filter((g) => g.Properties?.RetentionInDays !== undefined).length;
  lines.push({
    item: 'CloudWatch log groups',
    quantity: logGroups.length,
    monthly: 0,
    assumption: `${logGroups.length} log groups (${withRetention} with retention set): no charge while empty; ingestion and storage are per GB (see notes)`,
  });

  const budgets = resourcesOf(templates, 'AWS::Budgets::Budget').length;
  const actions = resourcesOf(templates, 'AWS::Budgets::BudgetsAction').length;
  const paidActions = Math.max(actions - prices.freeActionBudgets, 0);
  lines.push({
    item: 'AWS Budgets',
    quantity: budgets,
    monthly: paidActions * prices.budgetActionPerDay * DAYS_PER_MONTH,
    assumption: `${budgets} budget(s) with notifications only (no budget actions: ${actions}); budgets without actions are free, action-enabled ones beyond ${prices.freeActionBudgets} cost ${displayUsd(prices.budgetActionPerDay)}/day`,
  });

  // Generated secrets are created by a custom resource; the others are set with `npm run secrets`: count every name.
  const secretNames = new Set<string>();
  for (const m of JSON.stringify(templates).matchAll(/:parameter\/tollgate\/[a-z0-9-]+\/([a-z0-9-]+)/g)) secretNames.add(m[1]);
  const generated = resourcesOf(templates, 'Custom::TollgateGeneratedSecret').length;
  lines.push({
    item: 'SSM SecureString secrets',
    quantity: secretNames.size,
    monthly: 0,
    assumption: `${secretNames.size} standard-tier parameters (${[...secretNames].sort().join(', ')}; ${generated} generated at deploy): free at standard throughput; no Secrets Manager secrets`,
  });

  const total = lines.reduce((sum, l) => sum + l.monthly, 0);

  const models = options.activeModels ?? 3;
  const requestMetrics = Object.values(REQUEST_METRICS).filter((m) => m !== REQUEST_METRICS.errorCount).length;
  const activeMonthLines: CostLine[] = [];
  const metric = (item: string, quantity: number, assumption: string) =>
    activeMonthLines.push({ item, quantity, monthly: quantity * prices.customMetricPerMonth, assumption: `${assumption} at ${displayUsd(prices.customMetricPerMonth)} per metric-month` });
  metric('Gateway request metrics', requestMetrics, `${requestMetrics} metrics (service × Stage)`);
  metric('Gateway per-model metrics', requestMetrics * models, `${requestMetrics} metrics × ${models} provider/model pairs in use (npm run cost -- --models N)`);
  metric('Gateway error metrics', ERROR_CLASSES.length, `ErrorCount × ${ERROR_CLASSES.length} error classes`);
  metric('Guardrail event metrics', Object.keys(GUARDRAIL_METRICS).length, 'kill switch, circuit opened, alert sent');
  const activeMonthTotal = total + activeMonthLines.reduce((sum, l) => sum + l.monthly, 0);
  const notes = [
    `NAT gateway data processing: ${displayUsd(prices.natGatewayPerGb)} per GB through NAT (provider calls from the agent; DynamoDB and S3 use the free gateway endpoints)`,
    'WAF: $0.60 per million requests inspected',
    'API Gateway REST: $3.50 per million requests; Lambda: per request and GB-second (arm64)',
    'DynamoDB on demand: per read/write request unit; storage $0.25/GB-month; PITR $0.20/GB-month',
    'CloudWatch Logs: $0.50/GB ingested (API access logs, Lambda logs, VPC flow logs of rejected traffic, WAF logs of blocked and counted requests only)',
    'Agent tasks above the minimum: per run-hour at the Fargate price of the line above (the service scales out on the run queue)',
    'ECR: $0.10/GB-month for the agent image',
  ];
  return { lines, total, activeMonthLines, activeMonthTotal, notes };
}

/** Reads every `*.template.json` of a cloud assembly directory. */
export function readAssemblyTemplates(dir: string): Record<string, CfnTemplate> {
  const out: Record<string, CfnTemplate> = {};
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.template.json')).sort()) {
    out[file.replace(/\.template\.json$/, '')] = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as CfnTemplate;
  }
  return out;
}

/** Synthesizes one cost profile (cdk.json's context otherwise, bundling skipped) into a temporary directory. */
async function synthesizeProfile(profile: 'dev' | 'prod'): Promise<string> {
  const { App } = await import('aws-cdk-lib');
  const { resolveDeploymentConfig } = await import('../lib/config');
  const { addTollgate } = await import('../lib/tollgate');
  const cdkJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8')) as { context: Record<string, unknown> };
  const base = cdkJson.context.tollgate as Record<string, unknown>;
  // Pricing needs no alert destination; the real prod synth still requires one.
  const tollgate = { ...base, profile, alerts: { ...(base.alerts as object), requireDestination: false } };
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), `tollgate-cost-${profile}-`));
  const app = new App({ outdir, context: { ...cdkJson.context, tollgate, 'aws:cdk:bundling-stacks': [] } });
  addTollgate(app, resolveDeploymentConfig(tollgate));
  app.synth();
  return outdir;
}

function usd(micros: MicroUsd): string {
  return `$${(micros / MICROS_PER_USD).toFixed(2)}`;
}

/** The printed table of one estimate. */
export function formatEstimate(title: string, estimate: CostEstimate): string {
  const all = [...estimate.lines, ...estimate.activeMonthLines];
  const width = Math.max(...all.map((l) => l.item.length), 'Total, active month'.length);
  const row = (l: CostLine) => `${l.item.padEnd(width)}  ${String(l.quantity).padStart(3)}  ${usd(l.monthly).padStart(9)}   ${l.assumption}\n`;
  let out = `${title}\n\n`;
  for (const l of estimate.lines) out += row(l);
  out += `${'Total, fixed'.padEnd(width)}       ${usd(estimate.total).padStart(9)}   per month before any traffic\n`;
  out += '\nOnce traffic flows (custom metrics exist only in hours they receive data):\n';
  for (const l of estimate.activeMonthLines) out += row(l);
  out += `${'Total, active month'.padEnd(width)}       ${usd(estimate.activeMonthTotal).padStart(9)}   fixed + the metrics of a month of steady use\n`;
  return out;
}

async function main(): Promise<void> {
  const flag = process.argv.indexOf('--assembly');
  const modelsFlag = process.argv.indexOf('--models');
  const activeModels = modelsFlag >= 0 ? Number(process.argv[modelsFlag + 1]) : undefined;
  if (activeModels !== undefined && !(Number.isInteger(activeModels) && activeModels >= 0)) throw new Error('--models needs a whole number');
  const runs: Array<{ readonly title: string; readonly dir: string; readonly temporary: boolean }> =
    flag >= 0
      ? [{ title: process.argv[flag + 1], dir: process.argv[flag + 1], temporary: false }]
      : [
          { title: 'profile dev (the default)', dir: await synthesizeProfile('dev'), temporary: true },
          { title: 'profile prod', dir: await synthesizeProfile('prod'), temporary: true },
        ];
  let notes: readonly string[] = [];
  for (const run of runs) {
    const templates = readAssemblyTemplates(run.dir);
    if (Object.keys(templates).length === 0) throw new Error(`no *.template.json in ${run.dir}`);
    const estimate = estimateFixedCost(Object.values(templates), US_EAST_1, { activeModels });
    notes = estimate.notes;
    process.stdout.write(formatEstimate(`== ${run.title}: fixed monthly cost of ${Object.keys(templates).join(', ')} at ${US_EAST_1.region} list prices (${HOURS_PER_MONTH} h/month)`, estimate));
    process.stdout.write('\n');
    if (run.temporary) fs.rmSync(run.dir, { recursive: true, force: true });
  }
  process.stdout.write('Not included (usage-based):\n');
  for (const n of notes) process.stdout.write(`  - ${n}\n`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
