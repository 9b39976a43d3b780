import { apiKeyMatches, generateApiKey, hashApiKey, keyIdOf } from '../../lambda/core/api-keys';
import { presentedApiKey } from '../../lambda/core/auth';

describe('API key material', () => {
  it('when a key is generated, it is sk-tg- plus URL-safe text with its id embedded', () => {
    const k = generateApiKey();
    expect(k.raw).toMatch(/^sk-tg-[A-Za-z0-9_-]{55}$/);
    expect(keyIdOf(k.raw)).toBe(k.keyId);
    expect(k.prefix.startsWith(`sk-tg-${k.keyId}`)).toBe(true);
    expect(k.prefix).not.toContain(k.raw.slice(18));
  });

  it('when two keys are generated, they differ', () => {
    expect(generateApiKey().raw).not.toBe(generateApiKey().raw);
  });

  it('when a key is checked against its hash, only the same key and pepper match', () => {
    const k = generateApiKey();
    const hash = hashApiKey(k.raw, 'pepper-1');
    expect(hash).not.toContain(k.raw);
    expect(apiKeyMatches(k.raw, hash, 'pepper-1')).toBe(true);
    expect(apiKeyMatches(k.raw, hash, 'pepper-2')).toBe(false);
    const tampered = k.raw.slice(0, -1) + (k.raw.endsWith('A') ? 'B' : 'A');
    expect(apiKeyMatches(tampered, hash, 'pepper-1')).toBe(false);
  });

  it('when a string is not shaped like a key, no key id is read from it', () => {
    expect(keyIdOf('sk-proj-abc')).toBeUndefined();
    expect(keyIdOf('')).toBeUndefined();
    expect(keyIdOf(`sk-tg-${'a'.repeat(54)}`)).toBeUndefined();
  });

  it('when a key is presented, Bearer and x-api-key are both read', () => {
    expect(presentedApiKey({ authorization: 'Bearer sk-tg-x' })).toBe('sk-tg-x');
    expect(presentedApiKey({ 'x-api-key': 'sk-tg-y' })).toBe('sk-tg-y');
    expect(presentedApiKey({ authorization: 'Basic abc' })).toBeUndefined();
    expect(presentedApiKey({})).toBeUndefined();
  });
});
