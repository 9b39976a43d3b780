/**
 * `POST /v1/messages` on every provider: Anthropic (and the mock) answer it natively; every provider that
 * speaks chat completions (openai, bedrock) answers it translated both ways (providers/messages), so an
 * Anthropic-dialect caller such as Claude Code can use an OpenAI or Bedrock model unchanged.
 */
import type { Provider, ProviderCallContext, ProviderResult, MessagesBody } from '../providers/contract';
import { messagesToChatRequest } from '../providers/messages/request';
import { messagesViaChat } from '../providers/messages/via-chat';

/**
 * The operation answering a Messages request on `provider`: its native `messages`, else chat completions
 * translated both ways; undefined when it offers neither.
 */
export function messagesOperation(
  provider: Provider,
): ((body: Record<string, unknown>, ctx: ProviderCallContext) => Promise<ProviderResult>) | undefined {
  if (provider.messages) {
    const native = provider.messages.bind(provider);
    return (body, ctx) => native(body as MessagesBody, ctx);
  }
  const chat = provider.chatCompletions?.bind(provider);
  if (!chat) return undefined;
  return (body, ctx) => messagesViaChat({ chatCompletions: chat }, body as MessagesBody, ctx);
}

/**
 * Refuses, before anything is reserved, what `provider` cannot express: the translation itself (a built-in
 * Anthropic tool, a block with no chat equivalent) and then the provider's own check of the translated body.
 */
export function checkMessagesFor(provider: Provider, body: Record<string, unknown>): void {
  if (provider.messages) {
    provider.check?.('messages', body);
    return;
  }
  if (provider.chatCompletions) provider.check?.('chatCompletions', messagesToChatRequest(body as MessagesBody));
}
