/**
 * Operator-defined routing: aliases (`tollgate/cheap` → a configured model) and rules that send a class of
 * request (by requested model, prompt size, tool use) to a list of models tried in order (fallback), with an
 * optional cheaper model for callers past a budget tier (downgrade). Configured once: `TOLLGATE_ROUTES` (JSON)
 * for the local server, `gateway.routes` in the deployment config for CDK (passed to the Lambda as the same
 * variable). The first rule that matches wins; a request no rule matches goes to the model it named.
 *
 *   { "rules": [
 *       { "name": "cheap", "alias": "tollgate/cheap", "models": ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"] },
 *       { "name": "short-chat", "match": { "models": ["openai/gpt-4o"], "maxInputTokens": 400, "tools": false },
 *         "models": ["openai/gpt-4o-mini", "openai/gpt-4o"] },
 *       { "name": "gpt-4o", "match": { "models": ["openai/gpt-4o"] }, "models": ["openai/gpt-4o", "anthropic/claude-sonnet-4-6"],
 *         "downgrade": { "atPercent": 80, "model": "openai/gpt-4o-mini" } } ] }
 */

/** Which requests a rule takes. Every condition given must hold. */
export interface RouteMatch {
  /** Requested model names (as the caller wrote them). @default any model */
  readonly models?: readonly string[];
  /** Only requests whose estimated input is at most this many tokens. */
  readonly maxInputTokens?: number;
  /** `false`: only requests without tools; `true`: only requests with tools. @default either */
  readonly tools?: boolean;
}

/** The API surfaces a rule may be limited to (`endpoints`), each a caller's dialect. */
export const ROUTE_ENDPOINTS = ['/v1/chat/completions', '/v1/messages', '/v1/responses', '/v1/embeddings'] as const;
export type RouteEndpoint = (typeof ROUTE_ENDPOINTS)[number];
/** The surfaces a chain without `endpoints` is checked for: the ones that generate (embeddings chains are rare). */
const CHAT_ENDPOINTS: readonly RouteEndpoint[] = ['/v1/chat/completions', '/v1/messages', '/v1/responses'];

export interface RoutingRule {
  readonly name: string;
  /** A model name callers may send that only this rule serves (e.g. `tollgate/cheap`). */
  readonly alias?: string;
  readonly match?: RouteMatch;
  /** Only requests to these surfaces (e.g. `["/v1/chat/completions"]`). @default every surface */
  readonly endpoints?: readonly RouteEndpoint[];
  /** Models tried in order: the first serves, each next one after a provider 5xx, timeout or unavailability. */
  readonly models: readonly string[];
  /**
   * When any of the caller's limited budget windows is at or past `atPercent` of its limit (or the first
   * model's reservation is refused for budget), serve with `model` instead of refusing.
   */
  readonly downgrade?: { readonly atPercent: number; readonly model: string };
}

export interface RoutingSettings {
  readonly rules: readonly RoutingRule[];
}

export const NO_ROUTING: RoutingSettings = { rules: [] };

/** What routing decided for one request. */
export interface RoutePlan {
  /** The rule that matched; absent when none did. */
  readonly rule?: string;
  readonly models: readonly string[];
  readonly downgrade?: { readonly atPercent: number; readonly model: string };
}

/** The request facts rules are matched on. */
export interface RouteRequest {
  /** The surface the request came to (`/v1/messages`, …), for rules limited by `endpoints`. */
  readonly endpoint?: string;
  readonly model: string;
  readonly inputTokens: number;
  readonly hasTools: boolean;
}

/** The plan for one request. */
export function planRoute(settings: RoutingSettings, request: RouteRequest): RoutePlan {
  for (const rule of settings.rules) {
    if (!ruleMatches(rule, request)) continue;
    return { rule: rule.name, models: rule.models, ...(rule.downgrade ? { downgrade: rule.downgrade } : {}) };
  }
  return { models: [request.model] };
}

function ruleMatches(rule: RoutingRule, r: RouteRequest): boolean {
  if (rule.endpoints && r.endpoint !== undefined && !(rule.endpoints as readonly string[]).includes(r.endpoint)) return false;
  if (rule.alias !== undefined) return rule.alias === r.model;
  const m = rule.match ?? {};
  if (m.models && !m.models.includes(r.model)) return false;
  if (m.maxInputTokens !== undefined && r.inputTokens > m.maxInputTokens) return false;
  if (m.tools !== undefined && m.tools !== r.hasTools) return false;
  return true;
}

/** Reads and checks the rules' JSON; throws a RangeError naming the bad field. */
export function parseRoutingRules(raw: string | undefined): RoutingSettings {
  if (raw === undefined || raw.trim() === '') return NO_ROUTING;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new RangeError('is not valid JSON');
  }
  const rulesRaw = (parsed as { rules?: unknown } | null)?.rules;
  if (!Array.isArray(rulesRaw)) throw new RangeError('must be an object {"rules": [...]}');
  const names = new Set<string>();
  const aliases = new Set<string>();
  const rules = rulesRaw.map((r: unknown, i): RoutingRule => {
    const at = `rules[${i}]`;
    if (typeof r !== 'object' || r === null) throw new RangeError(`${at} must be an object`);
    const o = r as Record<string, unknown>;
    const name = typeof o.name === 'string' && o.name !== '' ? o.name : `rule-${i + 1}`;
    if (names.has(name)) throw new RangeError(`${at}.name "${name}" is used twice`);
    names.add(name);
    const models = o.models;
    if (!Array.isArray(models) || models.length === 0 || !models.every((m) => typeof m === 'string' && m.includes('/'))) {
      throw new RangeError(`${at}.models must be a non-empty list of "provider/model" names`);
    }
    if (o.alias !== undefined && o.match !== undefined) throw new RangeError(`${at} has both alias and match; use one`);
    if (o.alias === undefined && o.match === undefined) throw new RangeError(`${at} needs an alias or a match`);
    let alias: string | undefined;
    if (o.alias !== undefined) {
      if (typeof o.alias !== 'string' || !o.alias.includes('/')) throw new RangeError(`${at}.alias must be a "prefix/name" model name`);
      if (aliases.has(o.alias)) throw new RangeError(`${at}.alias "${o.alias}" is used twice`);
      aliases.add(o.alias);
      alias = o.alias;
    }
    let match: RouteMatch | undefined;
    if (o.match !== undefined) {
      const m = o.match as Record<string, unknown>;
      if (typeof m !== 'object' || m === null) throw new RangeError(`${at}.match must be an object`);
      if (m.models !== undefined && (!Array.isArray(m.models) || !m.models.every((x) => typeof x === 'string'))) {
        throw new RangeError(`${at}.match.models must be a list of model names`);
      }
      if (m.maxInputTokens !== undefined && (!Number.isInteger(m.maxInputTokens) || (m.maxInputTokens as number) < 0)) {
        throw new RangeError(`${at}.match.maxInputTokens must be a whole number`);
      }
      if (m.tools !== undefined && typeof m.tools !== 'boolean') throw new RangeError(`${at}.match.tools must be true or false`);
      match = {
        ...(m.models ? { models: m.models as string[] } : {}),
        ...(m.maxInputTokens !== undefined ? { maxInputTokens: m.maxInputTokens as number } : {}),
        ...(m.tools !== undefined ? { tools: m.tools as boolean } : {}),
      };
    }
    let endpoints: RouteEndpoint[] | undefined;
    if (o.endpoints !== undefined) {
      const e = o.endpoints;
      if (!Array.isArray(e) || e.length === 0 || !e.every((x) => (ROUTE_ENDPOINTS as readonly unknown[]).includes(x))) {
        throw new RangeError(`${at}.endpoints must be a non-empty list of ${ROUTE_ENDPOINTS.join(', ')}`);
      }
      endpoints = e as RouteEndpoint[];
    }
    let downgrade: RoutingRule['downgrade'];
    if (o.downgrade !== undefined) {
      const d = o.downgrade as Record<string, unknown>;
      const pct = d?.atPercent;
      if (typeof pct !== 'number' || !(pct > 0 && pct <= 100)) throw new RangeError(`${at}.downgrade.atPercent must be a number from 1 to 100`);
      if (typeof d.model !== 'string' || !d.model.includes('/')) throw new RangeError(`${at}.downgrade.model must be a "provider/model" name`);
      downgrade = { atPercent: pct, model: d.model };
    }
    return {
      name,
      ...(alias ? { alias } : {}),
      ...(match ? { match } : {}),
      ...(endpoints ? { endpoints } : {}),
      models: models as string[],
      ...(downgrade ? { downgrade } : {}),
    };
  });
  return { rules };
}

/**
 * Whether `model` can answer requests to `endpoint` on this gateway: `undefined` when the model is unknown here
 * (its requests are refused on their own).
 */
export type ServesEndpoint = (model: string, endpoint: RouteEndpoint) => boolean | undefined;

/**
 * Refuses, at start, a chain that would answer a caller in a dialect its fallback cannot speak: every model of a
 * rule (its fallbacks and its downgrade model) must serve each surface the rule takes requests from — the rule's
 * `endpoints`, else every generating surface its first model serves. Without this, a `/v1/messages` caller whose
 * Claude model failed would get a 400 "cannot be used with /v1/messages" for the fallback, its own fault in
 * appearance. Throws a RangeError naming each rule, surface and model; nothing when the chains are sound.
 */
export function checkRouteDialects(settings: RoutingSettings, serves: ServesEndpoint): void {
  const problems: string[] = [];
  for (const rule of settings.rules) {
    const [first, ...rest] = rule.models;
    const others = [...rest, ...(rule.downgrade ? [rule.downgrade.model] : [])];
    const surfaces = rule.endpoints ?? CHAT_ENDPOINTS.filter((e) => serves(first!, e) === true);
    const chain = rule.endpoints ? rule.models.concat(rule.downgrade ? [rule.downgrade.model] : []) : others;
    for (const endpoint of surfaces) {
      const cannot = [...new Set(chain)].filter((m) => serves(m, endpoint) === false);
      if (cannot.length === 0) continue;
      problems.push(
        `rule "${rule.name}" takes ${endpoint} requests (${rule.endpoints ? 'its endpoints' : `${first} serves them`}), but ` +
          `${cannot.join(', ')} cannot answer ${endpoint}`,
      );
    }
  }
  if (problems.length === 0) return;
  throw new RangeError(
    `routing: a fallback must answer in the caller's dialect; ${problems.join('; ')}. Use models that serve that ` +
      `surface, or limit the rule with "endpoints" (e.g. ["/v1/chat/completions", "/v1/responses"]).`,
  );
}
