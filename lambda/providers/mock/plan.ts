/**
 * What the mock provider does with tools and structured output, decided from the request alone so every
 * answer is deterministic:
 *
 * - tools declared (and not turned off) and the conversation does not end with a tool result → it calls
 *   one tool (the named `tool_choice`, else the first) with arguments generated from the tool's JSON Schema;
 * - the conversation ends with a tool result → it answers in text, quoting the result;
 * - a JSON schema asked for (`response_format`) → it answers JSON that validates against simple schemas
 *   (objects with required properties, strings, numbers, booleans, arrays, enums, const, anyOf);
 * - JSON asked for without a schema → `{"reply": …}`.
 */

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A value that validates against `schema` (for the schemas clients generate; `$ref` gets `{}`). */
export function sampleFromSchema(schema: unknown, hint: string, depth = 0): unknown {
  if (!isRecord(schema) || depth > 8) return hint;
  if ('const' in schema) return schema.const;
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return schema.enum[0];
  for (const key of ['anyOf', 'oneOf', 'allOf'] as const) {
    const options = schema[key];
    if (Array.isArray(options) && options.length > 0) {
      const first = options.find((o) => !(isRecord(o) && o.type === 'null')) ?? options[0];
      return sampleFromSchema(first, hint, depth + 1);
    }
  }
  const type = Array.isArray(schema.type) ? (schema.type.find((t) => t !== 'null') ?? schema.type[0]) : schema.type;
  switch (type) {
    case 'object': {
      const properties = isRecord(schema.properties) ? schema.properties : {};
      const out: Record<string, unknown> = {};
      for (const [name, property] of Object.entries(properties)) out[name] = sampleFromSchema(property, `${hint}`, depth + 1);
      return out;
    }
    case 'array': {
      const min = typeof schema.minItems === 'number' ? Math.max(1, schema.minItems) : 1;
      return Array.from({ length: min }, () => sampleFromSchema(schema.items, hint, depth + 1));
    }
    case 'integer':
      return typeof schema.minimum === 'number' ? Math.ceil(schema.minimum) : 1;
    case 'number':
      return typeof schema.minimum === 'number' ? schema.minimum : 1;
    case 'boolean':
      return true;
    case 'null':
      return null;
    case 'string': {
      if (schema.format === 'date-time') return '2030-01-01T00:00:00Z';
      if (schema.format === 'date') return '2030-01-01';
      if (schema.format === 'email') return 'mock@example.com';
      if (schema.format === 'uri' || schema.format === 'url') return 'https://example.com/';
      const min = typeof schema.minLength === 'number' ? schema.minLength : 0;
      const max = typeof schema.maxLength === 'number' ? schema.maxLength : Infinity;
      let text = hint === '' ? 'mock' : hint;
      if (text.length < min) text = text.padEnd(min, 'x');
      return text.slice(0, max);
    }
    default:
      return isRecord(schema.properties) ? sampleFromSchema({ ...schema, type: 'object' }, hint, depth) : hint;
  }
}

/** A tool the request declares, in neutral form. */
export interface MockTool {
  readonly name: string;
  readonly parameters: unknown;
}

/** What the mock will answer. */
export type MockPlan =
  | { readonly kind: 'text' }
  | { readonly kind: 'tool_result'; readonly result: string }
  | { readonly kind: 'tool_call'; readonly tool: MockTool; readonly arguments: string }
  | { readonly kind: 'json'; readonly json: string };

/** The inputs of a plan, read from either dialect by the caller. */
export interface PlanInput {
  readonly tools: readonly MockTool[];
  /** `none` turns tools off; a name forces that tool. */
  readonly toolChoice: 'auto' | 'none' | 'required' | { readonly name: string };
  /** The text of a tool result when the conversation ends with one. */
  readonly lastToolResult: string | undefined;
  /** `undefined` when plain text is wanted; `null` for JSON without a schema. */
  readonly jsonSchema: Record<string, unknown> | null | undefined;
  /** The last user text, used to fill generated strings. */
  readonly prompt: string;
}

/** Decides the answer (see the file comment). */
export function planAnswer(input: PlanInput): MockPlan {
  const hint = Array.from(input.prompt).slice(0, 40).join('') || 'mock';
  if (input.lastToolResult !== undefined) {
    return { kind: 'tool_result', result: Array.from(input.lastToolResult).slice(0, 60).join('') };
  }
  if (input.tools.length > 0 && input.toolChoice !== 'none') {
    const named = typeof input.toolChoice === 'object' ? input.tools.find((t) => t.name === (input.toolChoice as { name: string }).name) : undefined;
    const tool = named ?? input.tools[0]!;
    return { kind: 'tool_call', tool, arguments: JSON.stringify(sampleFromSchema(tool.parameters ?? { type: 'object' }, hint)) };
  }
  if (input.jsonSchema !== undefined) {
    return { kind: 'json', json: JSON.stringify(input.jsonSchema === null ? { reply: `Mock reply to: ${hint}` } : sampleFromSchema(input.jsonSchema, hint)) };
  }
  return { kind: 'text' };
}

/** The plan inputs of an OpenAI chat request. */
export function chatPlanInput(body: Readonly<Record<string, unknown>>, prompt: string): PlanInput {
  const tools: MockTool[] = Array.isArray(body.tools)
    ? body.tools.flatMap((t) => (isRecord(t) && isRecord(t.function) && typeof t.function.name === 'string' ? [{ name: t.function.name, parameters: t.function.parameters }] : []))
    : [];
  const choice = body.tool_choice;
  const toolChoice: PlanInput['toolChoice'] =
    choice === 'none' || choice === 'required' ? choice : isRecord(choice) && isRecord(choice.function) && typeof choice.function.name === 'string' ? { name: choice.function.name } : 'auto';
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const last = messages[messages.length - 1];
  const lastToolResult = isRecord(last) && last.role === 'tool' ? textOf(last.content) : undefined;
  const format = isRecord(body.response_format) ? body.response_format : undefined;
  const jsonSchema =
    format?.type === 'json_schema' && isRecord(format.json_schema) && isRecord(format.json_schema.schema)
      ? format.json_schema.schema
      : format?.type === 'json_object' || format?.type === 'json_schema'
        ? null
        : undefined;
  return { tools, toolChoice, lastToolResult, jsonSchema, prompt };
}

/** The plan inputs of an Anthropic Messages request (structured output is a forced tool there). */
export function messagesPlanInput(body: Readonly<Record<string, unknown>>, prompt: string): PlanInput {
  const tools: MockTool[] = Array.isArray(body.tools)
    ? body.tools.flatMap((t) => (isRecord(t) && typeof t.name === 'string' ? [{ name: t.name, parameters: t.input_schema }] : []))
    : [];
  const choice = isRecord(body.tool_choice) ? body.tool_choice : undefined;
  const toolChoice: PlanInput['toolChoice'] =
    choice?.type === 'none' ? 'none' : choice?.type === 'any' ? 'required' : choice?.type === 'tool' && typeof choice.name === 'string' ? { name: choice.name } : 'auto';
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const last = messages[messages.length - 1];
  let lastToolResult: string | undefined;
  if (isRecord(last) && last.role === 'user' && Array.isArray(last.content)) {
    const results = last.content.filter((b) => isRecord(b) && b.type === 'tool_result');
    if (results.length > 0) lastToolResult = results.map((b) => textOf((b as Record<string, unknown>).content)).join('\n');
  }
  return { tools, toolChoice, lastToolResult, jsonSchema: undefined, prompt };
}

/** The text of a `content`: a string, or the text parts of an array. */
export function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((part) => (isRecord(part) && typeof part.text === 'string' ? part.text : '')).join('');
}
