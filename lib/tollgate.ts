import type { App, Environment } from 'aws-cdk-lib';
import { Tags } from 'aws-cdk-lib';
import { COST_ALLOCATION_TAG, type DeploymentConfig } from './config';
import { AgentStack } from './stacks/agent-stack';
import { DataStack } from './stacks/data-stack';
import { GatewayStack } from './stacks/gateway-stack';
import { costAllocationTagValue, GuardrailsStack } from './stacks/guardrails-stack';
import { ObservabilityStack } from './stacks/observability-stack';

/** The stacks of one tollgate deployment, in deployment order. */
export interface TollgateStacks {
  readonly data: DataStack;
  readonly guardrails: GuardrailsStack;
  readonly gateway: GatewayStack;
  readonly agent: AgentStack;
  readonly observability: ObservabilityStack;
}

/**
 * Adds one stage of tollgate to `app`: five stacks named `Tollgate-<stage>-<Concern>`. Dependencies only point
 * down this list (data ← guardrails, gateway, agent ← observability), so `cdk deploy --all` deploys them in
 * order and a stack can be updated alone. Stacks are account-agnostic (so `cdk synth` never needs credentials
 * or context lookups) and pinned to `config.region` when one is set.
 */
export function addTollgate(app: App, config: DeploymentConfig): TollgateStacks {
  const env: Environment | undefined = config.region ? { region: config.region } : undefined;
  const name = (concern: string) => `Tollgate-${config.stage}-${concern}`;
  const common = (concern: string) => ({
    env,
    stackName: name(concern),
    description: `tollgate ${config.stage}: ${concern.toLowerCase()}`,
    config,
  });

  const data = new DataStack(app, name('Data'), { ...common('Data'), terminationProtection: true });
  const guardrails = new GuardrailsStack(app, name('Guardrails'), { ...common('Guardrails'), data });
  const gateway = new GatewayStack(app, name('Gateway'), { ...common('Gateway'), data });
  const agent = new AgentStack(app, name('Agent'), { ...common('Agent'), data });
  // The agent reads the gateway URL the gateway stack publishes in SSM when it deploys, so it comes after.
  agent.addStackDependency(gateway);
  const observability = new ObservabilityStack(app, name('Observability'), {
    ...common('Observability'),
    data,
    gateway,
    agent,
    guardrails,
  });

  // Every taggable resource carries the cost-allocation tag the AWS budget filters on (activate it once in
  // Billing → Cost allocation tags, or `aws ce update-cost-allocation-tags-status`).
  Tags.of(app).add(COST_ALLOCATION_TAG, costAllocationTagValue(config));
  Tags.of(app).add('app', 'tollgate');
  Tags.of(app).add('tollgate:stage', config.stage);
  return { data, guardrails, gateway, agent, observability };
}
