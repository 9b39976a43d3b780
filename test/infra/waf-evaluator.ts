/**
 * A small evaluator of the synthesized WebACL (CloudFormation shape), enough to say what WAF would do with a request:
 * it walks the rules in priority order and evaluates the statements tollgate uses (geo, rate, managed groups, label,
 * byte match on the path with NORMALIZE_PATH, and/or/not). A managed rule group is modelled by which of its
 * body-inspecting rules could match the body: {@link BODY_RULE_TRIGGERS} errs on the side of matching (any HTML tag is
 * XSS, any SQL keyword is SQLi, any URL is RFI), so "allowed" here means allowed whatever those rules decide.
 */
import * as path from 'node:path';

export interface WafRequest {
  readonly uriPath: string;
  readonly body: string;
  /** Request headers, names lower-case. */
  readonly headers?: Readonly<Record<string, string>>;
}

export type WafOutcome = { readonly action: 'ALLOW' } | { readonly action: 'BLOCK'; readonly rule: string; readonly managedRule?: string };

/** When a body-inspecting managed rule could match (deliberately broad). */
export const BODY_RULE_TRIGGERS: Readonly<Record<string, RegExp>> = {
  CrossSiteScripting_BODY: /<\s*\/?\s*[a-z!]|javascript:|on[a-z]+\s*=|&lt;/i,
  GenericLFI_BODY: /\.\.[\\/]|\/etc\/|\/proc\/|[a-z]:\\|~\//i,
  GenericRFI_BODY: /[a-z][a-z0-9+.-]*:\/\/|\d+\.\d+\.\d+\.\d+/i,
  EC2MetaDataSSRF_BODY: /169\.254\.169\.254|metadata|fd00:ec2/i,
  SizeRestrictions_BODY: /[\s\S]{8192}/,
  SQLi_BODY: /\b(select|insert|update|delete|drop|union|where|from|or|and|exec|sleep|having)\b|--|;|'/i,
  SQLiExtendedPatterns_BODY: /\b(select|union|drop|or|and)\b|--|'|\/\*/i,
  JavaDeserializationRCE_BODY: /rO0AB|aced0005|java\.lang/i,
  Log4JRCE_BODY: /\$\{/,
};

type Statement = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- CloudFormation JSON

interface Context {
  readonly request: WafRequest;
  readonly labels: Set<string>;
}

function transform(value: string, transformations: ReadonlyArray<{ Type: string }> = []): string {
  let out = value;
  for (const t of transformations) {
    if (t.Type === 'NORMALIZE_PATH') out = path.posix.normalize(out.replace(/\/{2,}/g, '/'));
    else if (t.Type === 'LOWERCASE') out = out.toLowerCase();
    else if (t.Type !== 'NONE') throw new Error(`text transformation ${t.Type} is not modelled`);
  }
  return out;
}

function matches(statement: Statement, ctx: Context): boolean {
  if (statement.AndStatement) return (statement.AndStatement.Statements as Statement[]).every((s) => matches(s, ctx));
  if (statement.OrStatement) return (statement.OrStatement.Statements as Statement[]).some((s) => matches(s, ctx));
  if (statement.NotStatement) return !matches(statement.NotStatement.Statement as Statement, ctx);
  if (statement.LabelMatchStatement) {
    const { Scope, Key } = statement.LabelMatchStatement as { Scope: string; Key: string };
    return Scope === 'LABEL' ? ctx.labels.has(Key) : [...ctx.labels].some((l) => l.startsWith(`${Key}:`));
  }
  if (statement.ByteMatchStatement) {
    const b = statement.ByteMatchStatement as { FieldToMatch: Statement; PositionalConstraint: string; SearchString: string; TextTransformations: Array<{ Type: string }> };
    if (!b.FieldToMatch.UriPath) throw new Error('only UriPath byte matches are modelled');
    const value = transform(ctx.request.uriPath, b.TextTransformations);
    switch (b.PositionalConstraint) {
      case 'STARTS_WITH':
        return value.startsWith(b.SearchString);
      case 'EXACTLY':
        return value === b.SearchString;
      case 'CONTAINS':
        return value.includes(b.SearchString);
      default:
        throw new Error(`positional constraint ${b.PositionalConstraint} is not modelled`);
    }
  }
  if (statement.SizeConstraintStatement) {
    const c = statement.SizeConstraintStatement as { FieldToMatch: Statement; ComparisonOperator: string; Size: number; TextTransformations: Array<{ Type: string }> };
    const header = c.FieldToMatch.SingleHeader?.Name as string | undefined;
    if (!header) throw new Error('only SingleHeader size constraints are modelled');
    const value = ctx.request.headers?.[header.toLowerCase()];
    // WAF treats a missing header as not matching the statement.
    if (value === undefined) return false;
    const size = Buffer.byteLength(transform(value, c.TextTransformations));
    if (c.ComparisonOperator === 'GT') return size > c.Size;
    throw new Error(`comparison ${c.ComparisonOperator} is not modelled`);
  }
  // A caller from an allowed country under the rate limit.
  if (statement.GeoMatchStatement || statement.RateBasedStatement) return false;
  throw new Error(`statement ${Object.keys(statement).join(', ')} is not modelled`);
}

/** What the web ACL does with the request, given the managed body rules that apply to each group. */
export function evaluateWebAcl(
  webAcl: { Rules: Statement[]; DefaultAction: Statement },
  request: WafRequest,
  bodyRules: Readonly<Record<string, { readonly labelNamespace: string; readonly rules: readonly string[] }>>,
): WafOutcome {
  const ctx: Context = { request, labels: new Set() };
  for (const rule of [...webAcl.Rules].sort((a, b) => a.Priority - b.Priority)) {
    const managed = rule.Statement.ManagedRuleGroupStatement as
      | { Name: string; RuleActionOverrides?: Array<{ Name: string; ActionToUse: Statement }> }
      | undefined;
    if (managed) {
      const group = bodyRules[managed.Name];
      if (!group) throw new Error(`managed group ${managed.Name} has no body-rule model`);
      for (const ruleName of group.rules) {
        const trigger = BODY_RULE_TRIGGERS[ruleName];
        if (!trigger) throw new Error(`no trigger modelled for ${ruleName}`);
        if (!trigger.test(request.body)) continue;
        ctx.labels.add(`${group.labelNamespace}:${ruleName.replace(/_BODY$/, '_Body')}`);
        const override = managed.RuleActionOverrides?.find((o) => o.Name === ruleName);
        const counted = override?.ActionToUse?.Count !== undefined;
        if (!counted && rule.OverrideAction?.Count === undefined) return { action: 'BLOCK', rule: rule.Name, managedRule: ruleName };
      }
      continue;
    }
    if (matches(rule.Statement, ctx)) {
      if (rule.Action?.Block) return { action: 'BLOCK', rule: rule.Name };
      if (rule.Action?.Allow) return { action: 'ALLOW' };
    }
  }
  return webAcl.DefaultAction.Block ? { action: 'BLOCK', rule: 'default' } : { action: 'ALLOW' };
}

/** Whether one statement (e.g. a rate rule's scope-down) matches the request; labels as given. */
export function matchesStatement(statement: Statement, request: WafRequest, labels: readonly string[] = []): boolean {
  return matches(statement, { request, labels: new Set(labels) });
}
