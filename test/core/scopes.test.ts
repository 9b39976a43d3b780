import { parseScope, scopeKind } from '../../lambda/core/types';

describe('budget scopes', () => {
  it('when a scope names a key, user, org or the platform, it parses and keeps its kind', () => {
    expect(parseScope('user:alice')).toBe('user:alice');
    expect(scopeKind(parseScope('org:acme'))).toBe('org');
    expect(scopeKind(parseScope('platform'))).toBe('platform');
  });

  it('when a scope is a service principal or a BYOK budget, it parses', () => {
    expect(scopeKind(parseScope('key:svc:agent'))).toBe('key');
    expect(parseScope('user:alice#byok')).toBe('user:alice#byok');
  });

  it('when a scope is malformed, it is refused with a message naming it', () => {
    for (const bad of ['user:', 'team:x', 'org:a b', 'key:a:b:c', 'user:x#other', 'platform:1']) {
      expect(() => parseScope(bad)).toThrow(`"${bad}" is not a scope`);
    }
  });
});
