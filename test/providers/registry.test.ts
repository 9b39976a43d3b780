import { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
import type { ProviderEndpoints } from '../../lambda/config';
import { MockProvider } from '../../lambda/providers/mock/provider';
import { createProviders, ProviderRegistry } from '../../lambda/providers/registry';

const endpoints: ProviderEndpoints = {
  openaiBaseUrl: 'http://127.0.0.1:9/v1',
  anthropicBaseUrl: 'http://127.0.0.1:9',
  mockEnabled: false,
};

describe('createProviders', () => {
  it('when no key, region or mock is configured, it offers no provider', () => {
    expect(createProviders(endpoints, {}).ids()).toEqual([]);
  });

  it('when keys, a Bedrock region and the mock are configured, it offers all four', () => {
    const client = new BedrockRuntimeClient({ region: 'eu-west-1' });
    const registry = createProviders(
      { ...endpoints, bedrockRegion: 'eu-west-1', mockEnabled: true },
      { openaiApiKey: 'sk-a', anthropicApiKey: 'sk-ant-b' },
      { bedrockClient: client },
    );
    expect(registry.ids()).toEqual(['openai', 'anthropic', 'bedrock', 'mock']);
    expect(registry.get('anthropic')?.messages).toBeDefined();
    expect(registry.get('bedrock')?.messages).toBeUndefined();
  });

  it('when only the Anthropic key is set, openai is not offered', () => {
    const registry = createProviders(endpoints, { anthropicApiKey: 'sk-ant-b' });
    expect(registry.ids()).toEqual(['anthropic']);
    expect(registry.get('openai')).toBeUndefined();
  });
});

describe('ProviderRegistry', () => {
  it('when two providers share an id, registering the second throws', () => {
    const registry = new ProviderRegistry([new MockProvider()]);
    expect(() => registry.register(new MockProvider())).toThrow(/registered twice/);
  });
});
