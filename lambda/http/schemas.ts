/**
 * Request body schemas (zod). They check what the gateway relies on — model, messages, limits, stream flags —
 * and let every other field through untouched, so new provider parameters keep working.
 */
import { z } from 'zod';
import { InvalidRequestError } from '../core/errors';

const positiveInt = z.number().int().positive();

const chatMessage = z.looseObject({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool', 'function']),
  content: z.union([z.string(), z.array(z.looseObject({ type: z.string() })), z.null()]).optional(),
});

export const chatCompletionSchema = z.looseObject({
  model: z.string().min(1).max(256),
  messages: z.array(chatMessage).min(1),
  stream: z.boolean().optional(),
  stream_options: z.looseObject({ include_usage: z.boolean().optional() }).nullable().optional(),
  max_tokens: positiveInt.nullable().optional(),
  max_completion_tokens: positiveInt.nullable().optional(),
  n: z.number().int().min(1).max(128).nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  tools: z.array(z.looseObject({ type: z.string() })).optional(),
});

const anthropicMessage = z.looseObject({
  role: z.enum(['user', 'assistant']),
  content: z.union([z.string(), z.array(z.looseObject({ type: z.string() }))]),
});

export const messagesSchema = z.looseObject({
  model: z.string().min(1).max(256),
  max_tokens: positiveInt,
  messages: z.array(anthropicMessage).min(1),
  system: z.union([z.string(), z.array(z.looseObject({ type: z.string() }))]).optional(),
  stream: z.boolean().optional(),
  tools: z.array(z.looseObject({})).optional(),
});

export const embeddingsSchema = z.looseObject({
  model: z.string().min(1).max(256),
  input: z.union([
    z.string(),
    z.array(z.string()).min(1),
    z.array(z.number().int()).min(1),
    z.array(z.array(z.number().int()).min(1)).min(1),
  ]),
  dimensions: positiveInt.optional(),
  encoding_format: z.enum(['float', 'base64']).optional(),
});

/** Parses a JSON body; 400 with a clear message when it is not JSON or not an object. */
export function parseJsonBody(body: Buffer): Record<string, unknown> {
  if (body.length === 0) throw new InvalidRequestError('The request body is empty; send a JSON object.', { code: 'invalid_json' });
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new InvalidRequestError('The request body is not valid JSON.', { code: 'invalid_json' });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidRequestError('The request body must be a JSON object.', { code: 'invalid_json' });
  }
  return value as Record<string, unknown>;
}

/** Validates a parsed body; the 400 names the first offending parameter. */
export function validate<T>(schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const param = issue.path.map(String).join('.');
  throw new InvalidRequestError(`Invalid value for '${param || 'body'}': ${issue.message}.`, {
    code: 'invalid_value',
    param: param || undefined,
  });
}
