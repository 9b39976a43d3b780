/**
 * Request body schemas (zod). They check what the gateway relies on — model, messages, limits, stream flags —
 * and let every other field through untouched, so new provider parameters keep working.
 */
import * as z from 'zod/mini';
import { InvalidRequestError } from '../core/errors';
import { decodeUtf8 } from './input-boundary';

// zod/mini: the same validation at a tenth of the bundle size of the chainable API (the gateway Lambda's
// cold start pays for every kilobyte).
const positiveInt = z.int().check(z.minimum(1));
const name = z.string().check(z.minLength(1), z.maxLength(256));
const opt = <T extends z.ZodMiniType>(t: T) => z.optional(t);
const optNull = <T extends z.ZodMiniType>(t: T) => z.optional(z.nullable(t));
const typedPart = z.looseObject({ type: z.string() });
/** A number within the range the provider documents for the parameter. */
const within = (min: number, max: number) => z.number().check(z.minimum(min), z.maximum(max));

const chatMessage = z.looseObject({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool', 'function']),
  content: opt(z.union([z.string(), z.array(typedPart), z.null()])),
});

export const chatCompletionSchema = z.looseObject({
  model: name,
  messages: z.array(chatMessage).check(z.minLength(1)),
  stream: opt(z.boolean()),
  stream_options: optNull(z.looseObject({ include_usage: opt(z.boolean()) })),
  max_tokens: optNull(positiveInt),
  max_completion_tokens: optNull(positiveInt),
  n: optNull(z.int().check(z.minimum(1), z.maximum(128))),
  temperature: optNull(within(0, 2)),
  top_p: optNull(within(0, 1)),
  presence_penalty: optNull(within(-2, 2)),
  frequency_penalty: optNull(within(-2, 2)),
  top_logprobs: optNull(z.int().check(z.minimum(0), z.maximum(20))),
  seed: optNull(z.int()),
  tools: opt(z.array(typedPart)),
});

// `system` mid-conversation: Claude Code's `mid-conversation-system` beta. Anthropic judges it; the gateway forwards it.
const anthropicMessage = z.looseObject({
  role: z.enum(['user', 'assistant', 'system']),
  content: z.union([z.string(), z.array(typedPart)]),
});

export const messagesSchema = z.looseObject({
  model: name,
  max_tokens: positiveInt,
  messages: z.array(anthropicMessage).check(z.minLength(1)),
  system: opt(z.union([z.string(), z.array(typedPart)])),
  stream: opt(z.boolean()),
  temperature: opt(within(0, 1)),
  top_p: opt(within(0, 1)),
  top_k: opt(z.int().check(z.minimum(0))),
  tools: opt(z.array(z.looseObject({}))),
});

export const embeddingsSchema = z.looseObject({
  model: name,
  input: z.union([
    z.string(),
    z.array(z.string()).check(z.minLength(1)),
    z.array(z.int()).check(z.minLength(1)),
    z.array(z.array(z.int()).check(z.minLength(1))).check(z.minLength(1)),
  ]),
  dimensions: opt(z.int().check(z.minimum(1), z.maximum(65_536))),
  encoding_format: opt(z.enum(['float', 'base64'])),
});

/** Parses a JSON body; 400 with a clear message when it is not JSON or not an object. */
export function parseJsonBody(body: Buffer): Record<string, unknown> {
  if (body.length === 0) throw new InvalidRequestError('The request body is empty; send a JSON object.', { code: 'invalid_json' });
  let value: unknown;
  try {
    value = JSON.parse(decodeUtf8(body));
  } catch (err) {
    if (err instanceof InvalidRequestError) throw err;
    throw new InvalidRequestError('The request body is not valid JSON.', { code: 'invalid_json' });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidRequestError('The request body must be a JSON object.', { code: 'invalid_json' });
  }
  return value as Record<string, unknown>;
}

/** Validates a parsed body; the 400 names the first offending parameter. */
export function validate<T>(schema: z.ZodMiniType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const param = issue.path.map(String).join('.');
  throw new InvalidRequestError(`Invalid value for '${param || 'body'}': ${describeIssue(issue)}.`, {
    code: 'invalid_value',
    param: param || undefined,
  });
}

/** A readable reason for a validation issue (zod/mini ships no message locale). */
function describeIssue(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return `expected ${issue.expected}`;
    case 'too_small':
      return issue.origin === 'array' || issue.origin === 'string'
        ? `must have at least ${String(issue.minimum)} ${issue.origin === 'array' ? 'item(s)' : 'character(s)'}`
        : `must be at least ${String(issue.minimum)}`;
    case 'too_big':
      return issue.origin === 'array' || issue.origin === 'string'
        ? `must have at most ${String(issue.maximum)} ${issue.origin === 'array' ? 'item(s)' : 'character(s)'}`
        : `must be at most ${String(issue.maximum)}`;
    case 'invalid_value':
      return `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_union':
      return 'does not match any accepted form';
    default:
      return 'is not valid';
  }
}
