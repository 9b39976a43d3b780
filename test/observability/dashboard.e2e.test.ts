/**
 * The local dashboard and `admin report` against a real gateway: a scripted run of requests through the real
 * local server and DynamoDB Local (answered, failed upstream, and refused for a budget, a token-rate limit, a
 * revoked key and an unknown key), then the summary, the terminal report, the HTTP routes (admin token, cookie,
 * CSV) and the page in a real headless Chromium, with screenshots of the refusals card and the budgets.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext } from 'playwright-core';
import { formatReport, runReport } from '../../lambda/admin/report';
import { ManualClock } from '../../lambda/core/clock';
import { silentLogger } from '../../lambda/core/log';
import { formatUsd, humanUsd, usdToMicros } from '../../lambda/core/money';
import type { UsageRecord } from '../../lambda/core/types';
import { windowBounds } from '../../lambda/core/windows';
import { createDashboardRoutes } from '../../lambda/local/dashboard/routes';
import { createLocalServer } from '../../lambda/local/server';
import { buildSpendSummary, type GuardrailsView, type SpendSummary } from '../../lambda/observability/spend-summary';
import { type Harness, startHarness } from '../support/gateway-harness';
import { launchBrowser } from '../support/browser';
import { TEST_NOW } from '../support/clock';
import { countColour, decodePng, inkShare } from '../support/png';

/** Where the screenshots go (kept after the run, for people to look at). */
const SHOT_DIR = process.env.TOLLGATE_SCREENSHOT_DIR || join(tmpdir(), 'tollgate-dashboard-screenshots');
/** The dashboard's "refusing" red (page.ts --over). */
const RED = '#d13b3b';

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
    return [
      { id: 'al_1', at: since + 3_600_000, type: 'spend_warning', severity: 'warning', scope: 'user:alice', summary: 'user:alice used 80% of its day budget' },
      { id: 'ack_1', at: since + 7_200_000, type: 'circuit_reset', severity: 'warning', scope: 'user:alice', summary: 'Circuit for user:alice reset by ops: false alarm' },
    ];
  },
};

/** Every source the local server gives the dashboard (main.ts), over the harness's gateway. */
const allSources = () => ({
  usage: h.gateway.usage,
  ledger: h.gateway.ledger,
  keys: h.gateway.keys,
  defaults: h.config.defaults,
  refusals: h.gateway.refusals.store,
  guardrails,
});

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
  // Three keys that will be refused: a budget below any request, a token rate below any request, a revoked key.
  keys.dave = await h.createKey({ userId: 'dave', orgId: 'acme', name: 'dave-tiny-budget', budget: { window: 'day', limit: 1 } });
  keys.fay = await h.createKey({ userId: 'fay', orgId: 'globex', name: 'fay-small-tpm', tpm: 10 });
  keys.erin = await h.createKey({ userId: 'erin', orgId: 'globex', name: 'erin-old' });
  await h.gateway.keys.setStatus(keys.erin.keyId, { status: 'revoked', actor: 'operator', reason: 'left the team' });
  await h.gateway.ledger.setLimit('user:alice', 'day', usdToMicros('0.01'));
  await h.gateway.ledger.setLimit('platform', 'day', usdToMicros('100'));

  // The scripted run: 3 + 1 billed requests on two models, one upstream failure, one bad key, and three refusals.
  const statuses = [
    await chat(keys.alice!.raw, 'mock/gpt-4o-mini', 'Hello there, how are you today?'),
    await chat(keys.alice!.raw, 'mock/gpt-4o-mini', 'Tell me a short story about a lighthouse.'),
    await chat(keys.alice!.raw, 'mock/gpt-4o', 'Summarise the plot of Hamlet in one line.'),
    await chat(keys.bob!.raw, 'mock/gpt-4o', 'What is the capital of France?'),
    await chat(keys.bob!.raw, 'mock/gpt-4o-mini', 'tollgate:fail'),
    await chat('sk-tg-not-a-real-key-000000000000', 'mock/gpt-4o-mini', 'Hi'),
    await chat(keys.dave.raw, 'mock/gpt-4o-mini', 'Hi'),
    await chat(keys.fay.raw, 'mock/gpt-4o-mini', 'Tell me about the history of lighthouses, please. '.repeat(8)),
    await chat(keys.erin.raw, 'mock/gpt-4o-mini', 'Hi'),
  ];
  expect(statuses).toEqual([200, 200, 200, 200, 502, 401, 429, 429, 401]);
  await h.settled();
  records = (await h.scan('usage')) as unknown as typeof records;
  expect(records).toHaveLength(5);

  dashboardServer = createLocalServer({
    app: h.gateway.app,
    maxBodyBytes: h.config.maxBodyBytes,
    log: silentLogger,
    extraRoutes: createDashboardRoutes({ adminToken: ADMIN_TOKEN, ...allSources(), clock, log: silentLogger }),
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
    summary = await buildSpendSummary(allSources(), { range: 'today', now: clock.now() });
  });

  it('when the scripted run is summarised, the totals are the sums of the usage records, upstream errors apart from refusals', () => {
    expect(summary.totals).toEqual({
      requests: 5,
      failed: 1,
      upstreamErrors: 1,
      inputTokens: records.reduce((s, r) => s + r.inputTokens, 0),
      outputTokens: records.reduce((s, r) => s + r.outputTokens, 0),
      cachedInputTokens: 0,
      costMicros: sumCost(records),
    });
    expect(summary.totals.costMicros).toBeGreaterThan(0);
    expect(summary.refusals?.total).toBe(4);
  });

  it('when requests were refused, each is counted by reason, scope and key, with names for the keys', () => {
    const r = summary.refusals!;
    expect(Object.fromEntries(r.byReason.map((x) => [x.reason, x.count]))).toEqual({ budget: 1, rate_tpm: 1, key_revoked: 1, invalid_key: 1 });
    expect(Object.fromEntries(r.byScope.map((x) => [x.scope, x.count]))).toEqual({
      [`key:${keys.dave!.keyId}`]: 1,
      [`key:${keys.fay!.keyId}`]: 1,
      [`key:${keys.erin!.keyId}`]: 1,
      '-': 1,
    });
    expect(r.topKeys.find((k) => k.keyId === keys.erin!.keyId)).toMatchObject({ label: 'erin-old · erin (globex) [revoked]', count: 1, reasons: { key_revoked: 1 } });
    expect(r.topKeys.find((k) => k.keyId === '-')).toMatchObject({ label: 'unknown key', reasons: { invalid_key: 1 } });
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
    expect(summary.topKeys.find((k) => k.name === keys.bob!.keyId)).toMatchObject({ userId: 'bob', keyName: 'bob-key', keyStatus: 'active', requests: 2, failed: 1, upstreamErrors: 1 });
    expect(summary.byOrgModel.map((g) => [g.orgId, g.model, g.costMicros]).sort()).toEqual(
      [
        ['acme', 'mock/gpt-4o', sumCost(records.filter((r) => r.orgId === 'acme' && r.model === 'mock/gpt-4o'))],
        ['acme', 'mock/gpt-4o-mini', sumCost(records.filter((r) => r.orgId === 'acme' && r.model === 'mock/gpt-4o-mini'))],
        ['-', 'mock/gpt-4o', sumCost(records.filter((r) => !r.orgId && r.model === 'mock/gpt-4o'))],
        ['-', 'mock/gpt-4o-mini', sumCost(records.filter((r) => !r.orgId && r.model === 'mock/gpt-4o-mini'))],
      ].sort(),
    );
  });

  it('when spend is bucketed by hour, the buckets cover the day and add up to the total', () => {
    expect(summary.overTime).toHaveLength(24);
    expect(summary.overTime[0]!.start).toBe(new Date(windowBounds('day', clock.now()).start).toISOString());
    expect(summary.overTime.reduce((s, b) => s + b.costMicros, 0)).toBe(summary.totals.costMicros);
    const hour = new Date(clock.now()).getUTCHours();
    expect(summary.overTime[hour]!.requests).toBe(5);
  });

  it('when budgets are in force, every one is listed, defaults included, named, and refusing ones first', () => {
    const alice = sumCost(records.filter((r) => r.userId === 'alice'));
    const row = (scope: string, window: string) => summary.budgets.find((b) => b.scope === scope && b.window === window);
    expect(row('user:alice', 'day')).toMatchObject({ label: 'user alice (acme)', source: 'set', limitMicros: 10_000, spentMicros: alice });
    expect(row('user:alice', 'day')!.utilisation).toBeCloseTo(alice / 10_000, 10);
    expect(row('platform', 'day')).toMatchObject({ source: 'set', limitMicros: 100_000_000, spentMicros: sumCost(records) });
    // Defaults: $100 a month per key, $10 a day per user, none of them set by anyone.
    expect(row(`key:${keys.alice!.keyId}`, 'month')).toMatchObject({ label: 'key alice-key · alice (acme)', source: 'default', limitMicros: 100_000_000 });
    expect(row('user:fay', 'day')).toMatchObject({ label: 'user fay (globex)', source: 'default', limitMicros: 10_000_000, state: 'ok' });
    // dave's key budget refused a request minutes ago: refusing, though nothing was spent; its month budget is not.
    expect(row(`key:${keys.dave!.keyId}`, 'day')).toMatchObject({ source: 'set', limitMicros: 1, state: 'refusing', refusingBecause: 'refused recently' });
    expect(row(`key:${keys.dave!.keyId}`, 'month')).toMatchObject({ source: 'default', state: 'ok' });
    // bob's circuit is open (the guardrails source): his budget is refusing although far from its limit.
    expect(row('user:bob', 'day')).toMatchObject({ state: 'refusing', refusingBecause: 'circuit open' });
    // A revoked key's budgets are hidden and counted.
    expect(summary.budgets.some((b) => b.scope === `key:${keys.erin!.keyId}`)).toBe(false);
    expect(summary.revokedKeysHidden).toBe(1);
    const states = summary.budgets.map((b) => b.state);
    expect(states).toEqual([...states].sort((a, b) => ['refusing', 'near', 'ok'].indexOf(a) - ['refusing', 'near', 'ok'].indexOf(b)));
    for (const b of summary.budgets) {
      if (b.refusingBecause === 'limit reached') expect(b.spentMicros + b.reservedMicros).toBeGreaterThanOrEqual(b.limitMicros);
      if (b.state === 'near') expect(b.utilisation).toBeGreaterThanOrEqual(0.8);
    }
  });

  it('when a team is chosen, only its usage, refusals and budgets are summarised', async () => {
    const globex = await buildSpendSummary(allSources(), { range: 'today', org: 'globex', now: clock.now() });
    expect(globex.org).toBe('globex');
    expect(globex.orgs).toEqual(['acme', 'globex']);
    expect(globex.totals.requests).toBe(0);
    expect(globex.refusals!.total).toBe(2);
    expect(globex.budgets.map((b) => b.scope).sort()).toEqual([`key:${keys.fay!.keyId}`, 'user:fay']);
    expect(globex.revokedKeysHidden).toBe(1);
    const acme = await buildSpendSummary(allSources(), { range: 'today', org: 'acme', now: clock.now() });
    expect(acme.totals.costMicros).toBe(sumCost(records.filter((r) => r.orgId === 'acme')));
    expect(acme.refusals!.byReason.map((x) => x.reason)).toEqual(['budget']);
    expect(acme.budgets.some((b) => b.scope === 'platform' || b.scope === 'user:bob')).toBe(false);
  });

  it('when yesterday or the last 7 days are asked for, the range and its buckets follow', async () => {
    const yesterday = await buildSpendSummary(allSources(), { range: 'yesterday', now: clock.now() });
    expect(yesterday.overTime).toHaveLength(24);
    expect(yesterday.totals.requests).toBe(0);
    expect(yesterday.refusals!.total).toBe(0);
    expect(yesterday.to).toBe(new Date(windowBounds('day', clock.now()).start).toISOString());
    const week = await buildSpendSummary(allSources(), { range: '7d', now: clock.now() });
    expect(week.overTime).toHaveLength(7);
    expect(week.overTime[6]!.requests).toBe(5);
    expect(week.totals.costMicros).toBe(sumCost(records));
    expect(week.refusals!.total).toBe(4);
  });

  it('when a guardrails source is given, open circuits and recent alerts are included, acknowledgements as such', () => {
    expect(summary.circuits?.map((c) => c.scope)).toEqual(['user:bob']);
    expect(summary.alerts?.map((a) => [a.id, a.kind])).toEqual([
      ['ack_1', 'acknowledgement'],
      ['al_1', 'alert'],
    ]);
  });
});

describe('admin report', () => {
  it('when the day report is printed, it shows the same totals, refusals, models, users and budgets as the summary', async () => {
    const out: string[] = [];
    const summary = await runReport(allSources(), { range: 'today', json: false, now: clock.now() }, (t) => out.push(t));
    const text = out.join('\n');
    expect(text).toBe(formatReport(summary));
    expect(text).toContain(`spend ${humanUsd(sumCost(records))} · 5 requests answered · 4 refused by the gateway · 1 upstream errors (20%)`);
    for (const model of ['mock/gpt-4o', 'mock/gpt-4o-mini']) {
      expect(text).toMatch(new RegExp(`${model.replace(/[/.]/g, '\\$&')}\\s+\\d+\\s+\\d+\\s+\\d+\\s+\\d+\\s+\\$${humanUsd(sumCost(records.filter((r) => r.model === model))).slice(1).replace('.', '\\.')}`));
    }
    expect(text).toMatch(/Refused by reason[^\n]*\n(?:.*\n)*\s+budget\s+1\s+budget exhausted/);
    expect(text).toMatch(new RegExp(`${keys.erin!.keyId}\\s+erin-old · erin \\(globex\\) \\[revoked\\]\\s+1\\s+key_revoked 1`));
    expect(text).toMatch(/user:alice\s+user alice \(acme\)\s+day\s+\$0\.01\s+set\s/);
    expect(text).toMatch(/user:bob\s+user bob\s+day\s+\$10\.00\s+default\s.*REFUSING \(circuit open\)/);
    expect(text).toContain('(1 revoked key not shown)');
    expect(text).toMatch(/acknowledged\s+user:alice\s+Circuit for user:alice reset by ops/);
    expect(text.split('\n').filter((l) => /^\s+\d\dh\s/.test(l))).toHaveLength(24);
    expectCliMoney(text);
    // Large amounts read as in the CLI's tables too (thousands separators, whole cents).
    expect(formatReport({ ...summary, totals: { ...summary.totals, costMicros: 1_234_567_891 } })).toContain('spend $1,234.57 ·');
  });

  it('when only usage and the ledger are given (the older sources), it prints explicit limits and no refusal section', async () => {
    const out: string[] = [];
    await runReport({ usage: h.gateway.usage, ledger: h.gateway.ledger }, { window: 'day', json: false, now: clock.now() }, (t) => out.push(t));
    const text = out.join('\n');
    expect(text).toContain('5 requests answered · 1 upstream errors');
    expect(text).not.toContain('Refused by reason');
    expect(text).not.toContain('default');
    expect(text).not.toContain('Open circuits');
  });

  it('when --json is asked for, it prints the summary with integer micro-USD', async () => {
    const out: string[] = [];
    await runReport(allSources(), { window: 'hour', json: true, now: clock.now() }, (t) => out.push(t));
    const parsed = JSON.parse(out.join('')) as SpendSummary;
    expect(parsed.window).toBe('hour');
    expect(parsed.range).toBe('hour');
    expect(parsed.overTime).toHaveLength(12);
    expect(parsed.totals.costMicros).toBe(sumCost(records));
    expect(Number.isInteger(parsed.totals.costMicros)).toBe(true);
    expect(parsed.refusals!.total).toBe(4);
  });
});

describe('dashboard routes', () => {
  it('when no token or cookie is sent, /dashboard answers 401 and shows no figures', async () => {
    const res = await fetch(`${dashboardUrl}/dashboard`);
    expect(res.status).toBe(401);
    expect(await res.text()).not.toContain(humanUsd(sumCost(records)));
    expect((await fetch(`${dashboardUrl}/dashboard/export.csv`)).status).toBe(401);
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
    const html = await page.text();
    expect(html).toContain(humanUsd(sumCost(records)));
    expectCliMoney(html);
  });

  it('when the admin token is sent as a Bearer header, the JSON summary is served, for a range and a team', async () => {
    const res = await fetch(`${dashboardUrl}/dashboard/summary.json`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    const all = (await res.json()) as SpendSummary;
    expect(all.totals.costMicros).toBe(sumCost(records));
    expect(all.refusals!.total).toBe(4);
    const globex = (await (await fetch(`${dashboardUrl}/dashboard/summary.json?range=7d&org=globex`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()) as SpendSummary;
    expect([globex.range, globex.org, globex.refusals!.total]).toEqual(['7d', 'globex', 2]);
  });

  it('when the CSV export is asked for, it is what the page shows, one row per figure, exact dollars', async () => {
    const res = await fetch(`${dashboardUrl}/dashboard/export.csv?range=today`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    expect(res.headers.get('content-disposition')).toMatch(/^attachment; filename="tollgate-today-\d{4}-\d\d-\d\d\.csv"$/);
    const lines = (await res.text()).trimEnd().split('\r\n');
    expect(lines[0]).toBe('section,name,detail,requests,upstream_errors,input_tokens,output_tokens,cost_usd,window,limit_usd,spent_usd,used_pct,state,refusals');
    const rows = lines.slice(1).map((l) => l.split(','));
    const totals = rows.find((r) => r[0] === 'totals')!;
    expect([totals[3], totals[4], totals[7], totals[13]]).toEqual(['5', '1', formatUsd(sumCost(records)), '4']);
    expect(rows.filter((r) => r[0] === 'over_time')).toHaveLength(24);
    expect(rows.filter((r) => r[0] === 'refusals_by_reason').map((r) => [r[1], r[13]]).sort()).toEqual([
      ['budget', '1'],
      ['invalid_key', '1'],
      ['key_revoked', '1'],
      ['rate_tpm', '1'],
    ]);
    expect(rows.find((r) => r[0] === 'budgets' && r[1] === 'user:bob')?.[12]).toBe('refusing: circuit open');
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
    mkdirSync(SHOT_DIR, { recursive: true });
    // Playwright's 30 s defaults judge the machine: a browser starting and rendering on a loaded 2-core box can
    // take longer. These bounds only catch a browser that never answers (inside jest's testTimeout).
    context = await launchBrowser(profile, { timeout: BROWSER_TIMEOUT_MS });
  });
  afterAll(async () => {
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
  });

  it('when an operator opens the dashboard link, the page loads without console errors and shows the run\'s figures, refusals and budgets', async () => {
    const page = await context.newPage();
    await page.setViewportSize({ width: 1366, height: 900 });
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
    expect(await text('total-cost')).toContain(humanUsd(sumCost(records)));
    expect(await text('total-requests')).toContain('5');
    expect(await text('refused-total')).toContain('4');
    expect(await text('upstream-errors')).toContain('1 (20%)');

    // Spend over time: one column per hour of the day, the current hour holding the whole run.
    const columns = page.locator('[data-testid="spend-over-time"] rect.col');
    expect(await columns.count()).toBe(24);
    const hour = new Date(clock.now()).getUTCHours();
    expect(await columns.nth(hour).locator('title').textContent()).toBe(
      `${String(hour).padStart(2, '0')}h: ${humanUsd(sumCost(records))}, 5 requests`,
    );
    expect(Number(await columns.nth(hour).getAttribute('height'))).toBeGreaterThan(0);

    const refusalsCard = await text('refusals-by-reason');
    expect(refusalsCard).toContain('Refused today by reason');
    for (const reason of ['budget', 'rate_tpm', 'key_revoked', 'invalid_key']) expect(refusalsCard).toContain(reason);
    expect(await page.locator('[data-testid="refusals-by-reason"] rect.bar.over').count()).toBe(4);
    const refusedKeys = await text('top-refused-keys');
    expect(refusedKeys).toContain('erin-old · erin (globex) [revoked]');
    expect(refusedKeys).toContain('1 · key_revoked 1');

    const modelChart = await text('cost-by-model');
    for (const model of ['mock/gpt-4o', 'mock/gpt-4o-mini']) {
      const rs = records.filter((r) => r.model === model);
      expect(modelChart).toContain(model);
      expect(modelChart).toContain(`${humanUsd(sumCost(rs))} · ${rs.length} req`);
    }
    expect(await text('team-models')).toContain('acme · mock/gpt-4o');
    const users = await text('top-users');
    expect(users).toContain(`${humanUsd(sumCost(records.filter((r) => r.userId === 'alice')))} · 3 req`);
    expect(users).toContain(`${humanUsd(sumCost(records.filter((r) => r.userId === 'bob')))} · 2 req`);
    expect(await text('top-keys')).toContain('bob-key · bob');

    const budgets = await text('budgets');
    expect(budgets).toContain('user alice (acme) (day)');
    expect(budgets).toContain('key alice-key · alice (acme) (month)');
    expect(budgets).toContain('of $100.00, default');
    expect(budgets).toContain('refusing (circuit open)');
    expect(budgets).not.toContain('erin-old');
    expect(await text('revoked-hidden')).toBe('1 revoked key not shown.');
    const red = page.locator('[data-testid="budgets"] rect.bar.over');
    expect(await red.count()).toBeGreaterThanOrEqual(1);
    expect(await red.first().locator('title').textContent()).toContain('refusing');
    expect(await text('circuits')).toContain('user:bob');
    expect(await text('alerts')).toContain('user:alice used 80% of its day budget');
    expect(await page.locator('[data-testid="alerts"] li[data-kind="acknowledgement"]').innerText()).toContain('acknowledged user:alice');

    // One type size: an axis label of the wide chart and a bar label of a half-width chart render alike.
    const heights = await page.evaluate(() => {
      const h = (sel: string) => (document.querySelector(sel) as SVGGraphicsElement).getBoundingClientRect().height;
      return { axis: h('[data-testid="spend-over-time"] text.axis'), label: h('[data-testid="cost-by-model"] text.label') };
    });
    expect(heights.axis / heights.label).toBeGreaterThan(0.85);
    expect(heights.axis / heights.label).toBeLessThan(1.18);
    // A card is as tall as its content, not stretched to its row's tallest neighbour (one circuit, two alerts).
    const circuitsBox = await page.getByTestId('circuits').boundingBox();
    const alertsBox = await page.getByTestId('alerts').boundingBox();
    expect(circuitsBox!.y).toBe(alertsBox!.y);
    expect(circuitsBox!.height).toBeLessThan(alertsBox!.height);

    // Screenshots of the refusals card and the budgets, checked for ink and for the red of "refusing".
    const shots: Record<string, Buffer> = {
      refusals: await page.getByTestId('refusals-by-reason').screenshot(),
      budgets: await page.getByTestId('budgets').screenshot(),
      page: await page.screenshot({ fullPage: true }),
    };
    for (const [name, png] of Object.entries(shots)) {
      writeFileSync(join(SHOT_DIR, `dashboard-${name}.png`), png);
      const image = decodePng(png);
      expect(image.width).toBeGreaterThan(300);
      expect(inkShare(image)).toBeGreaterThan(0.02);
    }
    expect(countColour(decodePng(shots.refusals!), RED)).toBeGreaterThan(200);
    expect(countColour(decodePng(shots.budgets!), RED)).toBeGreaterThan(100);

    expect(problems).toEqual([]);
    await page.close();
  });

  it('when the operator picks a team, a range and auto-refresh, the links carry them and the page follows', async () => {
    const page = await context.newPage();
    await page.setViewportSize({ width: 1366, height: 900 });
    await page.goto(`${dashboardUrl}/dashboard?token=${ADMIN_TOKEN}`, { waitUntil: 'load' });
    await page.getByTestId('org-nav').getByRole('link', { name: 'globex' }).click();
    await page.waitForURL(/org=globex/);
    expect(await page.getByTestId('period').innerText()).toContain('team globex');
    expect(await page.getByTestId('refused-total').innerText()).toContain('2');
    expect(await page.getByTestId('total-requests').innerText()).toContain('0');
    writeFileSync(join(SHOT_DIR, 'dashboard-team-globex.png'), await page.screenshot({ fullPage: true }));

    await page.getByTestId('range-nav').getByRole('link', { name: 'last 7 days' }).click();
    await page.waitForURL(/range=7d/);
    expect(page.url()).toContain('org=globex');
    expect(await page.locator('[data-testid="spend-over-time"] rect.col').count()).toBe(0); // no usage for globex: empty message
    expect(await page.getByTestId('spend-over-time').innerText()).toContain('No requests last 7 days.');

    const csv = await page.request.get(await page.getByTestId('csv-export').getAttribute('href').then((h) => `${dashboardUrl}${h}`));
    expect(csv.status()).toBe(200);
    expect((await csv.text()).split('\r\n')[1]).toMatch(/^totals,last 7 days .*,team globex,0,0,0,0,0\.000000,,,,,,2$/);

    await page.getByTestId('refresh-nav').getByRole('link', { name: '30 s' }).click();
    await page.waitForURL(/refresh=30/);
    expect(await page.locator('meta[http-equiv="refresh"]').getAttribute('content')).toBe('30');
    expect(await page.getByTestId('range-nav').getByRole('link', { name: 'today' }).getAttribute('href')).toBe('/dashboard?range=today&org=globex&refresh=30');
    await page.close();
  });
});

/**
 * Every amount of money in `text` is written as the CLI's tables write it (humanUsd: `$1,234.57`, exact under a
 * cent, `$0.00`): reading each back and formatting it again gives the same text.
 */
function expectCliMoney(text: string): void {
  const amounts = text.match(/-?\$[\d,]+(?:\.\d+)?/g) ?? [];
  expect(amounts.length).toBeGreaterThan(3);
  for (const a of amounts) {
    const micros = Math.round(Number(a.replace(/[$,]/g, '')) * 1_000_000);
    expect(humanUsd(micros)).toBe(a);
  }
}
