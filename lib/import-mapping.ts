/**
 * Re-creating a deleted Data stack without stranding its data: the tables and the data key are retained when the
 * stack is deleted (DeletionPolicy RetainExceptOnCreate), and their names are fixed, so a plain `cdk deploy` of a
 * new Data stack would fail "already exists". Instead the retained resources are imported into the new stack with
 * `cdk import --resource-mapping`, then the rest is deployed as usual (docs/deploy-lifecycle.md, "Tear down and
 * re-create"). This prints that mapping from the synthesized template:
 *
 *   npx tsx lib/import-mapping.ts cdk.out/Tollgate-<stage>-Data.template.json <retained data key id or ARN> > import.json
 *
 * Every retained resource must be importable (a type listed here, its identifier known), or this fails naming it:
 * a retained resource nobody can import would be stranded at the next re-create.
 */
import * as fs from 'node:fs';

type Resource = { readonly Type: string; readonly DeletionPolicy?: string; readonly Properties?: Record<string, unknown> };

/** Deletion policies that leave the resource behind when the stack is deleted. */
export const RETAINING_POLICIES: readonly string[] = ['Retain', 'RetainExceptOnCreate'];

/** A CloudFormation import mapping: logical id → the resource's identifier properties. */
export type ImportMapping = Record<string, Record<string, string>>;

/** The identifier of each type the Data stack retains, read from the template or given by the operator. */
const IDENTIFIERS: Readonly<Record<string, (r: Resource, given: { readonly keyId?: string }) => Record<string, string>>> = {
  'AWS::DynamoDB::Table': (r) => {
    const name = r.Properties?.TableName;
    if (typeof name !== 'string') throw new Error('a retained table needs a fixed TableName to be imported');
    return { TableName: name };
  },
  'AWS::KMS::Key': (_r, given) => {
    if (!given.keyId) throw new Error('the retained data key needs its key id (see the table\'s SSEDescription.KMSMasterKeyArn)');
    const id = /([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$/.exec(given.keyId)?.[1];
    if (!id) throw new Error(`not a KMS key id or key ARN: ${given.keyId}`);
    return { KeyId: id };
  },
};

/** The import mapping of every resource `template` retains on deletion; throws for one it cannot import. */
export function importMapping(template: { readonly Resources: Readonly<Record<string, Resource>> }, given: { readonly keyId?: string }): ImportMapping {
  const mapping: ImportMapping = {};
  for (const [id, r] of Object.entries(template.Resources)) {
    if (!r.DeletionPolicy || !RETAINING_POLICIES.includes(r.DeletionPolicy)) continue;
    const identify = IDENTIFIERS[r.Type];
    if (!identify) throw new Error(`${id} (${r.Type}) is retained on deletion but cannot be imported into a re-created stack`);
    mapping[id] = identify(r, given);
  }
  return mapping;
}

if (require.main === module) {
  const [file, keyId] = process.argv.slice(2);
  if (!file) {
    console.error('usage: npx tsx lib/import-mapping.ts cdk.out/Tollgate-<stage>-Data.template.json <data key id or ARN>');
    process.exit(2);
  }
  try {
    console.log(JSON.stringify(importMapping(JSON.parse(fs.readFileSync(file, 'utf8')), { keyId }), null, 2));
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  }
}
