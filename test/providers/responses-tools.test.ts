/**
 * The tools coding agents send on the Responses API, translated for chat providers (providers/responses):
 * function, custom and namespace tools flattened both ways; every other tool refused by its index.
 */
import { InvalidRequestError } from '../../lambda/core/errors';
import { responsesToChatRequest, responsesToolMap, type ResponsesBody } from '../../lambda/providers/responses/request';
import { chatCompletionToResponse } from '../../lambda/providers/responses/response';

const body = (extra: Record<string, unknown>): ResponsesBody => ({ model: 'claude-sonnet-4-6', input: 'Hi', ...extra }) as ResponsesBody;
const custom = { type: 'custom', name: 'apply_patch', description: 'Edits files', format: { type: 'text' } };
const ns = { type: 'namespace', name: 'crm', description: 'CRM', tools: [{ type: 'function', name: 'find' }, { type: 'custom', name: 'note' }] };

function refusal(extra: Record<string, unknown>): InvalidRequestError {
  try {
    responsesToChatRequest(body(extra));
  } catch (err) {
    if (err instanceof InvalidRequestError) return err;
    throw err;
  }
  throw new Error('not refused');
}

describe('Responses tools for chat providers', () => {
  it('when custom and namespace tools are declared, they become functions and tool_choice follows them', () => {
    const chat = responsesToChatRequest(body({ tools: [custom, ns], tool_choice: { type: 'custom', name: 'apply_patch' } }));
    expect((chat.tools as { function: { name: string } }[]).map((t) => t.function.name)).toEqual(['apply_patch', 'crm__find', 'crm__note']);
    expect(chat.tool_choice).toEqual({ type: 'function', function: { name: 'apply_patch' } });
    expect([...responsesToolMap(body({ tools: [custom, ns] })).entries()]).toEqual([
      ['apply_patch', { kind: 'custom', name: 'apply_patch' }],
      ['crm__find', { kind: 'function', name: 'find', namespace: 'crm' }],
      ['crm__note', { kind: 'custom', name: 'note', namespace: 'crm' }],
    ]);
  });

  it.each([
    ['a hosted tool', { tools: [custom, { type: 'file_search', vector_store_ids: ['vs'] }] }, 'tools[1]', '"file_search" is a tool OpenAI runs'],
    ['a hosted tool inside a namespace', { tools: [{ ...ns, tools: [{ type: 'web_search' }] }] }, 'tools[0].tools[0]', 'function and custom tools'],
    ['a namespace whose flattened names are not valid', { tools: [{ ...ns, name: 'my crm' }] }, 'tools[0].tools[0]', '"my crm__find"'],
    ['two tools of one name', { tools: [custom, custom] }, 'tools[1]', 'declared twice'],
  ])('when it declares %s, the 400 names it by index', (_label, extra, param, says) => {
    const err = refusal(extra);
    expect(err.param).toBe(param);
    expect(err.message).toContain(says);
  });

  it('when the answer calls flattened tools, the items come back as custom_tool_call and namespaced function_call', () => {
    const tools = responsesToolMap(body({ tools: [custom, ns] }));
    const response = chatCompletionToResponse(
      {
        choices: [
          {
            finish_reason: 'tool_calls',
            message: {
              role: 'assistant',
              content: null,
              tool_calls: [
                { id: 'c1', type: 'function', function: { name: 'apply_patch', arguments: '{"input":"*** Begin Patch"}' } },
                { id: 'c2', type: 'function', function: { name: 'crm__find', arguments: '{"q":1}' } },
                { id: 'c3', type: 'function', function: { name: 'crm__note', arguments: 'bare text' } },
              ],
            },
          },
        ],
      },
      { id: 'resp_1', model: 'claude-sonnet-4-6', createdAt: 1 },
      body({ tools: [custom, ns] }),
      undefined,
      tools,
    );
    expect(response.output).toEqual([
      { id: 'ctc_1_0', type: 'custom_tool_call', status: 'completed', call_id: 'c1', name: 'apply_patch', input: '*** Begin Patch' },
      { id: 'fc_1_1', type: 'function_call', status: 'completed', call_id: 'c2', name: 'find', namespace: 'crm', arguments: '{"q":1}' },
      { id: 'ctc_1_2', type: 'custom_tool_call', status: 'completed', call_id: 'c3', name: 'note', namespace: 'crm', input: 'bare text' },
    ]);
  });
});
