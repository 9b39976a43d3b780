/**
 * The deploy-time custom resource that creates the stage's generated secrets (`key-pepper`, `jwt-secret`) as SSM
 * SecureString parameters encrypted with the data key, so a fresh account works after `cdk deploy --all` with no
 * manual step. The value is generated here from random bytes and goes only to SSM: never into the template, a
 * stack output, the custom-resource response or a log line.
 *
 *   Create / Update ─▶ PutParameter(Overwrite: false) ─┬─ created            ─▶ SUCCESS
 *                                                      └─ ParameterAlreadyExists ─▶ SUCCESS (kept as it is)
 *   Delete ─▶ kept (default), or DeleteParameter when RemoveOnDelete is "true"
 *
 * Updates never overwrite: a new pepper would invalidate every issued API key, and a rotated jwt-secret is the
 * operator's (`npm run secrets -- set jwt-secret`). A value set by hand before the first deploy is kept too.
 */
import { randomBytes } from 'node:crypto';
import { DeleteParameterCommand, PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';

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
  /** The KMS key ARN or alias the SecureString is encrypted with. */
  readonly KeyId: string;
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
  const physicalId = event.PhysicalResourceId ?? name ?? event.LogicalResourceId;
  try {
    if (event.RequestType === 'Delete') {
      // A failed Create has no parameter of ours behind it (its physical id is not the name).
      if (props.RemoveOnDelete === 'true' && physicalId === name) {
        try {
          await deps.ssm.send(new DeleteParameterCommand({ Name: name }));
          log('generated secret deleted', { parameter: name });
        } catch (err) {
          if (errorName(err) !== 'ParameterNotFound') throw err;
        }
      } else {
        log('generated secret kept', { parameter: name });
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
        }),
      );
      log('generated secret created', { parameter: name });
    } catch (err) {
      if (errorName(err) !== 'ParameterAlreadyExists') throw err;
      log('generated secret already exists, kept', { parameter: name });
    }
    return respond('SUCCESS', name);
  } catch (err) {
    // The SDK's error names the parameter at most; the generated value is not in scope here.
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
