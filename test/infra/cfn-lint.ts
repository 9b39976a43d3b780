/**
 * cfn-lint over a synthesized app, with the findings that are known and accepted named once for every variant the
 * tests lint (deploy.test.ts: dev and prod; lifecycle.test.ts: Bedrock, Slack and removeOnDelete together).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SynthesizedApp } from './app-fixture';

/**
 * cfn-lint findings that are known and accepted, each with its reason. Anything else (error or warning) fails.
 */
export const CFN_LINT_EXCEPTIONS: ReadonlyArray<{ readonly rule: string; readonly resourceType: string; readonly reason: string }> = [
  {
    rule: 'E3002',
    resourceType: 'AWS::CloudWatch::Dashboard',
    reason: 'Tags on AWS::CloudWatch::Dashboard are accepted by CloudFormation; cfn-lint 1.51\'s resource schema has not caught up (schema lag). Tags.of(app) puts the cost-allocation tag there.',
  },
  {
    rule: 'E3002',
    resourceType: 'AWS::ApplicationAutoScaling::ScalableTarget',
    reason: 'Tags on AWS::ApplicationAutoScaling::ScalableTarget are supported by CloudFormation and CDK emits them from Tags.of(app); cfn-lint 1.51\'s schema predates them (schema lag).',
  },
  {
    rule: 'W3005',
    resourceType: '*',
    reason: 'CDK adds an explicit DependsOn (a Lambda on its role policy, a custom resource on its provider) that a GetAtt already implies; redundant but harmless.',
  },
];

/**
 * Lints every template of `app` and returns the findings no exception names, one line each (empty: clean).
 * Throws when cfn-lint is missing: the check never skips.
 */
export function cfnLint(app: SynthesizedApp): string[] {
  const version = spawnSync('cfn-lint', ['--version'], { encoding: 'utf8' });
  if (version.error || version.status !== 0) {
    throw new Error(
      `cfn-lint is required and ${version.error ? 'not on PATH' : `failed: ${(version.stderr || version.stdout).trim()}`}: ` +
        'install it with `pip install cfn-lint` (README.md, prerequisites).',
    );
  }
  const assembly = app.app.synth();
  const files = assembly.stacks.map((s) => path.join(assembly.directory, s.templateFile));
  for (const f of files) if (!fs.existsSync(f)) throw new Error(`no template at ${f}`);
  const run = spawnSync('cfn-lint', ['--format', 'json', '--', ...files], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (!run.stdout && run.status !== 0) throw new Error(`cfn-lint failed (exit ${run.status}): ${run.stderr}`);
  const findings = JSON.parse(run.stdout || '[]') as Array<{ Rule: { Id: string }; Level: string; Filename: string; Location: { Path: Array<string | number> }; Message: string }>;
  const typeOf = (f: (typeof findings)[number]) => {
    const [section, id] = f.Location.Path;
    if (section !== 'Resources') return '';
    const t = JSON.parse(fs.readFileSync(f.Filename, 'utf8')) as { Resources: Record<string, { Type: string }> };
    return t.Resources[String(id)]?.Type ?? '';
  };
  return findings
    .filter((f) => !CFN_LINT_EXCEPTIONS.some((e) => e.rule === f.Rule.Id && (e.resourceType === '*' || e.resourceType === typeOf(f))))
    .map((f) => `${f.Rule.Id} ${path.basename(f.Filename)} ${f.Location.Path.join('/')}: ${f.Message}`);
}
