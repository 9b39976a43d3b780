/**
 * Billing reconciliation against fake report servers on real HTTP that answer like OpenAI's organization costs
 * API, Anthropic's cost report API and Cost Explorer's GetCostAndUsage; the ledger's side is written by real
 * requests through the local gateway; DynamoDB Local underneath.
 */
import { Metrics } from '@aws-lambda-powertools/metrics';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { ManualClock } from '../../lambda/core/clock';
import { jsonLogger } from '../../lambda/core/log';
import { normalizeModel } from '../../lambda/core/reconcile/reports';
import { runReconcile } from '../../lambda/handlers/reconcile';
import { DynamoDbDriftStore } from '../../lambda/store/dynamodb/reconcile-store';
import { type Harness, startHarness } from '../support/gateway-harness';

jest.setTimeout(90_000);

const T0 = Date.UTC(2031, 5, 10, 10, 30, 0);
const DAY = '2031-06-10';
const OPENAI_ADMIN = 'sk-admin-openai-RECONCILE-SECRET';
const ANTHROPIC_ADMIN = 'sk-ant-admin01-RECONCILE-SECRET';

interface Seen {
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

/** Billed amounts the fake reports answer with, set per test. */
const billed = { openai: new Map<string, number>(), anthropicCents: new Map<string, string>(), bedrockUsd: '0', failOpenai: false };
const seen: Seen[] = [];
let reports: Server;
let reportsUrl: string;
let h: Harness;

beforeAll(async () => {
  reports = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      seen.push({ path: url.pathname, query: url.searchParams, headers: req.headers, body });
      const json = (status: number, value: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(value));
      };
      const start = Math.floor(Date.parse(`${DAY}T00:00:00Z`) / 1000);
      if (url.pathname === '/v1/organization/costs') {
        if (req.headers.authorization !== `Bearer ${OPENAI_ADMIN}` || billed.failOpenai) return json(401, { error: { message: 'Invalid admin key', type: 'invalid_request_error' } });
        // Two pages: one line item each, as the API pages through results.
        const items = [...billed.openai.entries()];
        const page = url.searchParams.get('page') === 'p2' ? 1 : 0;
        const [line, usd] = items[page] ?? ['gpt-4o-2024-08-06, output', 0];
        return json(200, {
          object: 'page',
          data: [{ object: 'bucket', start_time: start, end_time: start + 86_400, results: [{ object: 'organization.costs.result', amount: { value: usd, currency: 'usd' }, line_item: line, project_id: null }] }],
          has_more: page === 0 && items.length > 1,
          next_page: page === 0 && items.length > 1 ? 'p2' : null,
        });
      }
      if (url.pathname === '/v1/organizations/cost_report') {
        if (req.headers['x-api-key'] !== ANTHROPIC_ADMIN) return json(401, { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key' } });
        return json(200, {
          data: [
            {
              starting_at: `${DAY}T00:00:00Z`,
              ending_at: new Date((start + 86_400) * 1000).toISOString().replace('.000', ''),
              results: [...billed.anthropicCents.entries()].map(([model, amount]) => ({
                currency: 'USD', amount, workspace_id: null, description: `${model} Usage - Input Tokens`, cost_type: 'tokens', context_window: '0-200k', model, service_tier: 'standard', token_type: 'uncached_input_tokens',
              })),
            },
          ],
          has_more: false,
          next_page: null,
        });
      }
      if (req.method === 'POST' && req.headers['x-amz-target'] === 'AWSInsightsIndexService.GetCostAndUsage') {
        if (!String(req.headers.authorization).startsWith('AWS4-HMAC-SHA256 Credential=AKIDRECONCILE/')) return json(403, { __type: 'AccessDeniedException' });
        return json(200, {
          GroupDefinitions: [{ Type: 'DIMENSION', Key: 'SERVICE' }],
          ResultsByTime: [
            {
              TimePeriod: { Start: DAY, End: '2031-06-11' },
              Total: {},
              Groups: [
                { Keys: ['Claude 3.5 Sonnet (Amazon Bedrock Edition)'], Metrics: { UnblendedCost: { Amount: billed.bedrockUsd, Unit: 'USD' } } },
                { Keys: ['Amazon DynamoDB'], Metrics: { UnblendedCost: { Amount: '3.5', Unit: 'USD' } } },
              ],
              Estimated: true,
            },
          ],
          DimensionValueAttributes: [],
        });
      }
      json(404, { message: 'not found' });
    });
  });
  await new Promise<void>((r) => reports.listen(0, '127.0.0.1', () => r()));
  reportsUrl = `http://127.0.0.1:${(reports.address() as AddressInfo).port}`;
  h = await startHarness({ clock: new ManualClock(T0) });
  // The ledger's side of the day: real requests through the gateway.
  // An explicitly unlimited token rate: the scripted 110k-token day would otherwise meet the default 100k tpm.
  const openaiKey = await h.createKey({ userId: 'recon-1', tpm: 0 });
  h.upstream.script({ usage: { inputTokens: 100_000, outputTokens: 10_000 } });
  await new OpenAI({ apiKey: openaiKey.raw, baseURL: h.baseURL, maxRetries: 0 }).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
  await new Anthropic({ apiKey: openaiKey.raw, baseURL: h.url, maxRetries: 0 }).messages.create({ model: 'claude-sonnet-4-6', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] });
  await h.settled();
});
afterAll(async () => {
  await h.close();
  await new Promise<void>((r) => reports.close(() => r()));
});

async function reconcile() {
  const config = {
    ...h.config,
    reconcile: { openaiAdminBaseUrl: `${reportsUrl}/v1`, anthropicAdminBaseUrl: reportsUrl, costExplorerEndpoint: reportsUrl, bedrock: true, alarmDriftMicros: 1_000_000 },
  };
  const lines: string[] = [];
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  const logs: string[] = [];
  try {
    const result = await runReconcile(DAY, {
      config,
      dynamodb: h.tables.client,
      secrets: { get: async (name) => ({ 'openai-admin-key': OPENAI_ADMIN, 'anthropic-admin-key': ANTHROPIC_ADMIN })[name] },
      now: T0 + 86_400_000,
      log: jsonLogger({ sink: (l) => logs.push(l) }),
      metrics: new Metrics({ namespace: 'Tollgate', serviceName: 'tollgate-reconcile' }),
      awsCredentials: { accessKeyId: 'AKIDRECONCILE', secretAccessKey: 'not-a-real-secret' },
    });
    const emf = lines.join('').split('\n').filter((l) => l.includes('"_aws"')).map((l) => JSON.parse(l) as Record<string, unknown>);
    return { result, emf, logs };
  } finally {
    spy.mockRestore();
  }
}

describe('billing reconciliation', () => {
  it('when the providers billed what the ledger recorded, every row has zero drift and no alarm', async () => {
    const usage = (await h.scan('usage')).filter((r) => r.outcome === 'ok');
    const cost = (model: string) => Number(usage.find((r) => r.model === model)!.costMicros);
    billed.openai = new Map([['gpt-4o-2024-08-06, input', cost('openai/gpt-4o') / 1e6]]);
    billed.anthropicCents = new Map([['claude-sonnet-4-6', String(cost('anthropic/claude-sonnet-4-6') / 10_000)]]);
    billed.bedrockUsd = '0';
    const { result, emf } = await reconcile();
    expect(result.failed).toEqual([]);
    expect(result.rows.map((r) => [r.provider, r.model, r.driftMicros, r.alarm])).toEqual([
      ['anthropic', 'claude-sonnet-4-6', 0, false],
      ['bedrock', '*', 0, false],
      ['openai', 'gpt-4o', 0, false],
    ]);
    expect(emf.map((e) => [e.Provider, e.BillingDriftUsd])).toEqual(expect.arrayContaining([['openai', 0], ['anthropic', 0], ['bedrock', 0]]));
  });

  it('when a provider billed more than the ledger, the drift is stored per day, provider and model, published, and alarms past the threshold', async () => {
    const usage = (await h.scan('usage')).filter((r) => r.outcome === 'ok');
    const openaiCost = Number(usage.find((r) => r.model === 'openai/gpt-4o')!.costMicros);
    billed.openai = new Map([
      ['gpt-4o-2024-08-06, input', openaiCost / 1e6 + 2.5],
      ['gpt-4o-mini-2024-07-18, output', 0.25],
    ]);
    billed.bedrockUsd = '1.75';
    const { result, emf, logs } = await reconcile();
    const row = (p: string, m: string) => result.rows.find((r) => r.provider === p && r.model === m);
    expect(row('openai', 'gpt-4o')).toMatchObject({ driftMicros: 2_500_000, alarm: true });
    expect(row('openai', 'gpt-4o-mini')).toMatchObject({ ledgerMicros: 0, billedMicros: 250_000, driftMicros: 250_000, alarm: false });
    expect(row('bedrock', '*')).toMatchObject({ billedMicros: 1_750_000, driftMicros: 1_750_000, alarm: true });
    const stored = await new DynamoDbDriftStore(h.tables.client, { table: h.tables.tables.reconcile }).list(DAY);
    expect(stored.find((r) => r.provider === 'openai' && r.model === 'gpt-4o')?.driftMicros).toBe(2_500_000);
    expect(emf.find((e) => e.Provider === 'openai')?.BillingDriftUsd).toBeCloseTo(2.75, 6);
    expect(logs.filter((l) => l.includes('billing drift past threshold'))).toHaveLength(2);
    // Both pages of the OpenAI report were read, with the admin key, grouped by line item.
    const costCalls = seen.filter((s) => s.path === '/v1/organization/costs');
    expect(costCalls.some((s) => s.query.get('page') === 'p2')).toBe(true);
    expect(costCalls.every((s) => s.query.get('group_by') === 'line_item' && s.query.get('bucket_width') === '1d')).toBe(true);
    expect(seen.find((s) => s.path === '/v1/organizations/cost_report')?.query.getAll('group_by[]')).toEqual(['description']);
    expect(JSON.parse(seen.find((s) => s.body.includes('UnblendedCost'))!.body)).toMatchObject({ TimePeriod: { Start: DAY, End: '2031-06-11' }, Granularity: 'DAILY' });
  });

  it('when a provider report cannot be read, its rows are missing (not zero), the others are reconciled, and no key is logged', async () => {
    billed.failOpenai = true;
    try {
      const { result, logs } = await reconcile();
      expect(result.failed).toEqual([{ provider: 'openai', error: 'openai billing report answered 401' }]);
      expect(result.rows.some((r) => r.provider === 'openai')).toBe(false);
      expect(result.rows.some((r) => r.provider === 'anthropic')).toBe(true);
      expect(logs.join('\n')).not.toContain('RECONCILE-SECRET');
    } finally {
      billed.failOpenai = false;
    }
  });

  it('when model names carry dates or versions, both sides agree on one name', () => {
    expect(normalizeModel('gpt-4o-mini-2024-07-18')).toBe('gpt-4o-mini');
    expect(normalizeModel('openai/gpt-4o')).toBe('gpt-4o');
    expect(normalizeModel('claude-3-5-haiku-20241022')).toBe('claude-3-5-haiku');
    expect(normalizeModel('anthropic.claude-3-haiku-20240307-v1:0')).toBe('anthropic.claude-3-haiku');
  });
});
