/**
 * Scale in simulation: N Lambda instances of the real request pipeline, one user at 1,000 req/s, against
 * DynamoDB's per-item rules (bench/support/dynamo-physics.ts) imposed in virtual time around a real DynamoDB
 * Local. Every condition is evaluated by DynamoDB Local; latency, transaction conflicts and per-partition
 * throughput come from the physics; the gateway's own code (RequestPipeline, AdmittingLedger, DynamoDbLedger,
 * guardrails) runs unchanged with a virtual clock.
 *
 *   arrivals (open loop, Poisson) ──► a free instance (or a new one after a cold start, up to the cap)
 *        instance: pipeline.run (limits, reserve, read-back) → upstream (virtual 300–800 ms) → settle
 *
 * Scenarios: `throughput` (limits far away: everything should be admitted) and `budget` (the user's daily
 * limit runs out mid-run: refusals must begin close to the limit, and spend must never pass it).
 * Configurations side by side: `per-request` (the ledger as composed today: one reserve and one settle
 * transaction per request).
 *
 *   npm run bench:scale                       # both scenarios, 1,000 req/s
 *   npm run bench:scale -- --seconds=5 --rate=500 --scenario=budget --config=per-request
 */
import { performance } from 'node:perf_hooks';
import { GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { loadConfig, type GatewayConfig } from '../lambda/config';
import { AdmissionGate, AdmittingLedger } from '../lambda/core/admission';
import type { Principal } from '../lambda/core/auth';
import { BudgetExceededError, RateLimitError, StoreUnavailableError, TollgateError } from '../lambda/core/errors';
import { silentLogger } from '../lambda/core/log';
import { displayUsd, type MicroUsd } from '../lambda/core/money';
import { type BillableCall, RequestPipeline } from '../lambda/core/pipeline';
import { costOf, PriceBook } from '../lambda/core/pricing';
import type { CounterRef, Ledger } from '../lambda/core/stores';
import type { KeyRecord, ScopeId, TokenUsage } from '../lambda/core/types';
import { windowBounds, windowKey } from '../lambda/core/windows';
import { startDynamoDbLocal } from '../lambda/local/dynamodb-local';
import { createDynamoDbClient } from '../lambda/store/dynamodb/client';
import { ensureTables } from '../lambda/store/dynamodb/create-tables';
import { DynamoDbGuardrailStore } from '../lambda/store/dynamodb/guardrails-store';
import { DynamoDbKeyStore } from '../lambda/store/dynamodb/key-store';
import { counterPk } from '../lambda/store/dynamodb/items';
import { DynamoDbLedger } from '../lambda/store/dynamodb/ledger';
import { leasingLedgerFor, pipelineSettings, poolOptionsOf, sharedPoolOptionsOf } from '../lambda/compose';
import { TABLES, type TableDefinition, type TableNames } from '../lambda/store/dynamodb/schema';
import { DynamoPhysics, type PartitionStats, type PhysicsStats } from './support/dynamo-physics';
import { seededRandom, VirtualScheduler } from './support/virtual-time';

const USER = 'u-scale';
const ORG = 'o-scale';
const MODEL = 'openai/gpt-4o-mini';
/** Lambda's default account concurrency. */
const DEFAULT_INSTANCE_CAP = 1_000;
/** The org shape's instance cap: Lambda's concurrency quota raised on request (see docs/scale-simulation.md). */
const ORG_INSTANCE_CAP = 6_000;
/** DynamoDB on-demand prices (us-east-1): $ per million write request units and read request units. */
const USD_PER_MILLION_WRU = 0.625;
const USD_PER_MILLION_RRU = 0.125;
/** Virtual init of a new instance (the lean bundle's module init plus the runtime's start). */
const COLD_START_MS = 300;

interface Options {
  readonly rate: number;
  readonly seconds: number;
  readonly keys: number;
  readonly instanceCap: number;
  readonly seed: number;
  readonly scenarios: readonly ScenarioName[];
  readonly configs: readonly ConfigName[];
  /** Seconds over which the arrival rate climbs linearly from 0 to `rate` (a real onset, not a step). */
  readonly ramp: number;
  /** Share of a transaction's latency during which it holds its items (physics `holdShare`). */
  readonly holdShare: number;
  /** Extra gateway settings (env names, e.g. TOLLGATE_LEASE_TTL_MS) for every configuration. */
  readonly env: Readonly<Record<string, string>>;
  /**
   * The org shape (`--users`): N users of one org, K keys each, every key at R requests a minute (the offered
   * rate is N·K·R/60); absent: the one-user shape of issue 14 (`--rate`, `--keys`).
   */
  readonly org?: {
    readonly users: number;
    readonly keysPerUser: number;
    readonly keyRate: number;
  };
  /** `--limits defaults`: the shipped default limits (key rpm/tpm, budgets, velocity) instead of far-away ones. */
  readonly defaultLimits: boolean;
  /** Day limits of the org and the platform (USD), and how much of each is left at the start (pre-spent). */
  readonly orgDay?: number;
  readonly platformDay?: number;
  readonly orgDayLeft?: number;
  readonly platformDayLeft?: number;
  /** `--no-org`: the users belong to no org. */
  readonly noOrg: boolean;
  /** `--json`: a last line of JSON with the figures. */
  readonly json: boolean;
}

type ScenarioName = 'throughput' | 'budget' | 'org';
type ConfigName = 'per-request' | 'leases' | 'pools';

/** How one configuration builds an instance's ledger from the DynamoDB ledger. */
interface Configuration {
  readonly name: ConfigName;
  readonly label: string;
  /** Scope pools in the DynamoDB ledger (store/dynamodb/pools.ts). */
  readonly pools: boolean;
  wrap(inner: DynamoDbLedger, ctx: WrapContext): Ledger & { close?(): Promise<void> };
}

interface WrapContext {
  readonly scheduler: VirtualScheduler;
  readonly instanceId: string;
  readonly config: GatewayConfig;
  readonly onError: (what: string, err: unknown) => void;
}

const CONFIGURATIONS: Record<ConfigName, Configuration> = {
  'per-request': { name: 'per-request', label: '(a) per-request reserve', pools: false, wrap: (inner) => inner },
  leases: {
    name: 'leases',
    label: '(b) budget leases, no pools',
    pools: false,
    wrap: (inner, { scheduler, instanceId, config, onError }) => leasingLedgerFor(inner, config, { clock: scheduler, instanceId, onError }),
  },
  // As lambda/compose.ts builds it by default: scope pools in the ledger, budget leases in front of it.
  pools: {
    name: 'pools',
    label: '(c) pools + leases (default)',
    pools: true,
    wrap: (inner, { scheduler, instanceId, config, onError }) => leasingLedgerFor(inner, config, { clock: scheduler, instanceId, onError }),
  },
};

interface Instance {
  readonly id: string;
  readonly pipeline: RequestPipeline;
  readonly ledger: Ledger & { close?(): Promise<void> };
  /** The key's record as the instance's authenticator knows it: read (consistently) when older than its cache. */
  keyRecord(keyId: string): Promise<KeyRecord | undefined>;
}

interface Result {
  readonly config: Configuration;
  readonly scenario: ScenarioName;
  readonly offered: number;
  readonly admitted: number;
  readonly refusedBudget: number;
  readonly storeUnavailable: number;
  readonly contentionShed: number;
  readonly lambdaThrottled: number;
  readonly otherErrors: Map<string, number>;
  /** Budget refusals by the scope whose limit refused them (the `x-tollgate-budget-scope` header). */
  readonly budgetByScope: Map<string, number>;
  /** The scope whose day counter is read back and compared with real costs. */
  readonly limitScope: ScopeId;
  /** What that counter held before the run (`--org-day-left`, `--platform-day-left`). */
  readonly preSpent: MicroUsd;
  /** Request units the physics counted in all (transactions at 2×, as AWS bills them). */
  readonly units: { readonly write: number; readonly read: number };
  /** The same by kind of item (table or index and partition key prefix). */
  readonly unitsByKind: Map<string, { write: number; read: number; writes: number }>;
  /**
   * The steady state: units spent and requests admitted in the run's second half (every key warmed up and
   * pooled; grants taken and released inside it counted, the sweeper's release after the run not).
   */
  readonly steady: { readonly admitted: number; readonly pooled: number; readonly write: number; readonly read: number; readonly byKind: Map<string, number> };
  /** Lease returns or usage writes that failed (retried by the lease layer; told through its onError). */
  readonly leaseErrors: Map<string, number>;
  readonly settleFailures: number;
  readonly admissionMs: number[];
  readonly instances: number;
  readonly physics: PhysicsStats;
  readonly hot: PartitionStats[];
  readonly limit: MicroUsd | undefined;
  readonly spent: MicroUsd;
  readonly reserved: MicroUsd;
  readonly committed: MicroUsd;
  readonly admittedCost: MicroUsd;
  /** Sum of the costs of requests admitted before the first budget refusal (undefined: no refusal). */
  readonly spentAtFirstRefusal: MicroUsd | undefined;
  readonly firstRefusalAt: number | undefined;
  readonly realMs: number;
  readonly realCalls: number;
  readonly durationMs: number;
  /** Admitted requests per virtual second of arrival. */
  readonly timeline: number[];
  /** Admissions served from a lease (no store write of their own). */
  readonly leasedAdmissions: number;
  /** Admissions taken from a scope pool (one single-item write instead of a transaction). */
  readonly pooledAdmissions: number;
  /** Holds the sweeper released after the run (pool grants; anything else would be a request never settled). */
  readonly poolGrantsReleased: number;
  /** After the ramp: offered and admitted requests, and how long that part lasted. */
  readonly full: { readonly offered: number; readonly admitted: number; readonly ms: number };
}

function parseArgs(args: readonly string[]): Options {
  let argv = args;
  const arg = (name: string): string | undefined => argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const num = (name: string, fallback: number): number => {
    const v = arg(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${v}`);
    return n;
  };
  // `--name value` is accepted as well as `--name=value` (`--no-org` and `--json` take no value).
  const flags = new Set(['--no-org', '--json']);
  const joined: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    if (a.startsWith('--') && !a.includes('=') && !flags.has(a) && next !== undefined && !next.startsWith('--')) {
      joined.push(`${a}=${next}`);
      i++;
    } else joined.push(a);
  }
  argv = joined;
  const usd = (name: string): number | undefined => (arg(name) === undefined ? undefined : num(name, 0));
  const scenario = arg('scenario');
  const config = arg('config');
  const users = arg('users') === undefined ? undefined : Math.round(num('users', 1));
  const org = users === undefined ? undefined : { users, keysPerUser: Math.round(num('keys-per-user', 1)), keyRate: num('key-rate', 30) };
  const limitsArg = arg('limits');
  if (limitsArg !== undefined && limitsArg !== 'defaults') throw new Error(`--limits takes "defaults", got ${limitsArg}`);
  const orgDay = usd('org-day');
  const platformDay = usd('platform-day');
  return {
    org,
    defaultLimits: limitsArg === 'defaults',
    ...(orgDay !== undefined ? { orgDay } : {}),
    ...(platformDay !== undefined ? { platformDay } : {}),
    ...(usd('org-day-left') !== undefined ? { orgDayLeft: usd('org-day-left') } : {}),
    ...(usd('platform-day-left') !== undefined ? { platformDayLeft: usd('platform-day-left') } : {}),
    noOrg: argv.includes('--no-org'),
    json: argv.includes('--json'),
    rate: org ? (org.users * org.keysPerUser * org.keyRate) / 60 : num('rate', 1_000),
    seconds: num('seconds', 10),
    keys: org ? org.users * org.keysPerUser : Math.round(num('keys', 8)),
    // The org shape models Lambda's concurrency quota raised (5,000 req/s of ~0.85 s calls needs ~4,300).
    instanceCap: Math.round(num('instances', org ? ORG_INSTANCE_CAP : DEFAULT_INSTANCE_CAP)),
    seed: Math.round(num('seed', 14)),
    scenarios: org ? ['org'] : scenario ? [scenario as ScenarioName] : ['throughput', 'budget'],
    configs: config ? [config as ConfigName] : org ? ['pools'] : (Object.keys(CONFIGURATIONS) as ConfigName[]),
    ramp: arg('ramp') === undefined ? 2 : Number(arg('ramp')),
    holdShare: arg('hold') === undefined ? 1 : Number(arg('hold')),
    env: Object.fromEntries(argv.filter((a) => /^TOLLGATE_[A-Z_]+=/.test(a)).map((a) => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)])),
  };
}

async function simulate(endpoint: string, configuration: Configuration, scenario: ScenarioName, options: Options): Promise<Result> {
  const realStart = performance.now();
  const stage = `scale-${configuration.name}-${scenario}-${Date.now().toString(36)}`;
  // Explicit limits that 1,000 req/s of one user can live with: velocity ceiling out of reach (the bench
  // measures the store, not the breaker); key budgets `none`. The user's day limit is the scenario's.
  const org = scenario === 'org' ? options.org : undefined;
  const config: GatewayConfig = loadConfig({
    TOLLGATE_STAGE: stage,
    // `--limits defaults`: what an operator who sets nothing gets (key rpm/tpm, budgets, velocity).
    ...(options.defaultLimits ? {} : { TOLLGATE_VELOCITY_FLOOR_USD: '1000000', TOLLGATE_DEFAULT_KEY_BUDGETS: 'none' }),
    ...options.env,
  });
  const setupClient = createDynamoDbClient({ region: 'us-east-1', endpoint, maxAttempts: 10, requestTimeoutMs: 120_000, connectionTimeoutMs: 30_000 });
  await ensureTables(setupClient, config.tables, { timeoutMs: 240_000 });

  // Virtual time starts at noon (UTC) of the next day, so no window boundary falls inside the run.
  const start = windowBounds('day', Date.now()).end + 12 * 3_600_000;
  const scheduler = new VirtualScheduler(start);
  const random = seededRandom(options.seed);
  const physics = new DynamoPhysics({
    scheduler,
    random: seededRandom(options.seed + 1),
    tables: tableDefinitions(config.tables),
    holdShare: options.holdShare,
    // Updated items' real sizes, read back outside the physics: an update is billed at the larger of the item's
    // size before and after (a pool item carries a marker per take in flight).
    readItem: async (table, key) => (await setupClient.send(new GetItemCommand({ TableName: table, Key: key, ConsistentRead: true }))).Item,
  });
  // DynamoDB Local's own hiccups (a 500 "took too long waiting for a lock" on a loaded box) are retried below
  // the physics with real timers: they are not DynamoDB's behaviour, and the scheduler waits for them.
  const simClient = createDynamoDbClient({ region: 'us-east-1', endpoint, maxAttempts: 5, requestTimeoutMs: 120_000, connectionTimeoutMs: 30_000 });
  physics.install(simClient);

  const setupLedger = new DynamoDbLedger(setupClient, { tables: config.tables, platformShards: config.platformShards, usageRetentionDays: 1 });
  const micros = (usd: number): MicroUsd => Math.round(usd * 1_000_000);
  // The org shape: the org's and the platform's day limits, when given, are the ones the run reaches.
  const limitScope: ScopeId = org ? (options.orgDay !== undefined && !options.noOrg ? `org:${ORG}` : 'platform') : `user:${USER}`;
  const orgLimit = org ? (limitScope === 'platform' ? options.platformDay : options.orgDay) : undefined;
  const limit = org ? (orgLimit === undefined ? undefined : micros(orgLimit)) : scenario === 'budget' ? Math.round(options.rate * options.seconds * 0.4 * 300) : undefined;
  if (!org) {
    // Throughput: $100,000 a day is out of reach. Budget: about 40 % of the run's offered spend (≈300 µ$ a request).
    await setupLedger.setLimit(`user:${USER}`, 'day', limit ?? 100_000_000_000);
  } else {
    if (options.orgDay !== undefined && !options.noOrg) await setupLedger.setLimit(`org:${ORG}`, 'day', micros(options.orgDay));
    if (options.platformDay !== undefined) await setupLedger.setLimit('platform', 'day', micros(options.platformDay));
  }
  // `--org-day-left` / `--platform-day-left`: the day's counters start with the limit less what is left spent
  // (as earlier traffic would have left them; the platform's spread over its shards), so the run reaches it.
  const preSpend = async (scope: ScopeId, usd: number, shards: number): Promise<MicroUsd> => {
    const total = micros(usd);
    for (let shard = 0; shard < shards; shard++) {
      const part = Math.floor(total / shards) + (shard < total % shards ? 1 : 0);
      await setupClient.send(
        new UpdateItemCommand({
          TableName: config.tables.budgets,
          Key: marshall({ pk: counterPk({ scope, shard }), sk: windowKey('day', start) }),
          UpdateExpression: 'ADD committed :m, spent :m, requests :n',
          ExpressionAttributeValues: marshall({ ':m': part, ':n': 0 }),
        }),
      );
    }
    return total;
  };
  let preSpent = 0;
  if (org && options.orgDay !== undefined && options.orgDayLeft !== undefined && !options.noOrg) {
    const spent = await preSpend(`org:${ORG}`, Math.max(0, options.orgDay - options.orgDayLeft), 1);
    if (limitScope === `org:${ORG}`) preSpent = spent;
  }
  if (org && options.platformDay !== undefined && options.platformDayLeft !== undefined) {
    const spent = await preSpend('platform', Math.max(0, options.platformDay - options.platformDayLeft), config.platformShards);
    if (limitScope === 'platform') preSpent = spent;
  }
  const keys = new DynamoDbKeyStore(setupClient, config.tables);
  const keyRecords: KeyRecord[] = [];
  const keysPerUser = org?.keysPerUser ?? options.keys;
  for (let k = 0; k < options.keys; k++) {
    const record: KeyRecord = {
      keyId: `k-scale-${k}`,
      prefix: `sk-tg-scale${k}`,
      hash: `scale-${k}`,
      userId: org ? `u-scale-${Math.floor(k / keysPerUser)}` : USER,
      ...(org && options.noOrg ? {} : { orgId: ORG }),
      name: `scale ${k}`,
      scopes: ['ai:complete'],
      // High enough for 1,000 req/s over a handful of keys, but still enforced (the buckets are written);
      // `--limits defaults` leaves the shipped per-key defaults.
      ...(options.defaultLimits ? {} : { rpm: 1_000_000, tpm: 10_000_000_000 }),
      status: 'active',
      createdAt: new Date(start - 86_400_000).toISOString(),
    };
    keyRecords.push(record);
  }
  for (let k = 0; k < keyRecords.length; k += 64) await Promise.all(keyRecords.slice(k, k + 64).map((r) => keys.create(r)));

  const prices = new PriceBook({ providers: ['openai'], now: () => scheduler.now() });
  const model = prices.resolve(MODEL);
  const counts = { offered: 0, admitted: 0, refusedBudget: 0, storeUnavailable: 0, contentionShed: 0, lambdaThrottled: 0, settleFailures: 0 };
  const otherErrors = new Map<string, number>();
  const budgetByScope = new Map<string, number>();
  const leaseErrors = new Map<string, number>();
  const instances: Instance[] = [];
  const idle: Instance[] = [];
  const makeInstance = (): Instance => {
    const id = `i${instances.length}`;
    const inner = new DynamoDbLedger(simClient, {
      tables: config.tables,
      platformShards: config.platformShards,
      usageRetentionDays: config.usageRetentionDays,
      clock: scheduler,
      sleep: scheduler.sleep,
      pools: configuration.pools ? poolOptionsOf(config) : false,
      sharedPools: configuration.pools ? sharedPoolOptionsOf(config) : false,
    });
    const wrapped = configuration.wrap(inner, {
      scheduler,
      instanceId: `${id}-${stage}`,
      config,
      onError: (what) => {
        const k = `lease: ${what}`;
        leaseErrors.set(k, (leaseErrors.get(k) ?? 0) + 1);
      },
    });
    // Counts admissions a lease served (their reservation names it); everything else passes through.
    const ledger = new Proxy(wrapped, {
      get(target, prop, receiver) {
        if (prop !== 'reserve') return Reflect.get(target, prop, receiver);
        return async (input: Parameters<Ledger['reserve']>[0]) => {
          const reservation = await target.reserve(input);
          if (reservation.leaseId !== undefined) leasedAdmissions++;
          else if (reservation.pool !== undefined) pooledAdmissions++;
          return reservation;
        };
      },
    });
    const keyStore = new DynamoDbKeyStore(simClient, config.tables);
    const pipeline = new RequestPipeline({
      ledger: new AdmittingLedger(ledger, new AdmissionGate(config.admission)),
      ...pipelineSettings(config),
      settleRetry: { ...config.settleRetry, sleep: scheduler.sleep },
      keys: keyStore,
      clock: scheduler,
      log: silentLogger,
      guardrails: {
        store: new DynamoDbGuardrailStore(simClient, { tables: config.tables, platformShards: config.platformShards, clock: scheduler, sleep: scheduler.sleep }),
        settings: config.guardrails,
      },
    });
    // As the authenticator does (lambda/core/auth.ts): a key's record is read again once its cached copy is older
    // than TOLLGATE_AUTH_CACHE_MS; its lastUsedAt is what the settle's once-a-minute write goes by.
    const keyCache = new Map<string, { record: KeyRecord | undefined; at: number }>();
    const keyRecord = async (keyId: string): Promise<KeyRecord | undefined> => {
      const hit = keyCache.get(keyId);
      if (hit && scheduler.now() - hit.at < config.authCacheMs) return hit.record;
      const record = await keyStore.get(keyId);
      keyCache.set(keyId, { record, at: scheduler.now() });
      return record;
    };
    const instance = { id, pipeline, ledger, keyRecord };
    instances.push(instance);
    return instance;
  };

  const admissionMs: number[] = [];
  const admittedCosts: Array<{ at: number; cost: MicroUsd }> = [];
  let firstRefusalAt: number | undefined;
  let completed = 0;
  const durationMs = options.seconds * 1000;
  const rampMs = Math.min(durationMs, options.ramp * 1000);
  const full = { offered: 0, admitted: 0, ms: durationMs - rampMs };
  const timeline: number[] = [];
  let leasedAdmissions = 0;
  let pooledAdmissions = 0;

  const serve = async (instance: Instance, n: number, arrival: number): Promise<void> => {
    const key = (await instance.keyRecord(keyRecords[n % keyRecords.length]!.keyId)) ?? keyRecords[n % keyRecords.length]!;
    const principal: Principal = { keyId: key.keyId, userId: key.userId, ...(key.orgId ? { orgId: key.orgId } : {}), scopes: key.scopes, key };
    const inputTokens = 800 + Math.floor(random() * 400);
    const body = { model: MODEL, messages: [{ role: 'user', content: `question ${n} of the scale bench` }], max_tokens: 1_024 };
    const call: BillableCall = {
      requestId: `req-${stage}-${n}`,
      startedAt: arrival,
      principal,
      requestType: 'chat',
      endpoint: '/v1/chat/completions',
      model,
      stream: false,
      estimate: { inputTokens, maxOutputTokens: 1_024 },
      fingerprint: instance.pipeline.fingerprintOf(body),
      clientSignal: new AbortController().signal,
      invoke: async () => {
        admissionMs.push(scheduler.now() - arrival);
        counts.admitted++;
        if (arrival >= start + rampMs) full.admitted++;
        const second = Math.floor((arrival - start) / 1000);
        timeline[second] = (timeline[second] ?? 0) + 1;
        const usage: TokenUsage = { inputTokens, outputTokens: 50 + Math.floor(random() * 350), cachedInputTokens: 0, cacheWriteTokens: 0 };
        admittedCosts.push({ at: scheduler.now(), cost: costOf(model.price, usage) });
        await scheduler.sleep(300 + random() * 500);
        return { kind: 'json', body: { object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'ok' } }] }, usage };
      },
    };
    try {
      const outcome = await instance.pipeline.run(call);
      if (outcome.kind === 'error') classify(outcome.error);
      const record = await outcome.after();
      if (outcome.kind !== 'error' && record === undefined) counts.settleFailures++;
    } catch (err) {
      classify(err);
    }
  };

  const classify = (err: unknown): void => {
    if (err instanceof BudgetExceededError) {
      counts.refusedBudget++;
      const scope = err.headers['x-tollgate-budget-scope'] ?? 'unknown';
      budgetByScope.set(scope, (budgetByScope.get(scope) ?? 0) + 1);
      firstRefusalAt ??= scheduler.now();
    } else if (err instanceof StoreUnavailableError) {
      counts.storeUnavailable++;
    } else if (err instanceof RateLimitError && err.code === 'gateway_busy') {
      counts.contentionShed++;
    } else {
      const code = err instanceof TollgateError ? `${err.status} ${err.code}` : `crash: ${err instanceof Error ? err.message.slice(0, 80) : String(err)}`;
      otherErrors.set(code, (otherErrors.get(code) ?? 0) + 1);
    }
  };

  const dispatch = (n: number): void => {
    counts.offered++;
    const arrival = scheduler.now();
    if (arrival >= start + rampMs) full.offered++;
    let instance = idle.pop();
    let coldStart = 0;
    if (!instance) {
      if (instances.length >= options.instanceCap) {
        counts.lambdaThrottled++;
        return;
      }
      instance = makeInstance();
      coldStart = COLD_START_MS;
    }
    const chosen = instance;
    void (async () => {
      if (coldStart) await scheduler.sleep(coldStart);
      try {
        await serve(chosen, n, arrival);
      } finally {
        completed++;
        idle.push(chosen);
      }
    })();
  };

  // Open-loop Poisson arrivals over the run (thinned during the ramp, so the rate climbs linearly).
  let t = start;
  for (let n = 0; ; ) {
    t += (-Math.log(1 - random()) / options.rate) * 1000;
    if (t >= start + durationMs) break;
    if (rampMs > 0 && t - start < rampMs && random() >= (t - start) / rampMs) continue;
    const id = n++;
    scheduler.schedule(t, () => dispatch(id));
  }
  // Units and admissions at the middle and at the end of the arrivals: their difference is the steady state.
  const snapshots: Array<{ admitted: number; pooled: number; write: number; read: number; byKind: Map<string, number> }> = [];
  const snapshot = (): void => {
    const total = physics.totalUnits();
    snapshots.push({ admitted: counts.admitted, pooled: pooledAdmissions, ...total, byKind: new Map([...physics.unitsByKind()].map(([k, u]) => [k, u.write])) });
  };
  scheduler.schedule(start + durationMs / 2, snapshot);
  scheduler.schedule(start + durationMs, snapshot);
  await scheduler.run({ maxVirtualMs: durationMs + 15 * 60_000 });
  const [mid, end] = snapshots as [(typeof snapshots)[number], (typeof snapshots)[number]];
  const steady = {
    admitted: end.admitted - mid.admitted,
    pooled: end.pooled - mid.pooled,
    write: end.write - mid.write,
    read: end.read - mid.read,
    byKind: new Map([...end.byKind].map(([k, w]) => [k, w - (mid.byKind.get(k) ?? 0)])),
  };
  if (completed + counts.lambdaThrottled !== counts.offered) {
    throw new Error(`simulation stopped with ${counts.offered - completed - counts.lambdaThrottled} requests unfinished`);
  }
  // Instances return what they hold (leases) before the counters are read.
  const closing = Promise.all(instances.map((i) => i.ledger.close?.()));
  await scheduler.run({ maxVirtualMs: 15 * 60_000 });
  await closing;
  // The sweeper (every minute on AWS) releases the pools' grants once their epochs and grace are over (a quiet
  // key's pool has the longest epochs).
  const longestEpochMs = Math.max(config.pools.epochMs, config.pools.quietEpochMs, config.sharedPools.epochMs);
  const sweepAt = scheduler.now() + 2 * (longestEpochMs * 2 + Math.max(config.pools.graceMs, config.sharedPools.graceMs));
  const sweeper = new DynamoDbLedger(setupClient, { tables: config.tables, platformShards: config.platformShards, usageRetentionDays: 1, clock: { now: () => sweepAt } });
  const poolGrantsReleased = await sweeper.sweepExpired(sweepAt);

  const dayRef: CounterRef = { scope: limitScope, window: 'day', windowKey: windowKey('day', start), windowEnd: windowBounds('day', start).end };
  const [day] = await setupLedger.readCounters([dayRef]);
  const units = physics.totalUnits();
  const admittedCost = admittedCosts.reduce((s, c) => s + c.cost, 0);
  const spentAtFirstRefusal = firstRefusalAt === undefined ? undefined : admittedCosts.filter((c) => c.at <= firstRefusalAt!).reduce((s, c) => s + c.cost, 0);
  setupClient.destroy();
  simClient.destroy();
  return {
    config: configuration,
    scenario,
    ...counts,
    budgetByScope,
    limitScope,
    preSpent,
    units,
    unitsByKind: physics.unitsByKind(),
    steady,
    otherErrors,
    leaseErrors,
    admissionMs,
    instances: instances.length,
    physics: physics.stats,
    hot: physics.hotPartitions(5),
    limit,
    spent: day?.spent ?? 0,
    reserved: day?.reserved ?? 0,
    committed: day?.committed ?? 0,
    admittedCost,
    spentAtFirstRefusal,
    firstRefusalAt: firstRefusalAt === undefined ? undefined : firstRefusalAt - start,
    realMs: performance.now() - realStart,
    realCalls: scheduler.realCalls,
    durationMs,
    full,
    poolGrantsReleased,
    pooledAdmissions,
    timeline: Array.from({ length: Math.ceil(durationMs / 1000) }, (_, i) => timeline[i] ?? 0),
    leasedAdmissions,
  };
}

function tableDefinitions(names: TableNames): Map<string, TableDefinition> {
  return new Map(TABLES.map((def) => [names[def.id], def]));
}

function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function shortPartition(id: string): string {
  // `tollgate-scale-…-budgets:ctr#user:u-scale` → `budgets:ctr#user:u-scale`
  return id.replace(/^tollgate-scale-[^-]+(-[^-]+)?-[^-]+-[a-z0-9]+-/, '');
}

function storeUsdPerMillion(r: Pick<Result, 'admitted' | 'units'>): number {
  return r.admitted ? ((r.units.write / r.admitted) * USD_PER_MILLION_WRU + (r.units.read / r.admitted) * USD_PER_MILLION_RRU) : 0;
}

/** Write units per admitted request in the steady state (the run's second half), and its store cost. */
function steadyFigures(r: Result): { wcu: number; rcu: number; usd: number } | undefined {
  const { admitted, write, read } = r.steady;
  if (admitted <= 0) return undefined;
  return { wcu: write / admitted, rcu: read / admitted, usd: storeUsdPerMillion({ admitted, units: { write, read } }) };
}

/** The issue's figures for one run, as the `--json` last line prints them (USD, req/s, ms). */
function figures(r: Result): Record<string, unknown> {
  const usd = (m: number): number => m / 1_000_000;
  const perSecond = (n: number): number => (r.full.ms > 0 ? Math.round((n / (r.full.ms / 1000)) * 10) / 10 : 0);
  const steady = steadyFigures(r);
  return {
    scenario: r.scenario,
    config: r.config.name,
    offeredRps: perSecond(r.full.offered),
    admittedRps: perSecond(r.full.admitted),
    storeErrors: r.storeUnavailable + r.settleFailures,
    busy429: r.contentionShed,
    lambdaThrottled: r.lambdaThrottled,
    budget429: Object.fromEntries(r.budgetByScope),
    otherRefusals: Object.fromEntries(r.otherErrors),
    limitScope: r.limitScope,
    limitUsd: r.limit === undefined ? null : usd(r.limit),
    overspendUsd: r.limit === undefined ? null : { byCounter: usd(Math.max(0, r.committed - r.limit)), byRealCost: usd(Math.max(0, r.preSpent + r.admittedCost - r.limit)) },
    counterMinusRealUsd: usd(r.committed - r.preSpent - r.admittedCost),
    spentAtFirstRefusalPct: r.spentAtFirstRefusal === undefined || r.limit === undefined ? null : Math.round((1000 * (r.preSpent + r.spentAtFirstRefusal)) / r.limit) / 10,
    // The same, of what was left when the run began (the limit less what `--org-day-left` left pre-spent).
    spentAtFirstRefusalOfLeftPct:
      r.spentAtFirstRefusal === undefined || r.limit === undefined || r.limit <= r.preSpent ? null : Math.round((1000 * r.spentAtFirstRefusal) / (r.limit - r.preSpent)) / 10,
    wcuPerRequest: r.admitted ? Math.round((r.units.write / r.admitted) * 100) / 100 : null,
    wcuPerRequestByKind: r.admitted ? Object.fromEntries([...r.unitsByKind].filter(([, u]) => u.write > 0).map(([k, u]) => [k, Math.round((u.write / r.admitted) * 100) / 100])) : null,
    // Write units per item write (transactions 2×): above 1 (2 in a transaction) only for items over 1 KB.
    wcuPerWriteByKind: Object.fromEntries([...r.unitsByKind].filter(([, u]) => u.writes > 0).map(([k, u]) => [k, Math.round((u.write / u.writes) * 100) / 100])),
    rcuPerRequest: r.admitted ? Math.round((r.units.read / r.admitted) * 100) / 100 : null,
    // Per offered request, refused ones included (a spent budget's refusals: what a client hammering it costs).
    wcuPerOffered: r.offered ? Math.round((r.units.write / r.offered) * 100) / 100 : null,
    rcuPerOffered: r.offered ? Math.round((r.units.read / r.offered) * 100) / 100 : null,
    storeUsdPerMillion: Math.round(storeUsdPerMillion(r) * 100) / 100,
    // The same in the steady state (the run's second half: every key warmed up; see Result.steady).
    steadyWcuPerRequest: steady ? Math.round(steady.wcu * 100) / 100 : null,
    steadyWcuPerRequestByKind: r.steady.admitted
      ? Object.fromEntries([...r.steady.byKind].filter(([, w]) => w > 0).map(([k, w]) => [k, Math.round((w / r.steady.admitted) * 100) / 100]))
      : null,
    steadyStoreUsdPerMillion: steady ? Math.round(steady.usd * 100) / 100 : null,
    steadyPooledPct: r.steady.admitted ? Math.round((1000 * r.steady.pooled) / r.steady.admitted) / 10 : null,
    p50Ms: Math.round(percentile(r.admissionMs, 50)),
    p99Ms: Math.round(percentile(r.admissionMs, 99)),
  };
}

function report(results: readonly Result[], options: Options): void {
  for (const scenario of options.scenarios) {
    const rows = results.filter((r) => r.scenario === scenario);
    if (rows.length === 0) continue;
    const shape = options.org
      ? `one org${options.noOrg ? ' (removed: --no-org)' : ''} of ${options.org.users} users × ${options.org.keysPerUser} keys at ${options.org.keyRate} req/min each${options.defaultLimits ? ', default limits' : ''}`
      : 'one user';
    console.log(
      `\n## scenario: ${scenario} — ${shape}, ${options.rate} req/s offered for ${options.seconds} virtual s (first ${options.ramp} s a linear ramp), ${options.keys} keys, items held ${options.holdShare}× a transaction's latency` +
        (Object.keys(options.env).length ? `, ${Object.entries(options.env).map(([k, v]) => `${k}=${v}`).join(' ')}` : ''),
    );
    const line = (label: string, f: (r: Result) => string) => console.log(`| ${label.padEnd(44)} | ${rows.map((r) => f(r).padStart(26)).join(' | ')} |`);
    line('', (r) => r.config.label);
    console.log(`| ${'-'.repeat(44)} | ${rows.map(() => '-'.repeat(26)).join(' | ')} |`);
    line('offered req/s (after the ramp)', (r) => (r.full.ms > 0 ? (r.full.offered / (r.full.ms / 1000)).toFixed(0) : '—'));
    line('admitted req/s (after the ramp)', (r) => (r.full.ms > 0 ? (r.full.admitted / (r.full.ms / 1000)).toFixed(0) : '—'));
    line('offered / admitted requests (whole run)', (r) => `${r.offered} / ${r.admitted}`);
    line('admitted from a lease (no write of their own)', (r) => `${r.leasedAdmissions} (${r.admitted ? ((100 * r.leasedAdmissions) / r.admitted).toFixed(0) : 0} %)`);
    line('taken from a scope pool (single-item write)', (r) => `${r.pooledAdmissions} (${r.admitted ? ((100 * r.pooledAdmissions) / r.admitted).toFixed(0) : 0} %)`);
    line('holds the sweeper released after the run', (r) => String(r.poolGrantsReleased));
    line('store errors: 503 store_unavailable', (r) => String(r.storeUnavailable));
    line('store errors: 429 gateway_busy (contention)', (r) => String(r.contentionShed));
    line('refused: budget (429 insufficient_quota)', (r) => String(r.refusedBudget) + (r.budgetByScope.size ? ` (${[...r.budgetByScope].map(([k, v]) => `${k} ${v}`).join(', ')})` : ''));
    line('refused: other', (r) => [...r.otherErrors].map(([k, v]) => `${v}× ${k}`).join(', ') || '0');
    line('Lambda throttled (instance cap)', (r) => String(r.lambdaThrottled));
    line('settles failed (hold left for the sweeper)', (r) => String(r.settleFailures));
    line('lease layer errors (told via onError)', (r) => [...r.leaseErrors].map(([k, v]) => `${v}× ${k}`).join(', ') || '0');
    line('writes that reached the table / admitted req', (r) => {
      const writes = ['TransactWriteItemsCommand', 'BatchWriteItemCommand', 'PutItemCommand', 'UpdateItemCommand', 'DeleteItemCommand'];
      const n = writes.reduce((sum, w) => sum + (r.physics.succeeded[w] ?? 0), 0);
      return r.admitted ? (n / r.admitted).toFixed(2) : '—';
    });
    line('write / read units per admitted req (tx 2×)', (r) => (r.admitted ? `${(r.units.write / r.admitted).toFixed(1)} / ${(r.units.read / r.admitted).toFixed(1)}` : '—'));
    line('store $ per million admitted (on-demand)', (r) => (r.admitted ? `$${storeUsdPerMillion(r).toFixed(2)}` : '—'));
    line('steady state (second half): WCU / RCU, $ per M', (r) => {
      const f = steadyFigures(r);
      return f ? `${f.wcu.toFixed(1)} / ${f.rcu.toFixed(1)}, $${f.usd.toFixed(2)} (${((100 * r.steady.pooled) / r.steady.admitted).toFixed(0)} % pooled)` : '—';
    });
    line('transaction conflicts (each one retried)', (r) => String(r.physics.transactionConflicts));
    line('single-item writes on held items', (r) => String(r.physics.itemConflicts));
    line('throttled: transactions / SDK attempts', (r) => `${r.physics.throttledTransactions} / ${r.physics.throttledCalls}`);
    line('admission latency p50 / p99 (virtual ms)', (r) => `${percentile(r.admissionMs, 50).toFixed(0)} / ${percentile(r.admissionMs, 99).toFixed(0)}`);
    line('instances (peak concurrency)', (r) => String(r.instances));
    line('day limit read back', (r) => `${r.limitScope}: ${r.limit === undefined ? (r.scenario === 'org' ? 'none set' : '$100,000 (out of reach)') : displayUsd(r.limit)}`);
    line('final counter: spent (+ reserved)', (r) => `${displayUsd(r.spent)} (+${displayUsd(r.reserved)})`);
    line('sum of admitted requests\' real costs', (r) => displayUsd(r.admittedCost));
    line('overspend (counter committed − limit, ≥ 0)', (r) => (r.limit === undefined ? 'n/a' : displayUsd(Math.max(0, r.committed - r.limit))));
    line('spent before the run (pre-spent)', (r) => displayUsd(r.preSpent));
    line('overspend (pre-spent + real costs − limit, ≥ 0)', (r) => (r.limit === undefined ? 'n/a' : displayUsd(Math.max(0, r.preSpent + r.admittedCost - r.limit))));
    line('counter − (pre-spent + real costs)', (r) => displayUsd(r.committed - r.preSpent - r.admittedCost));
    if (scenario === 'budget' || scenario === 'org') {
      line('first budget refusal at (virtual s)', (r) => (r.firstRefusalAt === undefined ? '—' : (r.firstRefusalAt / 1000).toFixed(2)));
      line('limit spent when refusals began', (r) =>
        r.spentAtFirstRefusal === undefined || r.limit === undefined ? '—' : `${((100 * (r.preSpent + r.spentAtFirstRefusal)) / r.limit).toFixed(1)} %`,
      );
      line('of what was left, spent when refusals began', (r) =>
        r.spentAtFirstRefusal === undefined || r.limit === undefined || r.limit <= r.preSpent ? '—' : `${((100 * r.spentAtFirstRefusal) / (r.limit - r.preSpent)).toFixed(1)} %`,
      );
      line('limit spent at the end', (r) => (r.limit === undefined ? '—' : `${((100 * (r.preSpent + r.admittedCost)) / r.limit).toFixed(1)} %`));
    }
    line('real calls to DynamoDB Local', (r) => String(r.realCalls));
    line('real time taken', (r) => `${(r.realMs / 1000).toFixed(1)} s`);
    for (const r of rows) console.log(`\n  ${r.config.label}: admitted per virtual second of arrival: ${r.timeline.join(' ')}`);
    for (const r of rows) {
      if (!r.admitted) continue;
      const kinds = [...r.unitsByKind].sort((x, y) => y[1].write - x[1].write);
      console.log(`\n  ${r.config.label}: write / read units per admitted request, by kind of item (transactions 2×; units per item write)`);
      for (const [kind, u] of kinds) {
        if (u.write / r.admitted < 0.005 && u.read / r.admitted < 0.005) continue;
        const perWrite = u.writes ? `${(u.write / u.writes).toFixed(2).padStart(6)} a write` : '';
        const steady = r.steady.admitted ? `${((r.steady.byKind.get(kind) ?? 0) / r.steady.admitted).toFixed(2).padStart(7)} WCU steady  ` : '';
        console.log(`    ${kind.padEnd(28)} ${(u.write / r.admitted).toFixed(2).padStart(7)} WCU  ${(u.read / r.admitted).toFixed(2).padStart(7)} RCU  ${steady}${perWrite}`);
      }
    }
    for (const r of rows) {
      console.log(`\n  ${r.config.label}: hottest partitions (peak WCU in one virtual second; limit ${1000} WCU/s)`);
      for (const p of r.hot) {
        console.log(
          `    ${shortPartition(p.partition).padEnd(48)} peak ${String(p.peakWriteUnitsPerSecond).padStart(6)} WCU/s  ${String(p.peakReadUnitsPerSecond).padStart(6)} RCU/s  throttled ${p.throttles}`,
        );
      }
    }
  }
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  const began = performance.now();
  console.log('# bench:scale — DynamoDB per-item rules in virtual time around DynamoDB Local (docs/scale-simulation.md)');
  const ddb = await startDynamoDbLocal({ port: 0, inMemory: true, startTimeoutMs: 240_000 });
  const results: Result[] = [];
  try {
    for (const scenario of options.scenarios) {
      for (const name of options.configs) {
        const configuration = CONFIGURATIONS[name];
        if (!configuration) throw new Error(`unknown --config ${name}; known: ${Object.keys(CONFIGURATIONS).join(', ')}`);
        process.stdout.write(`running ${scenario} × ${configuration.label} … `);
        const result = await simulate(ddb.endpoint, configuration, scenario, options);
        console.log(`${(result.realMs / 1000).toFixed(1)} s`);
        results.push(result);
      }
    }
  } finally {
    await ddb.stop();
  }
  report(results, options);
  console.log(`\ntotal real time ${((performance.now() - began) / 1000).toFixed(1)} s`);
  if (options.json) console.log(JSON.stringify(results.length === 1 ? figures(results[0]!) : results.map(figures)));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
