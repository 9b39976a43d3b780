#!/usr/bin/env node
/**
 * The CDK app: reads the typed deployment config from the `tollgate` context (cdk.json), adds the stacks of one
 * stage and runs cdk-nag's AWS Solutions checks as a validation plugin, so `cdk synth` fails on any finding
 * that is not acknowledged with a reason.
 */
import { App, CfnOutput, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { resolveDeploymentConfig } from '../lib/config';
import { addTollgate } from '../lib/tollgate';

const app = new App();
const config = resolveDeploymentConfig(app.node.tryGetContext('tollgate'), { stage: app.node.tryGetContext('stage') });
const stacks = addTollgate(app, config);
new CfnOutput(stacks.gateway, 'BaseUrl', {
  description: 'Point OpenAI/Anthropic clients here (OpenAI SDKs: append /v1)',
  value: stacks.gateway.url,
});
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
