/**
 * A seeded generator of hostile requests for the gateway's input boundary, and a sender that fires them over
 * real HTTP. Every request it makes must be refused (4xx, in the route's dialect) without reaching an
 * upstream or changing the ledger: each case starts from a valid request and applies at least one mutation
 * that makes it invalid (a broken path, body, number, type, header or credential). The same seed always
 * gives the same requests, so a failure is replayed with its seed and index.
 *
 * Used by test/e2e/fuzz.e2e.test.ts (a few hundred cases) and bench/fuzz.ts (`npm run bench:fuzz`, ≥ 10,000).
 */
import { Agent, request as httpRequest } from 'node:http';

/** mulberry32: a small, fast, deterministic PRNG; `next()` is uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One hostile request. Header values are latin-1 strings (what node:http can put on the wire). */
export interface HostileRequest {
  /** What was broken, e.g. `chat: max_tokens=1e15`. */
  readonly name: string;
  readonly method: string;
  /** The raw request target, sent as is (may hold malformed %-escapes). */
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: Buffer;
}

/** Credentials the generator may use: a caller key with every scope, and the local admin token. */
export interface HostileContext {
  readonly apiKey: string;
  readonly adminToken: string;
  /** The gateway's JSON depth limit; deep bodies are generated just above it and far above it. */
  readonly maxJsonDepth: number;
}

type Rand = () => number;
type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const int = (r: Rand, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));

/** Values of the wrong type or absurd size, for any field. */
const WRONG_VALUES: readonly Json[] = [
  null,
  true,
  -1,
  0,
  1.5,
  1e308,
  -1e308,
  2 ** 53 - 1,
  2 ** 53 + 2,
  '',
  '100',
  'x'.repeat(5000),
  [],
  [null],
  {},
  { nested: { deeper: [1, 2, 3] } },
];

const HUGE_NUMBERS: readonly Json[] = [1e15, 2 ** 53 - 1, 2 ** 53 + 2, 1e308, 1e21, 4_294_967_296, 262_145, -1, 0, 0.5, '1000', null, []];

/** Bodies a valid request is built from, per route. */
function chatBody(r: Rand): Record<string, Json> {
  return {
    model: pick(r, ['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4-5', 'mock/gpt-4o']),
    messages: [{ role: 'user', content: 'hello' }],
    ...(r() < 0.5 ? { max_tokens: int(r, 1, 200) } : {}),
    ...(r() < 0.3 ? { stream: r() < 0.5 } : {}),
  };
}
function messagesBody(r: Rand): Record<string, Json> {
  return {
    model: pick(r, ['claude-sonnet-4-5', 'claude-haiku-4-5', 'mock/claude-sonnet-4-5']),
    max_tokens: int(r, 1, 200),
    messages: [{ role: 'user', content: 'hello' }],
    ...(r() < 0.3 ? { stream: r() < 0.5 } : {}),
  };
}
function embeddingsBody(r: Rand): Record<string, Json> {
  return { model: 'text-embedding-3-small', input: pick(r, ['hello', ['a', 'b']]) };
}

/** Field mutations that make a valid body invalid, per route. Each returns the mutated body and a label. */
type Mutation = (r: Rand, body: Record<string, Json>) => string;

const COMMON_MUTATIONS: readonly Mutation[] = [
  (r, b) => {
    const v = pick(r, WRONG_VALUES.filter((x) => typeof x !== 'string' || x.length > 256 || x === ''));
    b.model = v;
    return `model=${label(v)}`;
  },
  (r, b) => {
    b.model = `no-such-model-${int(r, 0, 1e6)}${pick(r, ['', '/x', '\u0000', '\u202e', '%ff', '..'])}`;
    return 'unknown model';
  },
  (r, b) => {
    b.model = pick(r, ['x', 'openai/', '/gpt-4o', 'é'.repeat(10)]) + 'm'.repeat(int(r, 257, 3000));
    return 'over-long model name';
  },
  (_r, b) => {
    delete b.model;
    return 'no model';
  },
];

const CHAT_MUTATIONS: readonly Mutation[] = [
  ...COMMON_MUTATIONS,
  (r, b) => {
    const field = pick(r, ['max_tokens', 'max_completion_tokens']);
    // null is a valid "no cap" on chat routes.
    const v = pick(r, HUGE_NUMBERS.filter((x) => x !== null));
    b[field] = v;
    return `${field}=${label(v)}`;
  },
  (r, b) => {
    b.n = pick(r, [0, -3, 129, 1e9, 2.5, 'two', []]);
    return `n=${label(b.n)}`;
  },
  (r, b) => {
    const [field, v] = pick(r, [
      ['temperature', pick(r, [-0.1, 2.01, 1e308, '1', []])],
      ['top_p', pick(r, [-1, 1.01, 1e15, 'x'])],
      ['presence_penalty', pick(r, [-2.5, 3, 1e300])],
      ['frequency_penalty', pick(r, [-1e300, 9])],
      ['top_logprobs', pick(r, [-1, 21, 1e15, 0.5])],
      ['seed', pick(r, [1.5, 1e300, 'seed', 2 ** 53 + 2])],
    ] as [string, Json][]);
    b[field] = v;
    return `${field}=${label(v)}`;
  },
  (r, b) => {
    b.messages = pick(r, [[], 'hello', { role: 'user', content: 'hi' }, null, [null], [[]], ['hi'], 42]);
    return `messages=${label(b.messages)}`;
  },
  (r, b) => {
    b.messages = [{ role: pick(r, ['', 'root', 'USER', 'system\u0000', 1, null]), content: 'hi' }];
    return 'bad role';
  },
  (r, b) => {
    b.messages = [{ role: 'user', content: pick(r, [42, true, { text: 'x' }, [42], [{ text: 'no type' }]]) }];
    return 'bad content';
  },
  (r, b) => {
    b.stream = pick(r, ['yes', 1, [], {}]);
    return `stream=${label(b.stream)}`;
  },
  (r, b) => {
    b.stream_options = pick(r, [[], 'usage', 1, { include_usage: 'yes' }]);
    return 'bad stream_options';
  },
  (r, b) => {
    b.tools = pick(r, [{}, 'fn', [1], [{ function: {} }]]);
    return 'bad tools';
  },
];

const MESSAGES_MUTATIONS: readonly Mutation[] = [
  ...COMMON_MUTATIONS,
  (r, b) => {
    const v = pick(r, [...HUGE_NUMBERS, undefined as unknown as Json]);
    if (v === undefined) delete b.max_tokens;
    else b.max_tokens = v;
    return `max_tokens=${label(v)}`;
  },
  (r, b) => {
    b.messages = pick(r, [[], 'hello', {}, [{ role: 'system', content: 'x' }], [{ role: 'user' }], [{ role: 'user', content: 5 }]]);
    return 'bad messages';
  },
  (r, b) => {
    b.system = pick(r, [{}, 5, [5], [{ text: 'no type' }]]);
    return 'bad system';
  },
  (r, b) => {
    const [field, v] = pick(r, [
      ['temperature', pick(r, [-0.5, 1.5, 1e308])],
      ['top_p', pick(r, [2, -1])],
      ['top_k', pick(r, [-1, 1.5, 1e300])],
      ['stream', pick(r, ['true', 0])],
      ['tools', pick(r, [{}, ['x']])],
    ] as [string, Json][]);
    b[field] = v;
    return `${field}=${label(v)}`;
  },
];

const EMBEDDINGS_MUTATIONS: readonly Mutation[] = [
  ...COMMON_MUTATIONS,
  (r, b) => {
    b.input = pick(r, [[], [[]], [1.5], [2 ** 53 + 2], [[1e308]], 5, null, {}, [null], ['a', 1]]);
    return `input=${label(b.input)}`;
  },
  (r, b) => {
    b.dimensions = pick(r, [0, -1, 1e15, 65_537, 1.5, 'big']);
    return `dimensions=${label(b.dimensions)}`;
  },
  (r, b) => {
    b.encoding_format = pick(r, ['hex', 1, null]);
    return 'bad encoding_format';
  },
];

function label(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 24 ? `${s.slice(0, 21)}…` : s;
}

const BILLABLE = [
  { path: '/v1/chat/completions', body: chatBody, mutations: CHAT_MUTATIONS },
  { path: '/v1/messages', body: messagesBody, mutations: MESSAGES_MUTATIONS },
  { path: '/v1/embeddings', body: embeddingsBody, mutations: EMBEDDINGS_MUTATIONS },
] as const;

/** Broken %-escapes and over-long values for path parameters. */
function badParam(r: Rand): string {
  return pick(r, [
    '%',
    '%E0%A4%A',
    '%ff',
    '%c3%28',
    '%ED%A0%80',
    '%%',
    '%zz',
    'abc%',
    '%F0%9F%98',
    `${'k'.repeat(int(r, 257, 2000))}`,
    `${'%41'.repeat(int(r, 257, 1000))}`,
  ]);
}

/** Latin-1 header values that are not printable ASCII (node:http sends them as bytes 0x80–0xff). */
function oddHeaderValue(r: Rand): string {
  return pick(r, [
    '\u00e9\u00e8\u00ff',
    `2023-06-01\u00a0`,
    '\u00ff'.repeat(int(r, 1, 40)),
    'x'.repeat(int(r, 257, 4000)),
    `2023-06-01\t\u0080`,
  ]);
}

/** Bodies that are not a JSON object a route can read. */
function brokenBody(r: Rand, valid: string, ctx: HostileContext): { body: Buffer; name: string } {
  const kind = int(r, 0, 7);
  switch (kind) {
    case 0:
      return { body: Buffer.from(valid.slice(0, int(r, 0, valid.length - 1))), name: 'truncated JSON' };
    case 1:
      return { body: Buffer.from(pick(r, ['[]', '[{}]', '42', '"str"', 'null', 'true', '{}', ' ', '\n'])), name: 'not an object' };
    case 2: {
      const bytes = Buffer.from(valid);
      const at = int(r, 1, bytes.length - 2);
      const bad = Buffer.from(pick(r, [[0xff], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0x80]]));
      return { body: Buffer.concat([bytes.subarray(0, at), bad, bytes.subarray(at)]), name: 'invalid UTF-8' };
    }
    case 3: {
      const depth = r() < 0.5 ? ctx.maxJsonDepth + int(r, 1, 3) : int(r, 1_000, 20_000);
      const open = pick(r, ['[', '{"a":']);
      const close = open === '[' ? ']' : '}';
      return {
        body: Buffer.from(`${valid.slice(0, -1)},"deep":${open.repeat(depth)}1${close.repeat(depth)}}`),
        name: `JSON nested ${depth} deep`,
      };
    }
    case 4:
      return { body: Buffer.from(valid.replace(':', ':\u0000')), name: 'raw NUL byte' };
    case 5:
      return { body: Buffer.from(valid.replace(/"[^"]*"/, '"\\ud800')), name: 'broken escape' };
    case 6:
      return { body: Buffer.from(`${valid}${pick(r, ['}', ',', ' x', '{}'])}`), name: 'trailing garbage' };
    default:
      return { body: Buffer.from(`{"model": ${'1'.repeat(int(r, 400, 5000))}}`), name: 'absurd number literal' };
  }
}

/** `count` hostile requests from `seed`. */
export function* hostileRequests(seed: number, count: number, ctx: HostileContext): Generator<HostileRequest> {
  const r = seededRandom(seed);
  const json = { 'content-type': 'application/json' };
  const bearer = { authorization: `Bearer ${ctx.apiKey}` };
  const admin = { authorization: `Bearer ${ctx.adminToken}` };
  for (let i = 0; i < count; i++) {
    const family = r();
    if (family < 0.45) {
      // A billable route: a valid body with one to three mutations.
      const route = pick(r, BILLABLE);
      const body = route.body(r);
      const names: string[] = [];
      for (let m = int(r, 1, 3); m > 0; m--) names.push(pick(r, route.mutations)(r, body));
      yield { name: `${route.path}: ${names.join(', ')}`, method: 'POST', path: route.path, headers: { ...json, ...bearer }, body: Buffer.from(JSON.stringify(body)) };
    } else if (family < 0.65) {
      // A billable route: the body itself is broken.
      const route = pick(r, BILLABLE);
      const broken = brokenBody(r, JSON.stringify(route.body(r)), ctx);
      yield { name: `${route.path}: ${broken.name}`, method: 'POST', path: route.path, headers: { ...json, ...bearer }, body: broken.body };
    } else if (family < 0.72) {
      // A valid body with a header the gateway must refuse.
      const route = pick(r, BILLABLE);
      const valid = Buffer.from(JSON.stringify(route.body(r)));
      const k = int(r, 0, 3);
      if (k === 0) {
        yield { name: `${route.path}: multipart content type`, method: 'POST', path: route.path, headers: { ...bearer, 'content-type': 'multipart/form-data; boundary=x' }, body: valid };
      } else if (k === 1) {
        const charset = pick(r, ['utf-16', 'latin1', 'utf-32le', 'x-unknown']);
        yield { name: `${route.path}: charset=${charset}`, method: 'POST', path: route.path, headers: { ...bearer, 'content-type': `application/json; charset=${charset}` }, body: valid };
      } else if (k === 2) {
        const body = Buffer.from(JSON.stringify(messagesBody(r)));
        const header = pick(r, ['anthropic-version', 'anthropic-beta']);
        yield { name: `/v1/messages: odd ${header}`, method: 'POST', path: '/v1/messages', headers: { ...json, ...bearer, [header]: oddHeaderValue(r) }, body };
      } else {
        yield { name: `${route.path}: duplicate content types`, method: 'POST', path: route.path, headers: { ...bearer, 'content-type': 'application/json, multipart/mixed' }, body: valid };
      }
    } else if (family < 0.8) {
      // Credentials that are missing, malformed or not ours.
      const route = pick(r, BILLABLE);
      const auth = pick(r, [
        undefined,
        '',
        'Bearer',
        'Bearer ',
        `Bearer ${ctx.apiKey.slice(0, -1)}`,
        `Bearer ${ctx.apiKey}x`,
        `Basic ${ctx.apiKey}`,
        `Bearer sk-tg-${'A'.repeat(int(r, 1, 200))}`,
        `Bearer \u00e9\u00e9\u00e9`,
        `Bearer ${'x'.repeat(int(r, 1000, 8000))}`,
        `Bearer ey${'J'.repeat(40)}.e.e`,
      ]);
      const headers: Record<string, string> = { ...json, ...(auth === undefined ? {} : { authorization: auth }) };
      yield { name: `${route.path}: auth ${label(auth)}`, method: 'POST', path: route.path, headers, body: Buffer.from(JSON.stringify(route.body(r))) };
    } else if (family < 0.9) {
      // Paths: malformed escapes and over-long parameters, unknown routes, wrong methods.
      const k = int(r, 0, 6);
      const p = badParam(r);
      if (k === 0) yield { name: `GET /admin/keys/${label(p)}`, method: 'GET', path: `/admin/keys/${p}`, headers: r() < 0.5 ? admin : {} };
      else if (k === 1) yield { name: `GET /v1/agent/runs/${label(p)}`, method: 'GET', path: `/v1/agent/runs/${p}`, headers: bearer };
      else if (k === 2) yield { name: `${pick(r, ['GET', 'DELETE'])} /v1/byok/${label(p)}`, method: pick(r, ['GET', 'DELETE']), path: `/v1/byok/${p}`, headers: bearer };
      else if (k === 3) yield { name: `PUT /admin/budgets/${label(p)}/day`, method: 'PUT', path: `/admin/budgets/${p}/day`, headers: { ...json, ...admin }, body: Buffer.from('{"limitUsd":"1"}') };
      else if (k === 4) yield { name: `POST /admin/keys/${label(p)}/suspend`, method: 'POST', path: `/admin/keys/${p}/suspend`, headers: r() < 0.5 ? admin : {} };
      else if (k === 5) {
        const path = pick(r, ['/v1/nope', '/v1/chat/completions/x', '//v1/chat/completions', '/v1/%2e%2e/admin/keys', `/v1/${'a'.repeat(int(r, 10, 3000))}`, '/%00', '/v1/messages%00']);
        yield { name: `POST ${label(path)}`, method: 'POST', path, headers: { ...json, ...bearer }, body: Buffer.from(JSON.stringify(chatBody(r))) };
      } else {
        const route = pick(r, BILLABLE);
        yield { name: `wrong method on ${route.path}`, method: pick(r, ['GET', 'PUT', 'DELETE', 'PATCH']), path: route.path, headers: bearer };
      }
    } else if (family < 0.95) {
      // BYOK keys that must never be stored or sent upstream.
      const apiKey = pick(r, [
        'sk-\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9',
        'sk-abc\u0001defghijk',
        'sk-abc\ndefghijk',
        'sk-abc defghijk',
        'sk-\u0000\u0000\u0000\u0000\u0000\u0000',
        'sk-\u202eabcdefghij',
        'short',
        'k'.repeat(513),
        42,
        null,
        ['sk-abcdefghijk'],
        { key: 'sk-abcdefghijk' },
      ] as Json[]);
      const provider = pick(r, ['openai', 'anthropic']);
      yield { name: `PUT /v1/byok/${provider} apiKey=${label(apiKey)}`, method: 'PUT', path: `/v1/byok/${provider}`, headers: { ...json, ...bearer }, body: Buffer.from(JSON.stringify({ apiKey })) };
    } else {
      // Agent runs and admin bodies of the wrong shape.
      const k = int(r, 0, 2);
      if (k === 0) {
        const body = pick(r, [
          { instructions: '', model: 'gpt-4o' },
          { instructions: 'x', model: 'gpt-4o', input: 'not a list' },
          { instructions: 'x', model: 'gpt-4o', maxCostUsd: pick(r, [1e300, -1, 0, 'lots', 1e-9]) },
          { instructions: 'x', model: 'm'.repeat(300) },
          { instructions: 'x', model: 'no-such-model-9' },
          { instructions: 5, model: 'gpt-4o' },
        ] as Json[]);
        yield { name: `POST /v1/agent/runs ${label(body)}`, method: 'POST', path: '/v1/agent/runs', headers: { ...json, ...bearer }, body: Buffer.from(JSON.stringify(body)) };
      } else if (k === 1) {
        const body = pick(r, [{ limitUsd: 1e300 }, { limitUsd: -1 }, { limitUsd: 'x' }, { limitUsd: [] }, {}]);
        yield { name: `PUT /admin/budgets user:x/day ${label(body)}`, method: 'PUT', path: '/admin/budgets/user:fuzz/day', headers: { ...json, ...admin }, body: Buffer.from(JSON.stringify(body)) };
      } else {
        const body = pick(r, [{ userId: 5 }, { userId: 'u', rpm: 1e300 }, { userId: 'u', rpm: -1 }, { userId: 'u', scopes: 'ai:complete' }, { userId: 'u'.repeat(5000) }, {}]);
        yield { name: `POST /admin/keys ${label(body)}`, method: 'POST', path: '/admin/keys', headers: { ...json, ...admin }, body: Buffer.from(JSON.stringify(body)) };
      }
    }
  }
}

/** What one hostile request got back. */
export interface HostileOutcome {
  readonly request: HostileRequest;
  /** The status, or `hang` when no answer came within the sender's bound, or `error` when the socket failed. */
  readonly status: number | 'hang' | 'error';
  readonly body: string;
}

/**
 * Sends each request over real HTTP (a keep-alive agent, `concurrency` at a time) and collects the answers.
 * A request without an answer after `hangAfterMs` counts as a hang (a generous bound, not a speed target).
 */
export async function sendAll(
  baseUrl: string,
  requests: Iterable<HostileRequest>,
  options: { concurrency?: number; hangAfterMs?: number; onOutcome?: (o: HostileOutcome) => void } = {},
): Promise<HostileOutcome[]> {
  const url = new URL(baseUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency ?? 8 });
  const iterator = requests[Symbol.iterator]();
  const outcomes: HostileOutcome[] = [];
  const sendOne = (req: HostileRequest): Promise<HostileOutcome> =>
    new Promise((resolve) => {
      const r = httpRequest(
        {
          host: url.hostname,
          port: url.port,
          method: req.method,
          path: req.path,
          agent,
          headers: { ...req.headers, ...(req.body ? { 'content-length': String(req.body.length) } : {}) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ request: req, status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', () => resolve({ request: req, status: 'error', body: '' }));
        },
      );
      r.setTimeout(options.hangAfterMs ?? 60_000, () => {
        r.destroy();
        resolve({ request: req, status: 'hang', body: '' });
      });
      r.on('error', (err) => resolve({ request: req, status: 'error', body: err.message }));
      r.end(req.body);
    });
  const worker = async () => {
    for (let next = iterator.next(); !next.done; next = iterator.next()) {
      const outcome = await sendOne(next.value);
      outcomes.push(outcome);
      options.onOutcome?.(outcome);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency ?? 8 }, worker));
  agent.destroy();
  return outcomes;
}

/** True when `body` is an error in the dialect of `path` (Anthropic under /v1/messages, OpenAI elsewhere). */
export function isDialectError(path: string, body: string): boolean {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return false;
  }
  const p = parsed as { type?: unknown; error?: { type?: unknown; message?: unknown } };
  if (typeof p.error?.message !== 'string' || typeof p.error.type !== 'string') return false;
  return path.startsWith('/v1/messages') ? p.type === 'error' : p.type === undefined;
}

/** Counts of outcomes by status (`hang` and `error` included). */
export function histogram(outcomes: readonly HostileOutcome[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of outcomes) out[String(o.status)] = (out[String(o.status)] ?? 0) + 1;
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
}
