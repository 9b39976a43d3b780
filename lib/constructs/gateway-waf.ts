import { ArnFormat, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as wafv2 from 'aws-cdk-lib/aws-wafv2';
import { Construct } from 'constructs';

/**
 * The rules of each AWS managed rule group that inspect the request body, and the label each adds when it
 * matches. Prompts routinely carry what these look for (code, HTML, SQL, file paths, URLs, cloud metadata
 * addresses), so on `/v1` they only count; everywhere else the {@link BODY_FINDINGS_RULE} blocks on their label.
 */
export const BODY_INSPECTING_RULES: Readonly<Record<string, { readonly labelNamespace: string; readonly rules: readonly string[] }>> = {
  AWSManagedRulesCommonRuleSet: {
    labelNamespace: 'awswaf:managed:aws:core-rule-set',
    rules: ['SizeRestrictions_BODY', 'EC2MetaDataSSRF_BODY', 'GenericLFI_BODY', 'GenericRFI_BODY', 'CrossSiteScripting_BODY'],
  },
  AWSManagedRulesKnownBadInputsRuleSet: {
    labelNamespace: 'awswaf:managed:aws:known-bad-inputs',
    rules: ['JavaDeserializationRCE_BODY', 'Log4JRCE_BODY'],
  },
  AWSManagedRulesSQLiRuleSet: {
    labelNamespace: 'awswaf:managed:aws:sql-database',
    rules: ['SQLi_BODY', 'SQLiExtendedPatterns_BODY'],
  },
};

/**
 * Every rule of the managed groups that blocks by default, by group (AWS's published lists). Each is overridden to
 * the same block with the JSON {@link WAF_RESPONSE_BODIES forbidden} answer, since a group's own blocks answer WAF's
 * plain-text 403. Names WAF does not know are ignored by WAF; a rule AWS adds later blocks with the plain 403
 * until it is listed here (docs/deploy-lifecycle.md).
 */
export const MANAGED_BLOCKING_RULES: Readonly<Record<string, readonly string[]>> = {
  AWSManagedRulesCommonRuleSet: [
    'NoUserAgent_HEADER',
    'UserAgent_BadBots_HEADER',
    'SizeRestrictions_QUERYSTRING',
    'SizeRestrictions_Cookie_HEADER',
    'SizeRestrictions_BODY',
    'SizeRestrictions_URIPATH',
    'EC2MetaDataSSRF_BODY',
    'EC2MetaDataSSRF_COOKIE',
    'EC2MetaDataSSRF_URIPATH',
    'EC2MetaDataSSRF_QUERYARGUMENTS',
    'GenericLFI_QUERYARGUMENTS',
    'GenericLFI_URIPATH',
    'GenericLFI_BODY',
    'RestrictedExtensions_URIPATH',
    'RestrictedExtensions_QUERYARGUMENTS',
    'GenericRFI_QUERYARGUMENTS',
    'GenericRFI_BODY',
    'GenericRFI_URIPATH',
    'CrossSiteScripting_COOKIE',
    'CrossSiteScripting_QUERYARGUMENTS',
    'CrossSiteScripting_BODY',
    'CrossSiteScripting_URIPATH',
  ],
  AWSManagedRulesKnownBadInputsRuleSet: [
    'JavaDeserializationRCE_HEADER',
    'JavaDeserializationRCE_BODY',
    'JavaDeserializationRCE_URIPATH',
    'JavaDeserializationRCE_QUERYSTRING',
    'Host_localhost_HEADER',
    'PROPFIND_METHOD',
    'ExploitablePaths_URIPATH',
    'Log4JRCE_HEADER',
    'Log4JRCE_QUERYSTRING',
    'Log4JRCE_BODY',
    'Log4JRCE_URIPATH',
  ],
  AWSManagedRulesSQLiRuleSet: [
    'SQLi_QUERYARGUMENTS',
    'SQLiExtendedPatterns_QUERYARGUMENTS',
    'SQLi_BODY',
    'SQLiExtendedPatterns_BODY',
    'SQLi_COOKIE',
    'SQLi_URIPATH',
  ],
};

/**
 * What the per-IP rate rule counts: `all` requests, or `unauthenticated` ones only — every request except those to
 * `/v1` that carry an `Authorization` or `x-api-key` header, which the gateway limits per key (RPM, TPM, budgets)
 * and which a backend behind one NAT address sends in bulk. A made-up header only moves such a request from WAF's
 * limit to the stage throttle and the gateway's 401 (no Lambda work beyond the key lookup).
 */
export type WafRateScope = 'all' | 'unauthenticated';

/** The label a managed rule adds (`GenericLFI_BODY` → `…:GenericLFI_Body`). */
export function bodyRuleLabel(group: string, rule: string): string {
  const ns = BODY_INSPECTING_RULES[group]?.labelNamespace;
  if (!ns) throw new Error(`no body-inspecting rules known for ${group}`);
  return `${ns}:${rule.replace(/_BODY$/, '_Body')}`;
}

/** The rule that blocks body findings outside `/v1`. */
export const BODY_FINDINGS_RULE = 'BlockBodyFindingsOutsideV1';

/** How long a client the rate rule blocked is told to wait (WAF re-evaluates the rate well within a minute). */
export const WAF_RATE_RETRY_AFTER_SECONDS = 60;

/**
 * The web ACL's custom response bodies: JSON in the OpenAI error shape (which the Anthropic SDK also surfaces by
 * status), so SDKs parse a WAF refusal like any other API error instead of choking on WAF's plain-text 403.
 */
export const WAF_RESPONSE_BODIES = {
  'rate-limited': {
    status: 429,
    error: {
      message: `Too many requests from this IP address (AWS WAF rate rule); retry after ${WAF_RATE_RETRY_AFTER_SECONDS} seconds.`,
      type: 'requests',
      param: null,
      code: 'rate_limit_exceeded',
    },
  },
  forbidden: {
    status: 403,
    error: {
      message: 'The request was blocked by the gateway firewall (AWS WAF); retrying the same request will not help.',
      type: 'invalid_request_error',
      param: null,
      code: 'request_blocked',
    },
  },
} as const;

/** A block action answering with one of {@link WAF_RESPONSE_BODIES}. */
function blockWith(key: keyof typeof WAF_RESPONSE_BODIES): wafv2.CfnWebACL.RuleActionProperty {
  const rateLimited = key === 'rate-limited';
  return {
    block: {
      customResponse: {
        responseCode: WAF_RESPONSE_BODIES[key].status,
        customResponseBodyKey: key,
        responseHeaders: [
          ...(rateLimited ? [{ name: 'Retry-After', value: String(WAF_RATE_RETRY_AFTER_SECONDS) }] : []),
          { name: 'x-should-retry', value: String(rateLimited) },
        ],
      },
    },
  };
}

/** Request headers WAF logs never show (the tollgate API key travels in either). */
export const WAF_REDACTED_HEADERS = ['authorization', 'x-api-key'] as const;

export interface GatewayWafProps {
  /** The web ACL's name (also its metric name). */
  readonly name: string;
  /** The API stage name: WAF sees REST API paths as `/<stage>/v1/…`. */
  readonly stageName: string;
  readonly ratePerIpPer5Min: number;
  /** @default 'unauthenticated' */
  readonly rateScope?: WafRateScope;
  readonly blockedCountries: readonly string[];
  /** Further AWSManagedRulesCommonRuleSet rules to count everywhere. */
  readonly commonRuleSetCountOnly: readonly string[];
  readonly logRetentionDays: number;
}

/**
 * The gateway's web ACL and its logging:
 *
 *   geo block ─▶ rate per IP (by default not counting authenticated /v1 requests: the gateway limits those per key)
 *             ─▶ Common, KnownBadInputs, SQLi managed groups (body rules: count + label; every other rule blocks
 *                with the JSON 403)
 *             ─▶ BlockBodyFindingsOutsideV1: a body label on any path but /<stage>/v1/ or /v1/ ─▶ block
 *
 * Logs go to `aws-waf-logs-<name>` (WAF requires the prefix) with the configured retention; only requests a rule
 * blocked or counted are kept, and the Authorization and x-api-key headers are redacted.
 */
export class GatewayWaf extends Construct {
  readonly webAcl: wafv2.CfnWebACL;
  readonly logGroup: logs.LogGroup;
  readonly logging: wafv2.CfnLoggingConfiguration;

  constructor(scope: Construct, id: string, props: GatewayWafProps) {
    super(scope, id);
    const visibility = (metricName: string): wafv2.CfnWebACL.VisibilityConfigProperty => ({
      cloudWatchMetricsEnabled: true,
      metricName,
      sampledRequestsEnabled: true,
    });
    const rules: wafv2.CfnWebACL.RuleProperty[] = [];
    if (props.blockedCountries.length > 0) {
      rules.push({
        name: 'GeoBlock',
        priority: rules.length,
        action: blockWith('forbidden'),
        statement: { geoMatchStatement: { countryCodes: [...props.blockedCountries] } },
        visibilityConfig: visibility('GeoBlock'),
      });
    }
    const pathStartsWith = (prefix: string): wafv2.CfnWebACL.StatementProperty => ({
      byteMatchStatement: {
        fieldToMatch: { uriPath: {} },
        positionalConstraint: 'STARTS_WITH',
        searchString: prefix,
        // "/dev/v1/../admin/x" must not pass as /v1.
        textTransformations: [{ priority: 0, type: 'NORMALIZE_PATH' }],
      },
    });
    const onV1: wafv2.CfnWebACL.StatementProperty = { orStatement: { statements: [pathStartsWith(`/${props.stageName}/v1/`), pathStartsWith('/v1/')] } };
    const hasHeader = (name: string): wafv2.CfnWebACL.StatementProperty => ({
      sizeConstraintStatement: { fieldToMatch: { singleHeader: { Name: name } }, comparisonOperator: 'GT', size: 0, textTransformations: [{ priority: 0, type: 'NONE' }] },
    });
    const authenticatedV1: wafv2.CfnWebACL.StatementProperty = {
      andStatement: { statements: [onV1, { orStatement: { statements: [hasHeader('authorization'), hasHeader('x-api-key')] } }] },
    };
    rules.push({
      name: 'RatePerIp',
      priority: rules.length,
      action: blockWith('rate-limited'),
      statement: {
        rateBasedStatement: {
          limit: props.ratePerIpPer5Min,
          aggregateKeyType: 'IP',
          evaluationWindowSec: 300,
          ...((props.rateScope ?? 'unauthenticated') === 'unauthenticated' ? { scopeDownStatement: { notStatement: { statement: authenticatedV1 } } } : {}),
        },
      },
      visibilityConfig: visibility('RatePerIp'),
    });
    const metricNames: Record<string, string> = {
      AWSManagedRulesCommonRuleSet: 'CommonRuleSet',
      AWSManagedRulesKnownBadInputsRuleSet: 'KnownBadInputs',
      AWSManagedRulesSQLiRuleSet: 'SQLiRuleSet',
    };
    for (const [group, { rules: bodyRules }] of Object.entries(BODY_INSPECTING_RULES)) {
      const counted = new Set([...bodyRules, ...(group === 'AWSManagedRulesCommonRuleSet' ? props.commonRuleSetCountOnly : [])]);
      const blocking = (MANAGED_BLOCKING_RULES[group] ?? []).filter((name) => !counted.has(name));
      rules.push({
        name: group,
        priority: rules.length,
        overrideAction: { none: {} },
        statement: {
          managedRuleGroupStatement: {
            vendorName: 'AWS',
            name: group,
            ruleActionOverrides: [
              ...[...counted].map((name) => ({ name, actionToUse: { count: {} } })),
              // The same block, answering JSON like every other refusal (403, x-should-retry: false).
              ...blocking.map((name) => ({ name, actionToUse: blockWith('forbidden') })),
            ],
          },
        },
        visibilityConfig: visibility(metricNames[group] ?? group),
      });
    }
    rules.push({
      name: BODY_FINDINGS_RULE,
      priority: rules.length,
      action: blockWith('forbidden'),
      statement: {
        andStatement: {
          statements: [
            {
              orStatement: {
                statements: Object.entries(BODY_INSPECTING_RULES).flatMap(([group, { rules: bodyRules }]) =>
                  bodyRules.map((rule) => ({ labelMatchStatement: { scope: 'LABEL', key: bodyRuleLabel(group, rule) } })),
                ),
              },
            },
            { notStatement: { statement: onV1 } },
          ],
        },
      },
      visibilityConfig: visibility(BODY_FINDINGS_RULE),
    });

    this.webAcl = new wafv2.CfnWebACL(this, 'WebAcl', {
      name: props.name,
      scope: 'REGIONAL',
      defaultAction: { allow: {} },
      visibilityConfig: visibility(props.name),
      rules,
      customResponseBodies: Object.fromEntries(
        Object.entries(WAF_RESPONSE_BODIES).map(([key, { error }]) => [key, { contentType: 'APPLICATION_JSON', content: JSON.stringify({ error }) }]),
      ),
    });

    const logGroupName = `aws-waf-logs-${props.name}`;
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      logGroupName,
      retention: props.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.logging = new wafv2.CfnLoggingConfiguration(this, 'Logging', {
      resourceArn: this.webAcl.attrArn,
      // WAF wants the log group ARN without the trailing ":*" that logGroupArn carries.
      logDestinationConfigs: [
        Stack.of(this).formatArn({
          service: 'logs',
          resource: 'log-group',
          resourceName: logGroupName,
          arnFormat: ArnFormat.COLON_RESOURCE_NAME,
        }),
      ],
      redactedFields: WAF_REDACTED_HEADERS.map((name) => ({ singleHeader: { Name: name } })),
      loggingFilter: {
        DefaultBehavior: 'DROP',
        Filters: [
          {
            Behavior: 'KEEP',
            Requirement: 'MEETS_ANY',
            Conditions: [{ ActionCondition: { Action: 'BLOCK' } }, { ActionCondition: { Action: 'COUNT' } }],
          },
        ],
      },
    });
    this.logging.node.addDependency(this.logGroup);
  }
}
