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
  readonly blockedCountries: readonly string[];
  /** Further AWSManagedRulesCommonRuleSet rules to count everywhere. */
  readonly commonRuleSetCountOnly: readonly string[];
  readonly logRetentionDays: number;
}

/**
 * The gateway's web ACL and its logging:
 *
 *   geo block ─▶ rate per IP ─▶ Common, KnownBadInputs, SQLi managed groups (body rules: count + label)
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
    rules.push({
      name: 'RatePerIp',
      priority: rules.length,
      action: blockWith('rate-limited'),
      statement: { rateBasedStatement: { limit: props.ratePerIpPer5Min, aggregateKeyType: 'IP', evaluationWindowSec: 300 } },
      visibilityConfig: visibility('RatePerIp'),
    });
    const metricNames: Record<string, string> = {
      AWSManagedRulesCommonRuleSet: 'CommonRuleSet',
      AWSManagedRulesKnownBadInputsRuleSet: 'KnownBadInputs',
      AWSManagedRulesSQLiRuleSet: 'SQLiRuleSet',
    };
    for (const [group, { rules: bodyRules }] of Object.entries(BODY_INSPECTING_RULES)) {
      const counted = [...bodyRules, ...(group === 'AWSManagedRulesCommonRuleSet' ? props.commonRuleSetCountOnly : [])];
      rules.push({
        name: group,
        priority: rules.length,
        overrideAction: { none: {} },
        statement: {
          managedRuleGroupStatement: {
            vendorName: 'AWS',
            name: group,
            ruleActionOverrides: [...new Set(counted)].map((name) => ({ name, actionToUse: { count: {} } })),
          },
        },
        visibilityConfig: visibility(metricNames[group] ?? group),
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
            { notStatement: { statement: { orStatement: { statements: [pathStartsWith(`/${props.stageName}/v1/`), pathStartsWith('/v1/')] } } } },
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
