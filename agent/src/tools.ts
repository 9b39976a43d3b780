/**
 * The agent's built-in tools, offered to the model as OpenAI function tools. They are small and pure on
 * purpose: they read the run's input, record what the run produced, and do the arithmetic models get wrong.
 *
 * A tool answers a string. An EMPTY string is a valid answer (an empty input item, nothing to count) and goes
 * back to the model as such; only a thrown {@link ToolError} is a failure, which the loop may retry.
 */
import { RUN_LIMITS, type RunOutput } from '../../lambda/core/agent/run';

/** A tool refused its arguments or could not do its work; the message goes back to the model. */
export class ToolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ToolError';
  }
}

/** What a tool may see and change of its run. */
export interface ToolContext {
  readonly input: readonly string[];
  /** Outputs recorded so far (the tool appends). */
  readonly outputs: RunOutput[];
}

export interface Tool {
  readonly name: string;
  readonly description: string;
  /** JSON schema of the arguments. */
  readonly parameters: Readonly<Record<string, unknown>>;
  run(args: Readonly<Record<string, unknown>>, context: ToolContext): Promise<string> | string;
}

function integerArg(args: Readonly<Record<string, unknown>>, name: string): number {
  const v = args[name];
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new ToolError(`"${name}" must be a whole number.`);
  return v;
}

function stringArg(args: Readonly<Record<string, unknown>>, name: string): string {
  const v = args[name];
  if (typeof v !== 'string') throw new ToolError(`"${name}" must be a string.`);
  return v;
}

/**
 * Evaluates + - * / and parentheses over decimal numbers (no names, no calls: nothing to inject into).
 * Throws ToolError on anything else.
 */
export function calculate(expression: string): number {
  const tokens = expression.match(/\d+(?:\.\d+)?|[-+*/()]|\S/g) ?? [];
  let pos = 0;
  const peek = () => tokens[pos];
  const next = () => tokens[pos++];
  const primary = (): number => {
    const t = next();
    if (t === '(') {
      const v = sum();
      if (next() !== ')') throw new ToolError('Unbalanced parentheses.');
      return v;
    }
    if (t === '-') return -primary();
    if (t !== undefined && /^\d/.test(t)) return Number(t);
    throw new ToolError(`Unexpected "${t ?? 'end of expression'}".`);
  };
  const product = (): number => {
    let v = primary();
    while (peek() === '*' || peek() === '/') {
      const op = next();
      const r = primary();
      if (op === '/' && r === 0) throw new ToolError('Division by zero.');
      v = op === '*' ? v * r : v / r;
    }
    return v;
  };
  const sum = (): number => {
    let v = product();
    while (peek() === '+' || peek() === '-') v = next() === '+' ? v + product() : v - product();
    return v;
  };
  if (tokens.length === 0) throw new ToolError('The expression is empty.');
  const value = sum();
  if (pos !== tokens.length) throw new ToolError(`Unexpected "${tokens[pos]}".`);
  return value;
}

/** The tools every run gets. */
export const BUILT_IN_TOOLS: readonly Tool[] = [
  {
    name: 'get_item',
    description: 'Returns input item number `index` (0-based) verbatim. An item may be empty.',
    parameters: { type: 'object', properties: { index: { type: 'integer', minimum: 0 } }, required: ['index'] },
    run(args, { input }) {
      const index = integerArg(args, 'index');
      if (index < 0 || index >= input.length) throw new ToolError(`There is no item ${index}; the input has ${input.length} items (0 to ${input.length - 1}).`);
      return input[index]!;
    },
  },
  {
    name: 'record_output',
    description: 'Records one result of the run (for example the label of input item `item`). Call it once per result.',
    parameters: {
      type: 'object',
      properties: { item: { type: 'integer', minimum: 0 }, value: { type: 'string' } },
      required: ['value'],
    },
    run(args, { input, outputs }) {
      const value = stringArg(args, 'value');
      const item = args.item === undefined ? undefined : integerArg(args, 'item');
      if (item !== undefined && (item < 0 || item >= input.length)) throw new ToolError(`There is no item ${item}.`);
      if (outputs.length >= RUN_LIMITS.maxOutputs) throw new ToolError(`A run records at most ${RUN_LIMITS.maxOutputs} outputs.`);
      const size = outputs.reduce((n, o) => n + Buffer.byteLength(o.value), 0) + Buffer.byteLength(value);
      if (size > RUN_LIMITS.maxProducedBytes) throw new ToolError(`A run records at most ${RUN_LIMITS.maxProducedBytes} bytes of outputs.`);
      outputs.push({ ...(item !== undefined ? { item } : {}), value });
      return 'recorded';
    },
  },
  {
    name: 'calculate',
    description: 'Evaluates an arithmetic expression with + - * / and parentheses, e.g. "(3 + 4) * 2".',
    parameters: { type: 'object', properties: { expression: { type: 'string' } }, required: ['expression'] },
    run(args) {
      return String(calculate(stringArg(args, 'expression')));
    },
  },
  {
    name: 'count_words',
    description: 'Counts the words of a text.',
    parameters: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] },
    run(args) {
      const text = stringArg(args, 'text').trim();
      return String(text === '' ? 0 : text.split(/\s+/).length);
    },
  },
];

/** The tools in the request shape of `/v1/chat/completions`. */
export function toolDefinitions(tools: readonly Tool[]): unknown[] {
  return tools.map((t) => ({ type: 'function', function: { name: t.name, description: t.description, parameters: t.parameters } }));
}
