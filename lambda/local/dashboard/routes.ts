/**
 * `/dashboard` on the local gateway, behind the local admin token (`adminToken` in `.tollgate/running.json`):
 *
 *   GET /dashboard?token=T        a valid token sets an HttpOnly session cookie and redirects to /dashboard
 *                                 (so the token leaves the address bar and the history)
 *   GET /dashboard                with the cookie or `Authorization: Bearer T`: the page
 *   GET /dashboard/summary.json   the same figures as JSON (micro-USD integers)
 *   GET /dashboard/export.csv     the same figures as CSV (lambda/observability/summary-csv.ts)
 *
 * Each takes `?range=hour|today|yesterday|7d|month` (the older `?window=hour|day|month` still works) and
 * `?org=<team>`; the page also takes `?refresh=<seconds>` (auto-refresh, 5 … 3600).
 *
 * The cookie holds an HMAC of the token, never the token itself. Anything else under /dashboard is 404;
 * other paths fall through to the gateway.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../../core/clock';
import type { Logger } from '../../core/log';
import type { HttpRequest, HttpResponse } from '../../http/types';
import { buildSpendSummary, type SummarySources, summaryRange } from '../../observability/spend-summary';
import { summaryCsv } from '../../observability/summary-csv';
import { escapeHtml } from './charts';
import { renderDashboard } from './page';

export const DASHBOARD_PATH = '/dashboard';
const COOKIE = 'tollgate_dashboard';

export interface DashboardOptions extends SummarySources {
  /** The local admin token. */
  readonly adminToken: string;
  readonly clock: Clock;
  readonly log: Logger;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function cookieOf(req: HttpRequest, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

const SECURITY_HEADERS = {
  'cache-control': 'no-store',
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
};

function page(status: number, title: string, text: string): HttpResponse {
  const nonce = randomBytes(16).toString('base64');
  return {
    status,
    headers: {
      ...SECURITY_HEADERS,
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': `default-src 'none'; style-src 'nonce-${nonce}'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    },
    body: `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title><link rel="icon" href="data:,"><style nonce="${nonce}">body{font:15px system-ui,sans-serif;margin:48px}</style></head><body><h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p></body></html>`,
  };
}

/**
 * The dashboard's routes, for `createLocalServer({ extraRoutes })`: answers requests under /dashboard and
 * returns undefined for everything else.
 */
export function createDashboardRoutes(options: DashboardOptions): (req: HttpRequest) => Promise<HttpResponse | undefined> {
  const session = createHmac('sha256', options.adminToken).update('tollgate local dashboard session').digest('base64url');
  const authorized = (req: HttpRequest): boolean => {
    const auth = req.headers.authorization;
    if (auth?.startsWith('Bearer ') && sameSecret(auth.slice(7).trim(), options.adminToken)) return true;
    const cookie = cookieOf(req, COOKIE);
    return cookie !== undefined && sameSecret(cookie, session);
  };

  return async (req) => {
    if (req.path !== DASHBOARD_PATH && !req.path.startsWith(`${DASHBOARD_PATH}/`)) return undefined;
    if (req.method !== 'GET' && req.method !== 'HEAD') return page(405, 'Method not allowed', 'The dashboard only answers GET.');

    const token = req.query.get('token');
    if (token !== null) {
      if (!sameSecret(token, options.adminToken)) return page(401, 'Wrong dashboard token', 'Use the link printed by npm start, or adminToken from .tollgate/running.json.');
      const rest = new URLSearchParams(req.query);
      rest.delete('token');
      const query = rest.toString();
      return {
        status: 303,
        headers: {
          ...SECURITY_HEADERS,
          location: `${req.path}${query ? `?${query}` : ''}`,
          'set-cookie': `${COOKIE}=${session}; Path=${DASHBOARD_PATH}; HttpOnly; SameSite=Strict`,
        },
        body: '',
      };
    }
    if (!authorized(req)) {
      return page(401, 'Sign in to the dashboard', 'Open the dashboard link printed by npm start (it carries the local admin token), or send Authorization: Bearer <adminToken>.');
    }

    const wantsJson = req.path === `${DASHBOARD_PATH}/summary.json`;
    const wantsCsv = req.path === `${DASHBOARD_PATH}/export.csv`;
    if (req.path !== DASHBOARD_PATH && !wantsJson && !wantsCsv) return page(404, 'Not found', `Nothing at ${req.path}.`);
    const range = summaryRange(req.query.get('range'), req.query.get('window'));
    const org = req.query.get('org')?.trim() || undefined;
    const refresh = Number(req.query.get('refresh'));
    let summary;
    try {
      summary = await buildSpendSummary(options, { range, ...(org ? { org } : {}), now: options.clock.now() });
    } catch (err) {
      options.log.log('error', 'dashboard summary failed', { error: err instanceof Error ? err.message : String(err) });
      return page(503, 'The store is not answering', 'The dashboard could not read the tables; is DynamoDB Local running?');
    }
    if (wantsJson) {
      return { status: 200, headers: { ...SECURITY_HEADERS, 'content-type': 'application/json' }, body: JSON.stringify(summary) };
    }
    if (wantsCsv) {
      const file = `tollgate-${range}-${summary.from.slice(0, 10)}${org ? `-${org.replace(/[^\w.-]/g, '_')}` : ''}.csv`;
      return {
        status: 200,
        headers: { ...SECURITY_HEADERS, 'content-type': 'text/csv; charset=utf-8', 'content-disposition': `attachment; filename="${file}"` },
        body: summaryCsv(summary),
      };
    }
    const nonce = randomBytes(16).toString('base64');
    return {
      status: 200,
      headers: {
        ...SECURITY_HEADERS,
        'content-type': 'text/html; charset=utf-8',
        'content-security-policy': `default-src 'none'; style-src 'nonce-${nonce}'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
      },
      body: renderDashboard(summary, { nonce, ...(Number.isInteger(refresh) && refresh >= 5 && refresh <= 3600 ? { refreshSeconds: refresh } : {}) }),
    };
  };
}
