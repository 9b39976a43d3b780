/**
 * The local dashboard and `admin report` against a real gateway: a scripted run of requests through the real
 * local server and DynamoDB Local, then the summary, the terminal report, the HTTP routes (admin token,
 * cookie) and the page in a real headless Chromium.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext } from 'playwright-core';
import { formatReport, runReport } from '../../lambda/admin/report';
import { ManualClock } from '../../lambda/core/clock';
import { silentLogger } from '../../lambda/core/log';
import { displayUsd, usdToMicros } from '../../lambda/core/money';
import type { UsageRecord } from '../../lambda/core/types';
import { windowBounds } from '../../lambda/core/windows';
import { createDashboardRoutes } from '../../lambda/local/dashboard/routes';
import { createLocalServer } from '../../lambda/local/server';
import { buildSpendSummary, type GuardrailsView, type SpendSummary } from '../../lambda/observability/spend-summary';
import { type Harness, startHarness } from '../support/gateway-harness';
import { launchBrowser } from '../support/browser';
import { TEST_NOW } from '../support/clock';

const ADMIN_TOKEN = 'tga-test-admin-token-0123456789abcdef';
const BROWSER_TIMEOUT_MS = 240_000;

let h: Harness;
let dashboardServer: Server;
let dashboardUrl: string;
/** The usage table's items, read raw (flat: tokens are top-level attributes). */
let records: (UsageRecord & { inputTokens: number; outputTokens: number })[];
const keys: Record<string, { raw: string; keyId: string }> = {};

/** A guardrails source with one open circuit and one alert (the guardrails store has the same shape). */
const guardrails: GuardrailsView = {
  async listCircuits(now) {
    return [{ scope: 'user:bob', cause: 'breaker', reason: 'hourly budget reached', openedAt: now - 60_000, closesAt: now + 600_000 }];
  },
  async listAlerts(since) {
    return [{ id: 'al_1', at: since + 3_600_000, type: 'spend_warning', severity: 'warning', scope: 'user:alice', summary: 'user:alice used 80% of its day budget' }];
  },
};

async function chat(key: string, model: string, content: string): Promise<number> {
  const res = await fetch(`${h.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, max_tokens: 64, messages: [{ role: 'user', content }] }),
  });
  await res.arrayBuffer();
  return res.status;
}

function sumCost(rs: readonly UsageRecord[]): number {
  return rs.reduce((s, r) => s + r.costMicros, 0);
}

/**
 * One fixed instant for the gateway, the summary, the report and the page, in the middle of an hour: a run
 * straddling an hour (or midnight) would otherwise split across windows and the figures would not add up.
 */
const clock = new ManualClock(TEST_NOW);

beforeAll(async () => {
  h = await startHarness({ clock });
  keys.alice = await h.createKey({ userId: 'alice', orgId: 'acme', name: 'alice-key' });
  keys.bob = await h.createKey({ userId: 'bob', name: 'bob-key' });
  await h.gateway.ledger.setLimit('user:alice', 'day', usdToMicros('0.01'));
  await h.gateway.ledger.setLimit('platform', 'day', usdToMicros('100'));

  // The scripted run: 3 + 1 billed requests on two models, one upstream failure, one bad key.
  const statuses = [
    await chat(keys.alice!.raw, 'mock/gpt-4o-mini', 'Hello there, how are you today?'),
    await chat(keys.alice!.raw, 'mock/gpt-4o-mini', 'Tell me a short story about a lighthouse.'),
    await chat(keys.alice!.raw, 'mock/gpt-4o', 'Summarise the plot of Hamlet in one line.'),
    await chat(keys.bob!.raw, 'mock/gpt-4o', 'What is the capital of France?'),
    await chat(keys.bob!.raw, 'mock/gpt-4o-mini', 'tollgate:fail'),
    await chat('sk-tg-not-a-real-key-000000000000', 'mock/gpt-4o-mini', 'Hi'),
  ];
  expect(statuses).toEqual([200, 200, 200, 200, 502, 401]);
  await h.settled();
  records = (await h.scan('usage')) as unknown as typeof records;
  expect(records).toHaveLength(5);

  dashboardServer = createLocalServer({
    app: h.gateway.app,
    maxBodyBytes: h.config.maxBodyBytes,
    log: silentLogger,
    extraRoutes: createDashboardRoutes({ adminToken: ADMIN_TOKEN, usage: h.gateway.usage, ledger: h.gateway.ledger, guardrails, clock, log: silentLogger }),
  });
  await new Promise<void>((resolve) => dashboardServer.listen(0, '127.0.0.1', () => resolve()));
  dashboardUrl = `http://127.0.0.1:${(dashboardServer.address() as AddressInfo).port}`;
});

afterAll(async () => {
  dashboardServer?.closeAllConnections();
  await new Promise<void>((resolve) => (dashboardServer ? dashboardServer.close(() => resolve()) : resolve()));
  await h?.close();
});

describe('spend summary', () => {
  let summary: SpendSummary;
  beforeAll(async () => {
    summary = await buildSpendSummary({ usage: h.gateway.usage, ledger: h.gateway.ledger, guardrails }, { window: 'day', now: clock.now() });
  });

  it('when the scripted run is summarised, the totals are the sums of the usage records', () => {
    expect(summary.totals).toEqual({
      requests: 5,
      failed: 1,
      inputTokens: records.reduce((s, r) => s + r.inputTokens, 0),
      outputTokens: records.reduce((s, r) => s + r.outputTokens, 0),
      cachedInputTokens: 0,
      costMicros: sumCost(records),
    });
    expect(summary.totals.costMicros).toBeGreaterThan(0);
  });

  it('when the run is grouped, cost by model and the top users and keys match the records, most expensive first', () => {
    const byModel = Object.fromEntries(summary.byModel.map((g) => [g.name, g.costMicros]));
    expect(byModel).toEqual({
      'mock/gpt-4o': sumCost(records.filter((r) => r.model === 'mock/gpt-4o')),
      'mock/gpt-4o-mini': sumCost(records.filter((r) => r.model === 'mock/gpt-4o-mini')),
    });
    expect(summary.byModel[0]!.costMicros).toBeGreaterThanOrEqual(summary.byModel[1]!.costMicros);
    expect(summary.topUsers.map((u) => [u.name, u.requests, u.costMicros])).toEqual(
      ['alice', 'bob']
        .map((u) => [u, records.filter((r) => r.userId === u).length, sumCost(records.filter((r) => r.userId === u))] as const)
        .sort((a, b) => b[2] - a[2]),
    );
    expect(summary.topKeys.find((k) => k.name === keys.bob!.keyId)).toMatchObject({ userId: 'bob', requests: 2, failed: 1 });
  });

  it('when spend is bucketed by hour, the buckets cover the day and add up to the total', () => {
    expect(summary.overTime).toHaveLength(24);
    expect(summary.overTime[0]!.start).toBe(new Date(windowBounds('day', clock.now()).start).toISOString());
    expect(summary.overTime.reduce((s, b) => s + b.costMicros, 0)).toBe(summary.totals.costMicros);
    const hour = new Date(clock.now()).getUTCHours();
    expect(summary.overTime[hour]!.requests).toBe(5);
  });

  it('when budgets have day limits, utilisation is spent over limit, fullest first', () => {
    const alice = sumCost(records.filter((r) => r.userId === 'alice'));
    expect(summary.budgets.map((b) => [b.scope, b.limitMicros, b.spentMicros])).toEqual([
      ['user:alice', 10_000, alice],
      ['platform', 100_000_000, sumCost(records)],
    ]);
    expect(summary.budgets[0]!.utilisation).toBeCloseTo(alice / 10_000, 10);
  });

  it('when a guardrails source is given, open circuits and recent alerts are included', () => {
    expect(summary.circuits?.map((c) => c.scope)).toEqual(['user:bob']);
    expect(summary.alerts?.map((a) => a.id)).toEqual(['al_1']);
  });
});

describe('admin report', () => {
  it('when the day report is printed, it shows the same totals, models, users and budgets as the summary', async () => {
    const out: string[] = [];
    const summary = await runReport({ usage: h.gateway.usage, ledger: h.gateway.ledger }, { window: 'day', json: false, now: clock.now() }, (t) => out.push(t));
    const text = out.join('\n');
    expect(text).toBe(formatReport(summary));
    expect(text).toContain(`spend ${displayUsd(sumCost(records))} · 5 requests (1 failed, 20%)`);
    for (const model of ['mock/gpt-4o', 'mock/gpt-4o-mini']) {
      expect(text).toMatch(new RegExp(`${model.replace(/[/.]/g, '\\$&')}\\s+\\d+\\s+\\d+\\s+\\d+\\s+\\d+\\s+\\$${displayUsd(sumCost(records.filter((r) => r.model === model))).slice(1).replace('.', '\\.')}`));
    }
    expect(text).toMatch(/user:alice\s+day\s+\$0\.01\s/);
    expect(text.split('\n').filter((l) => /^\s+\d\dh\s/.test(l))).toHaveLength(24);
    expect(text).not.toContain('Open circuits'); // no guardrails source given
  });

  it('when --json is asked for, it prints the summary with integer micro-USD', async () => {
    const out: string[] = [];
    await runReport({ usage: h.gateway.usage, ledger: h.gateway.ledger }, { window: 'hour', json: true, now: clock.now() }, (t) => out.push(t));
    const parsed = JSON.parse(out.join('')) as SpendSummary;
    expect(parsed.window).toBe('hour');
    expect(parsed.overTime).toHaveLength(12);
    expect(parsed.totals.costMicros).toBe(sumCost(records));
    expect(Number.isInteger(parsed.totals.costMicros)).toBe(true);
  });
});

describe('dashboard routes', () => {
  it('when no token or cookie is sent, /dashboard answers 401 and shows no figures', async () => {
    const res = await fetch(`${dashboardUrl}/dashboard`);
    expect(res.status).toBe(401);
    expect(await res.text()).not.toContain(displayUsd(sumCost(records)));
  });

  it('when a wrong token is in the query, it answers 401 and sets no cookie', async () => {
    const res = await fetch(`${dashboardUrl}/dashboard?token=tga-wrong`, { redirect: 'manual' });
    expect(res.status).toBe(401);
    expect(res.headers.get('set-cookie')).toBeNull();
  });

  it('when the admin token is in the query, it sets an HttpOnly cookie (not the token) and redirects without it', async () => {
    const res = await fetch(`${dashboardUrl}/dashboard?window=hour&token=${ADMIN_TOKEN}`, { redirect: 'manual' });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/dashboard?window=hour');
    const cookie = res.headers.get('set-cookie')!;
    expect(cookie).toMatch(/^tollgate_dashboard=[\w-]+; Path=\/dashboard; HttpOnly; SameSite=Strict$/);
    expect(cookie).not.toContain(ADMIN_TOKEN);
    const page = await fetch(`${dashboardUrl}/dashboard?window=hour`, { headers: { cookie: cookie.split(';')[0]! } });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain(displayUsd(sumCost(records)));
  });

  it('when the admin token is sent as a Bearer header, the JSON summary is served', async () => {
    const res = await fetch(`${dashboardUrl}/dashboard/summary.json`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as SpendSummary).totals.costMicros).toBe(sumCost(records));
  });

  it('when a gateway route is asked on the same server, the dashboard stays out of the way', async () => {
    const res = await fetch(`${dashboardUrl}/health`);
    expect(await res.json()).toEqual({ status: 'ok' });
  });
});

describe('dashboard in headless Chromium', () => {
  let context: BrowserContext;
  let profile: string;
  beforeAll(async () => {
    profile = mkdtempSync(join(tmpdir(), 'tollgate-chromium-'));
    // Playwright's 30 s defaults judge the machine: a browser starting and rendering on a loaded 2-core box can
    // take longer. These bounds only catch a browser that never answers (inside jest's testTimeout).
    context = await launchBrowser(profile, { timeout: BROWSER_TIMEOUT_MS });
  });
  afterAll(async () => {
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
  });

  it('when an operator opens the dashboard link, the page loads without console errors and shows the run\'s figures as charts', async () => {
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('console', (msg) => {
      if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`${msg.type()}: ${msg.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
    page.on('requestfailed', (req) => problems.push(`requestfailed: ${req.url()}`));
    page.on('response', (res) => {
      if (res.status() >= 400) problems.push(`${res.status()}: ${res.url()}`);
    });

    const response = await page.goto(`${dashboardUrl}/dashboard?token=${ADMIN_TOKEN}`, { waitUntil: 'load' });
    expect(response?.status()).toBe(200);
    expect(page.url()).toBe(`${dashboardUrl}/dashboard`);

    const text = (id: string) => page.getByTestId(id).innerText();
    expect(await text('total-cost')).toContain(displayUsd(sumCost(records)));
    expect(await text('total-requests')).toContain('5');
    expect(await text('error-rate')).toContain('1 (20%)');

    // Spend over time: one column per hour of the day, the current hour holding the whole run.
    const columns = page.locator('[data-testid="spend-over-time"] rect.col');
    expect(await columns.count()).toBe(24);
    const hour = new Date(clock.now()).getUTCHours();
    expect(await columns.nth(hour).locator('title').textContent()).toBe(
      `${String(hour).padStart(2, '0')}h: ${displayUsd(sumCost(records))}, 5 requests`,
    );
    expect(Number(await columns.nth(hour).getAttribute('height'))).toBeGreaterThan(0);

    const modelChart = await text('cost-by-model');
    for (const model of ['mock/gpt-4o', 'mock/gpt-4o-mini']) {
      const rs = records.filter((r) => r.model === model);
      expect(modelChart).toContain(model);
      expect(modelChart).toContain(`${displayUsd(sumCost(rs))} · ${rs.length} req`);
    }
    const users = await text('top-users');
    expect(users).toContain(`${displayUsd(sumCost(records.filter((r) => r.userId === 'alice')))} · 3 req`);
    expect(users).toContain(`${displayUsd(sumCost(records.filter((r) => r.userId === 'bob')))} · 2 req`);
    expect(await text('top-keys')).toContain(`${keys.bob!.keyId} (bob)`);

    const budgets = page.locator('[data-testid="budgets"] rect.bar');
    expect(await budgets.count()).toBe(2);
    expect(await text('budgets')).toContain('user:alice (day)');
    expect(await text('circuits')).toContain('user:bob');
    expect(await text('alerts')).toContain('user:alice used 80% of its day budget');

    expect(problems).toEqual([]);
    await page.close();
  });
});
