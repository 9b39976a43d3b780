/**
 * `/v1/messages` for providers that speak chat completions (openai, bedrock): the Anthropic request is
 * translated to chat completions (./request.ts), the provider answers, and the answer (or its stream) is
 * translated back (./response.ts). Usage is the provider's own, so billing is the same as on
 * `/v1/chat/completions`; errors are rendered in the Anthropic dialect by the HTTP layer.
 */
import type { TokenUsage } from '../../core/types';
import type { MessagesBody, Provider, ProviderCallContext, ProviderResult } from '../contract';
import { parseSse } from '../sse';
import { messagesToChatRequest } from './request';
import { chatChunksToMessageEvents, chatCompletionToMessage, type MessageIdentity } from './response';

/** Answers an Anthropic Messages request with `provider.chatCompletions`. */
export async function messagesViaChat(
  provider: Required<Pick<Provider, 'chatCompletions'>>,
  body: MessagesBody,
  ctx: ProviderCallContext,
): Promise<ProviderResult> {
  const chat = messagesToChatRequest(body);
  const identity: MessageIdentity = { id: `msg_${ctx.requestId.replace(/^req_/, '')}`, model: body.model };
  // The usage chunk is always asked for: it becomes the usage of the final message_delta.
  const result = await provider.chatCompletions(chat, { ...ctx, callerWantsStreamUsage: true });
  if (result.kind === 'json') return { kind: 'json', body: chatCompletionToMessage(result.body, identity, result.usage), usage: result.usage };
  const events = chatChunksToMessageEvents(parseSse(result.body), { identity });
  return { kind: 'stream', body: events, usage: (): TokenUsage | undefined => result.usage(), ...(result.cut ? { cut: result.cut } : {}) };
}
