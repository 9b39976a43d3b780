/**
 * Synthesizes the tollgate app the way `cdk synth` does (cdk.json's feature flags and `tollgate` context), but
 * with bundling skipped, so infra tests are fast and need neither esbuild nor Docker. Also the snapshot
 * serializer that masks asset hashes so snapshots are stable across machines and source edits.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { resolveDeploymentConfig, type DeploymentConfig } from '../../lib/config';
import { addTollgate, type TollgateStacks } from '../../lib/tollgate';

const CDK_JSON = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'cdk.json'), 'utf8')) as {
  context: Record<string, unknown>;
};

export interface SynthesizedApp {
  readonly app: App;
  readonly config: DeploymentConfig;
  readonly stacks: TollgateStacks;
  readonly templates: Readonly<Record<keyof TollgateStacks, Template>>;
  /** Removes the temporary cloud assembly. */
  dispose(): void;
}

/** Builds and synthesizes one app; `tollgate` overrides are merged over cdk.json's section by section. */
export function synthApp(overrides: Record<string, unknown> = {}): SynthesizedApp {
  const base = CDK_JSON.context.tollgate as Record<string, unknown>;
  const merged: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(overrides)) {
    const b = base[k];
    merged[k] = typeof v === 'object' && v !== null && !Array.isArray(v) && typeof b === 'object' ? { ...b, ...v } : v;
  }
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-cdk-'));
  const app = new App({ outdir, context: { ...CDK_JSON.context, tollgate: merged, 'aws:cdk:bundling-stacks': [] } });
  const config = resolveDeploymentConfig(merged);
  const stacks = addTollgate(app, config);
  const templates = Object.fromEntries(
    Object.entries(stacks).map(([k, s]) => [k, Template.fromStack(s)]),
  ) as unknown as Record<keyof TollgateStacks, Template>;
  return { app, config, stacks, templates, dispose: () => fs.rmSync(outdir, { recursive: true, force: true }) };
}

const HASH = /[0-9a-f]{64}/g;

/** Replaces asset hashes (64 hex characters, alone or inside S3 keys and image tags) with a fixed marker. */
export const assetHashSerializer: jest.SnapshotSerializerPlugin = {
  test: (value: unknown) => typeof value === 'string' && /[0-9a-f]{64}/.test(value),
  serialize: (value: string) => JSON.stringify(value.replace(HASH, '[ASSET HASH]')),
};
