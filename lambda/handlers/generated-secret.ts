/**
 * The deploy-time custom resource that creates the stage's generated secrets (`key-pepper`, `jwt-secret`) as SSM
 * SecureString parameters encrypted with the data key, so a fresh account works after `cdk deploy --all` with no
 * manual step. The value is generated here from random bytes and goes only to SSM: never into the template, a
 * stack output, the custom-resource response or a log line.
 *
 *   Create / Update ─▶ PutParameter(Overwrite: false, tag created-by = this resource) ─┬─ created ─▶ SUCCESS
 *                                                                                    └─ ParameterAlreadyExists
 *      ─▶ DescribeParameters: encrypted with the data key (KeyId)? ──yes──────────────────────────▶ kept
 *                                                                   └─no (old key, String type) ─▶ re-encrypted:
 *         GetParameter(decrypted through SSM) ─▶ PutParameter(Overwrite: true, same value, KeyId) ─▶ SUCCESS,
 *         or FAILED naming the old key when it cannot be decrypted (deleted, disabled, no grant): never a green
 *         deploy with a secret the new roles cannot read.
 *      ─▶ adopted from another resource or set by hand: tag adopted-by = this resource ─▶ SUCCESS
 *   Delete ─▶ kept (default); with RemoveOnDelete "true", DeleteParameter only when this resource created the
 *             parameter (tag created-by) and no other resource adopted it since (tag adopted-by). When another
 *             did (a replacement), the creator hands it over (created-by = the adopter) and keeps it; an adopter
 *             of a value it did not create only drops its adopted-by tag. A failed Create (its physical id is
 *             its logical id) deletes nothing.
 *
 * Updates never change a value: a new pepper would invalidate every issued API key, and a rotated jwt-secret is
 * the operator's (`npm run secrets -- set jwt-secret`). A value set by hand before the first deploy is kept, and
 * never deleted by this resource. Physical ids are `<parameter name>@<request id of the Create>`, so a
 * replacement (a new resource adopting the parameter, then the old one's Delete) cannot delete the live value.
 */
import { randomBytes } from 'node:crypto';
import {
  AddTagsToResourceCommand,
  DeleteParameterCommand,
  DescribeParametersCommand,
  GetParameterCommand,
  ListTagsForResourceCommand,
  PutParameterCommand,
  RemoveTagsFromResourceCommand,
  SSMClient,
} from '@aws-sdk/client-ssm';

/** The parameter tag naming the resource (physical id) that created it; only that resource may delete it. */
export const CREATED_BY_TAG = 'tollgate:created-by';
/** The parameter tag naming the resource that adopted an existing parameter; while set, the creator keeps it. */
export const ADOPTED_BY_TAG = 'tollgate:adopted-by';

/** The secrets this resource can generate, and the shape of each value. */
export const GENERATED_SECRET_KINDS = ['key-pepper', 'jwt-secret'] as const;
export type GeneratedSecretKind = (typeof GENERATED_SECRET_KINDS)[number];

/** The kid of a generated `jwt-secret` (the first entry of its key ring; see lambda/core/jwt.ts). */
export const GENERATED_JWT_KID = 'generated-1';

/** A fresh value for `kind`: 256 random bits, hex for the pepper, a `kid:base64url` key-ring entry for the JWT secret. */
export function generateSecretValue(kind: GeneratedSecretKind, random: (bytes: number) => Buffer = randomBytes): string {
  const bytes = random(32);
  return kind === 'key-pepper' ? bytes.toString('hex') : `${GENERATED_JWT_KID}:${bytes.toString('base64url')}`;
}

/** The resource's properties, as CloudFormation passes them (strings). */
export interface GeneratedSecretProperties {
  readonly ParameterName: string;
  readonly Kind: string;
  /** The KMS key ARN the SecureString is encrypted with. */
  readonly KeyId: string;
  /** The key's alias (`alias/tollgate-<stage>`), which SSM may report instead of the ARN. */
  readonly KeyAlias?: string;
  /** "true" deletes the parameter with the resource; anything else keeps it. */
  readonly RemoveOnDelete?: string;
}

/** The CloudFormation custom-resource request (only what this handler reads). */
export interface CustomResourceEvent {
  readonly RequestType: 'Create' | 'Update' | 'Delete';
  readonly ResponseURL: string;
  readonly StackId: string;
  readonly RequestId: string;
  readonly LogicalResourceId: string;
  readonly PhysicalResourceId?: string;
  readonly ResourceProperties: GeneratedSecretProperties;
}

/** The response CloudFormation reads back: no `Data`, so nothing about the value can reach a template or output. */
export interface CustomResourceResponse {
  readonly Status: 'SUCCESS' | 'FAILED';
  readonly Reason?: string;
  readonly PhysicalResourceId: string;
  readonly StackId: string;
  readonly RequestId: string;
  readonly LogicalResourceId: string;
  readonly NoEcho: true;
}

export interface GeneratedSecretDeps {
  readonly ssm: Pick<SSMClient, 'send'>;
  /** @default node:crypto randomBytes */
  readonly random?: (bytes: number) => Buffer;
  /** One line per request, never with a value. @default console.log as JSON */
  readonly log?: (message: string, fields: Readonly<Record<string, string>>) => void;
}

function isKind(kind: string): kind is GeneratedSecretKind {
  return (GENERATED_SECRET_KINDS as readonly string[]).includes(kind);
}

function errorName(err: unknown): string {
  return typeof err === 'object' && err !== null && typeof (err as { name?: unknown }).name === 'string' ? (err as { name: string }).name : 'Error';
}

/** The KMS key id (the UUID) of a key ARN or bare key id; undefined for an alias or anything else. */
function keyIdOf(key: string): string | undefined {
  const m = /^(?:arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/)?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$/.exec(key);
  return m?.[1];
}

/**
 * Whether SSM's `KeyId` of a parameter names the key the resource is configured with (an ARN, a bare key id or
 * the key's alias). Anything else (another key, `alias/aws/ssm`, an alias of an unknown key) counts as another
 * key: re-encrypting under the right one is harmless when it was the same key after all.
 */
export function sameKey(existing: string | undefined, wanted: string, wantedAlias?: string): boolean {
  if (existing === undefined) return false;
  if (existing === wanted || (wantedAlias !== undefined && existing === wantedAlias)) return true;
  const a = keyIdOf(existing);
  return a !== undefined && a === keyIdOf(wanted);
}

/** The physical id a successful Create returns: the parameter name and the Create's request id. */
export function physicalIdFor(name: string, requestId: string): string {
  return `${name}@${requestId}`;
}

/** Carries out one request and returns the response to send; it never throws (a failure is a FAILED response). */
export async function applyGeneratedSecret(event: CustomResourceEvent, deps: GeneratedSecretDeps): Promise<CustomResourceResponse> {
  const props = event.ResourceProperties;
  const log = deps.log ?? ((message, fields) => console.log(JSON.stringify({ message, ...fields })));
  const respond = (status: 'SUCCESS' | 'FAILED', physicalId: string, reason?: string): CustomResourceResponse => ({
    Status: status,
    ...(reason ? { Reason: reason } : {}),
    PhysicalResourceId: physicalId,
    StackId: event.StackId,
    RequestId: event.RequestId,
    LogicalResourceId: event.LogicalResourceId,
    NoEcho: true,
  });
  const name = props.ParameterName;
  // A resource created before physical ids carried the request id has the bare name: it keeps it on update.
  const ours = (id: string | undefined): boolean => id !== undefined && (id === name || id.startsWith(`${name}@`));
  const physicalId =
    event.RequestType === 'Create' || (event.RequestType === 'Update' && !ours(event.PhysicalResourceId))
      ? physicalIdFor(name, event.RequestId)
      : (event.PhysicalResourceId ?? event.LogicalResourceId);
  const tagsOf = async (): Promise<Record<string, string>> => {
    const out = await deps.ssm.send(new ListTagsForResourceCommand({ ResourceType: 'Parameter', ResourceId: name }));
    return Object.fromEntries((out.TagList ?? []).map((t) => [t.Key ?? '', t.Value ?? '']));
  };
  try {
    if (event.RequestType === 'Delete') {
      // A failed Create answered with its logical id: no parameter of ours is behind it.
      if (props.RemoveOnDelete !== 'true' || !ours(physicalId)) {
        log('generated secret kept', { parameter: String(name) });
        return respond('SUCCESS', physicalId);
      }
      let tags: Record<string, string>;
      try {
        tags = await tagsOf();
      } catch (err) {
        if (errorName(err) === 'InvalidResourceId' || errorName(err) === 'ParameterNotFound') return respond('SUCCESS', physicalId);
        throw err;
      }
      const adopter = tags[ADOPTED_BY_TAG];
      if (adopter === physicalId) {
        // This resource adopted the parameter (set by hand, or created before it): the value is not its to delete.
        await deps.ssm.send(new RemoveTagsFromResourceCommand({ ResourceType: 'Parameter', ResourceId: name, TagKeys: [ADOPTED_BY_TAG] }));
        log('generated secret kept (adopted, not created, by this resource)', { parameter: name });
      } else if (tags[CREATED_BY_TAG] === physicalId && adopter !== undefined) {
        // A replacement: the new resource (created before this Delete, which runs only once it succeeded) adopted
        // the live value. It becomes the creator, so it deletes the value when it goes in turn.
        await deps.ssm.send(new AddTagsToResourceCommand({ ResourceType: 'Parameter', ResourceId: name, Tags: [{ Key: CREATED_BY_TAG, Value: adopter }] }));
        await deps.ssm.send(new RemoveTagsFromResourceCommand({ ResourceType: 'Parameter', ResourceId: name, TagKeys: [ADOPTED_BY_TAG] }));
        log('generated secret kept, handed to the resource that replaced this one', { parameter: name });
      } else if (tags[CREATED_BY_TAG] === physicalId) {
        try {
          await deps.ssm.send(new DeleteParameterCommand({ Name: name }));
          log('generated secret deleted', { parameter: name });
        } catch (err) {
          if (errorName(err) !== 'ParameterNotFound') throw err;
        }
      } else {
        log('generated secret kept (not created by this resource)', { parameter: name });
      }
      return respond('SUCCESS', physicalId);
    }
    if (typeof name !== 'string' || !/^\/tollgate\/[a-z0-9-]+\/[a-z0-9-]+$/.test(name)) {
      return respond('FAILED', event.LogicalResourceId, `ParameterName must be /tollgate/<stage>/<name>, got ${JSON.stringify(name)}`);
    }
    if (!isKind(props.Kind)) {
      return respond('FAILED', event.LogicalResourceId, `Kind must be one of ${GENERATED_SECRET_KINDS.join(', ')}`);
    }
    try {
      await deps.ssm.send(
        new PutParameterCommand({
          Name: name,
          Type: 'SecureString',
          KeyId: props.KeyId,
          Value: generateSecretValue(props.Kind, deps.random),
          Overwrite: false,
          Description: `tollgate ${props.Kind}, generated at deploy`,
          Tags: [{ Key: CREATED_BY_TAG, Value: physicalId }],
        }),
      );
      log('generated secret created', { parameter: name });
      return respond('SUCCESS', physicalId);
    } catch (err) {
      if (errorName(err) !== 'ParameterAlreadyExists') throw err;
    }
    // It exists: a redeploy, a retried first deploy, a replacement, or a value set by hand. Keep the value; make
    // sure it is a SecureString under this deployment's key (the roles may decrypt only with that one).
    const described = await deps.ssm.send(new DescribeParametersCommand({ ParameterFilters: [{ Key: 'Name', Option: 'Equals', Values: [name] }] }));
    const meta = described.Parameters?.[0];
    if (meta?.Type === 'SecureString' && sameKey(meta.KeyId, props.KeyId, props.KeyAlias)) {
      log('generated secret already exists under the data key, kept', { parameter: name });
    } else {
      const was = meta?.Type === 'SecureString' ? `encrypted with ${meta.KeyId ?? 'an unknown key'}` : `a ${meta?.Type ?? 'missing'} parameter`;
      let value: string | undefined;
      try {
        value = (await deps.ssm.send(new GetParameterCommand({ Name: name, WithDecryption: true }))).Parameter?.Value;
      } catch (err) {
        const reason =
          `${name} exists, ${was}, not the data key ${props.KeyId}, and cannot be decrypted to re-encrypt it (${errorName(err)}). ` +
          'Re-enable that key (or cancel its deletion) and deploy again, or set the value yourself with `npm run secrets -- set`; ' +
          'deleting the parameter instead generates a new value (a new key-pepper invalidates every issued API key).';
        log('generated secret under another key, cannot re-encrypt', { parameter: name, error: errorName(err) });
        return respond('FAILED', physicalId, reason);
      }
      if (value === undefined) throw Object.assign(new Error('no value'), { name: 'EmptyParameter' });
      await deps.ssm.send(new PutParameterCommand({ Name: name, Type: 'SecureString', KeyId: props.KeyId, Value: value, Overwrite: true }));
      log('generated secret re-encrypted under the data key, value kept', { parameter: name, was });
    }
    const tags = await tagsOf();
    if (tags[CREATED_BY_TAG] !== physicalId && tags[ADOPTED_BY_TAG] !== physicalId) {
      await deps.ssm.send(new AddTagsToResourceCommand({ ResourceType: 'Parameter', ResourceId: name, Tags: [{ Key: ADOPTED_BY_TAG, Value: physicalId }] }));
      log('generated secret adopted', { parameter: name });
    }
    return respond('SUCCESS', physicalId);
  } catch (err) {
    // The SDK's error names the parameter at most; the value is never put into an error or a log line.
    const reason = `${errorName(err)} writing ${name}`;
    log('generated secret failed', { parameter: String(name), error: errorName(err) });
    return respond('FAILED', physicalId, reason);
  }
}

/** Sends the response to CloudFormation's pre-signed URL (an S3 PUT with an empty content type). */
export async function sendResponse(url: string, response: CustomResourceResponse): Promise<void> {
  const body = JSON.stringify(response);
  const res = await fetch(url, { method: 'PUT', body, headers: { 'content-type': '', 'content-length': String(Buffer.byteLength(body)) } });
  if (!res.ok) throw new Error(`CloudFormation response PUT failed with HTTP ${res.status}`);
}

let client: SSMClient | undefined;

/** The Lambda entry point. */
export async function handler(event: CustomResourceEvent): Promise<void> {
  client ??= new SSMClient({});
  await sendResponse(event.ResponseURL, await applyGeneratedSecret(event, { ssm: client }));
}
