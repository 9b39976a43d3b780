/**
 * The providers' own billing reports, each read for one UTC day and turned into micro-USD per model:
 *
 *   OpenAI     GET {base}/organization/costs?start_time&end_time&bucket_width=1d&group_by=line_item (admin key)
 *              results[].amount.value in USD, line_item "gpt-4o-mini-2024-07-18, input"
 *   Anthropic  GET {base}/v1/organizations/cost_report?starting_at&ending_at&group_by[]=description (admin key)
 *              results[].amount a decimal string in cents, results[].model
 *   Bedrock    Cost Explorer GetCostAndUsage, DAILY UnblendedCost grouped by SERVICE; every service whose name
 *              says Bedrock counts, as one provider-wide line (model `*`): Cost Explorer does not name models
 *
 * Pages are followed (`next_page` / `NextPageToken`), bounded in count. A failed call is a {@link BillingReportError}
 * naming the provider and status, never the key.
 */
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsCredentialIdentity, Provider } from '@aws-sdk/types';
import { TollgateError } from '../errors';
import type { MicroUsd } from '../money';

/** A provider's billing report could not be read. */
export class BillingReportError extends TollgateError {
  readonly status = 502;
  readonly kind = 'upstream' as const;
}

/** One provider's billed cost for one day, by normalized model name. */
export interface BillingReport {
  readonly provider: string;
  dailyCost(day: string): Promise<Map<string, MicroUsd>>;
}

const MAX_PAGES = 50;

/** A model name as both sides can agree on it: no provider prefix, date or version suffix, lower case. */
export function normalizeModel(name: string): string {
  return name
    .trim()
    .toLowerCase()
    .replace(/^[a-z0-9-]+\//, '')
    .replace(/-v\d+(:\d+)?$/, '')
    .replace(/-\d{4}-\d{2}-\d{2}$/, '')
    .replace(/-\d{8}$/, '');
}

export function dayBounds(day: string): { start: Date; end: Date } {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day) || Number.isNaN(Date.parse(`${day}T00:00:00Z`))) throw new RangeError(`"${day}" is not a YYYY-MM-DD day`);
  const start = new Date(`${day}T00:00:00Z`);
  return { start, end: new Date(start.getTime() + 86_400_000) };
}

const add = (m: Map<string, MicroUsd>, model: string, micros: MicroUsd) => m.set(model, (m.get(model) ?? 0) + micros);

async function getJson(provider: string, url: string, headers: Record<string, string>, fetchFn: typeof fetch): Promise<unknown> {
  let res: Response;
  try {
    res = await fetchFn(url, { headers, signal: AbortSignal.timeout(30_000) });
  } catch (err) {
    throw new BillingReportError(`${provider} billing report unreachable`, { cause: err });
  }
  if (!res.ok) {
    await res.text().catch(() => '');
    throw new BillingReportError(`${provider} billing report answered ${res.status}`, { code: 'billing_report_failed' });
  }
  return res.json();
}

/** The pages of a cursor-paged report (`has_more` / `next_page`), at most MAX_PAGES of them. */
async function* pagesOf<T extends { readonly has_more?: boolean; readonly next_page?: string | null }>(
  fetchPage: (page: string | undefined) => Promise<T>,
): AsyncGenerator<T> {
  let page: string | undefined;
  for (let n = 0; n < MAX_PAGES; n++) {
    const body = await fetchPage(page);
    yield body;
    if (!body.has_more || !body.next_page) return;
    page = body.next_page;
  }
}

export interface HttpReportOptions {
  readonly baseUrl: string;
  readonly adminKey: string;
  readonly fetch?: typeof fetch;
}

/** OpenAI's organization costs API. */
export class OpenAiCostReport implements BillingReport {
  readonly provider = 'openai';
  constructor(private readonly o: HttpReportOptions) {}

  async dailyCost(day: string): Promise<Map<string, MicroUsd>> {
    const { start, end } = dayBounds(day);
    const out = new Map<string, MicroUsd>();
    const fetchPage = async (page: string | undefined) => {
      const q = new URLSearchParams({ start_time: String(start.getTime() / 1000), end_time: String(end.getTime() / 1000), bucket_width: '1d', group_by: 'line_item', limit: '31' });
      if (page) q.set('page', page);
      return (await getJson('openai', `${this.o.baseUrl}/organization/costs?${q}`, { authorization: `Bearer ${this.o.adminKey}` }, this.o.fetch ?? fetch)) as {
        data?: Array<{ start_time: number; results?: Array<{ amount?: { value?: number; currency?: string }; line_item?: string | null }> }>;
        has_more?: boolean;
        next_page?: string | null;
      };
    };
    for await (const body of pagesOf(fetchPage)) {
      for (const bucket of body.data ?? []) {
        if (bucket.start_time * 1000 < start.getTime() || bucket.start_time * 1000 >= end.getTime()) continue;
        for (const r of bucket.results ?? []) {
          const value = r.amount?.value;
          if (typeof value !== 'number') continue;
          add(out, normalizeModel((r.line_item ?? 'unattributed').split(',')[0]!), Math.round(value * 1_000_000));
        }
      }
    }
    return out;
  }
}

/** Anthropic's cost report API (admin key, `sk-ant-admin…`). */
export class AnthropicCostReport implements BillingReport {
  readonly provider = 'anthropic';
  constructor(private readonly o: HttpReportOptions) {}

  async dailyCost(day: string): Promise<Map<string, MicroUsd>> {
    const { start, end } = dayBounds(day);
    const out = new Map<string, MicroUsd>();
    const fetchPage = async (page: string | undefined) => {
      const q = new URLSearchParams({ starting_at: start.toISOString(), ending_at: end.toISOString(), bucket_width: '1d' });
      q.append('group_by[]', 'description');
      if (page) q.set('page', page);
      return (await getJson(
        'anthropic',
        `${this.o.baseUrl}/v1/organizations/cost_report?${q}`,
        { 'x-api-key': this.o.adminKey, 'anthropic-version': '2023-06-01' },
        this.o.fetch ?? fetch,
      )) as { data?: Array<{ starting_at: string; results?: Array<{ amount?: string; currency?: string; model?: string | null; description?: string | null }> }>; has_more?: boolean; next_page?: string | null };
    };
    for await (const body of pagesOf(fetchPage)) {
      for (const bucket of body.data ?? []) {
        const at = Date.parse(bucket.starting_at);
        if (at < start.getTime() || at >= end.getTime()) continue;
        for (const r of bucket.results ?? []) {
          const cents = Number(r.amount);
          if (!Number.isFinite(cents)) continue;
          // Cents as a decimal string: 1 cent = 10_000 µ$.
          add(out, normalizeModel(r.model ?? r.description ?? 'unattributed'), Math.round(cents * 10_000));
        }
      }
    }
    return out;
  }
}

export interface CostExplorerReportOptions {
  /** @default https://ce.us-east-1.amazonaws.com (Cost Explorer's one endpoint) */
  readonly endpoint?: string;
  readonly credentials: AwsCredentialIdentity | Provider<AwsCredentialIdentity>;
  readonly fetch?: typeof fetch;
}

/** Bedrock spend from Cost Explorer's GetCostAndUsage (a signed JSON call; one line per provider: `*`). */
export class BedrockCostExplorerReport implements BillingReport {
  readonly provider = 'bedrock';
  private readonly endpoint: string;
  private readonly signer: SignatureV4;
  constructor(private readonly o: CostExplorerReportOptions) {
    this.endpoint = (o.endpoint ?? 'https://ce.us-east-1.amazonaws.com').replace(/\/+$/, '');
    this.signer = new SignatureV4({ service: 'ce', region: 'us-east-1', credentials: o.credentials, sha256: Sha256 });
  }

  async dailyCost(day: string): Promise<Map<string, MicroUsd>> {
    const { start, end } = dayBounds(day);
    const out = new Map<string, MicroUsd>();
    const url = new URL(`${this.endpoint}/`);
    let token: string | undefined;
    for (let n = 0; n < MAX_PAGES; n++) {
      const body = JSON.stringify({
        TimePeriod: { Start: day, End: end.toISOString().slice(0, 10) },
        Granularity: 'DAILY',
        Metrics: ['UnblendedCost'],
        GroupBy: [{ Type: 'DIMENSION', Key: 'SERVICE' }],
        ...(token ? { NextPageToken: token } : {}),
      });
      const signed = await this.signer.sign({
        method: 'POST',
        protocol: url.protocol,
        hostname: url.hostname,
        ...(url.port ? { port: Number(url.port) } : {}),
        path: '/',
        headers: { host: url.host, 'content-type': 'application/x-amz-json-1.1', 'x-amz-target': 'AWSInsightsIndexService.GetCostAndUsage' },
        body,
      });
      let res: Response;
      try {
        res = await (this.o.fetch ?? fetch)(url, { method: 'POST', headers: signed.headers as Record<string, string>, body, signal: AbortSignal.timeout(30_000) });
      } catch (err) {
        throw new BillingReportError('Cost Explorer unreachable', { cause: err });
      }
      if (!res.ok) {
        await res.text().catch(() => '');
        throw new BillingReportError(`Cost Explorer answered ${res.status}`, { code: 'billing_report_failed' });
      }
      const parsed = (await res.json()) as {
        ResultsByTime?: Array<{ TimePeriod?: { Start?: string }; Groups?: Array<{ Keys?: string[]; Metrics?: { UnblendedCost?: { Amount?: string } } }> }>;
        NextPageToken?: string;
      };
      for (const period of parsed.ResultsByTime ?? []) {
        if (period.TimePeriod?.Start !== day) continue;
        for (const g of period.Groups ?? []) {
          if (!(g.Keys?.[0] ?? '').includes('Bedrock')) continue;
          const amount = Number(g.Metrics?.UnblendedCost?.Amount);
          if (Number.isFinite(amount)) add(out, '*', Math.round(amount * 1_000_000));
        }
      }
      if (!parsed.NextPageToken) break;
      token = parsed.NextPageToken;
    }
    if (start.getTime() > end.getTime()) throw new RangeError('empty day');
    return out;
  }
}
