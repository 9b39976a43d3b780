import { CredentialRedactor, jwtSecretParts } from '../../lambda/core/credential-redactor';
import { InvalidRequestError, UpstreamError } from '../../lambda/core/errors';
import {
  checkContentType,
  checkJsonDepth,
  decodePathParam,
  decodeUtf8,
  jsonDepthExceeds,
  UnsupportedMediaTypeError,
} from '../../lambda/http/input-boundary';

describe('jsonDepthExceeds', () => {
  it.each([
    ['{}', 1, false],
    ['{"a":[{}]}', 3, false],
    ['{"a":[{}]}', 2, true],
    ['"[[[[[[[["', 1, false],
    ['{"a":"\\"[[[[["}', 1, false],
    ['[[[]],[[]]]', 3, false],
  ])('when the text is %s and the limit %i, it says %s', (text, limit, expected) => {
    expect(jsonDepthExceeds(text, limit)).toBe(expected);
  });

  it('when a body nests 100,000 levels, it answers without recursion', () => {
    expect(() => checkJsonDepth('['.repeat(100_000), 64)).toThrow(InvalidRequestError);
  });
});

describe('decodePathParam', () => {
  it.each(['%', '%E0%A4%A', '%ff', '%zz', 'abc%'])('when the segment is %s, it throws a 400 invalid_path', (raw) => {
    expect(() => decodePathParam('id', raw)).toThrow(expect.objectContaining({ status: 400, code: 'invalid_path', param: 'id' }));
  });
  it('when a segment is well formed, it decodes it', () => {
    expect(decodePathParam('scope', 'user%3Aalice')).toBe('user:alice');
  });
  it('when a segment decodes to more than 256 characters, it throws a 400', () => {
    expect(() => decodePathParam('id', '%41'.repeat(257))).toThrow(expect.objectContaining({ status: 400 }));
  });
});

describe('decodeUtf8 and checkContentType', () => {
  it('when bytes are not UTF-8, it throws a 400 invalid_json', () => {
    expect(() => decodeUtf8(Buffer.from([0x7b, 0xff, 0x7d]))).toThrow(expect.objectContaining({ status: 400, code: 'invalid_json' }));
  });
  it.each([undefined, 'application/json', 'application/json; charset=UTF-8', 'application/vnd.api+json', 'text/plain', 'application/x-www-form-urlencoded'])(
    'when the content type is %s, the body is read as JSON',
    (type) => expect(() => checkContentType(type)).not.toThrow(),
  );
  it.each(['multipart/form-data; boundary=x', 'application/json; charset=utf-16', 'application/json, multipart/mixed', 'text/plain; charset=latin1'])(
    'when the content type is %s, it throws a 415',
    (type) => expect(() => checkContentType(type)).toThrow(UnsupportedMediaTypeError),
  );
});

describe('CredentialRedactor', () => {
  const redactor = new CredentialRedactor(['platformKey-123456', undefined, '', 'shrt', ...jwtSecretParts('k1:jwtSecretOne-abcdef,k2:jwtSecretTwo-ghijkl')]);

  it('when an upstream error carries credentials in message, code, param and headers, the copy has none and keeps its class and status', () => {
    const err = new UpstreamError('bad key platformKey-123456 and jwtSecretTwo-ghijkl', {
      status: 400,
      code: 'x_platformKey-123456',
      param: 'byokKey-987654321',
      headers: { 'Retry-After': 'platformKey-123456' },
      cause: new TypeError('header value "byokKey-987654321" is invalid'),
    });
    const safe = redactor.redactError(err, ['byokKey-987654321']);
    expect(safe).toBeInstanceOf(UpstreamError);
    expect(safe.status).toBe(400);
    const visible = JSON.stringify({ m: safe.message, c: safe.code, p: safe.param, h: safe.headers, cause: (safe.cause as Error).message, stack: safe.stack });
    for (const secret of ['platformKey-123456', 'jwtSecretTwo-ghijkl', 'byokKey-987654321']) expect(visible).not.toContain(secret);
    expect(err.message).toContain('platformKey-123456');
  });

  it('when a credential is shorter than six characters, ordinary words stay as they are', () => {
    expect(redactor.redactText('a shrt word')).toBe('a shrt word');
  });

  it('when text holds something key-shaped that is not ours, it is redacted too', () => {
    expect(redactor.redactText('key sk-proj-abcdefgh1234')).not.toContain('sk-proj-abcdefgh1234');
  });
});
