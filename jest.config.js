/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.(t|j)sx?$': ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' } }],
  },
  // ESM-only packages (middy, jose) are transformed to CommonJS for jest.
  // @middy/* is ESM-only and exports only an "import" condition: map it to its files and transform them.
  // jose v6 is ESM-only too; its "default" export condition resolves, it only needs the transform.
  transformIgnorePatterns: ['/node_modules/(?!(@middy|jose)/)'],
  moduleNameMapper: {
    '^@middy/([a-z-]+)$': '<rootDir>/node_modules/@middy/$1/index.js',
    '^@middy/([a-z-]+)/(.*)$': '<rootDir>/node_modules/@middy/$1/$2.js',
  },
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  // A timeout only catches a hang: it must never judge a machine's speed. A loaded 2-core CI box or laptop
  // (a second `npm test`, a browser, a build) makes the heavy tests (5,000 keys, CDK synth, headless Chromium)
  // several times slower than on a quiet one, so the bound is generous; durations are measured by bench/.
  testTimeout: 300_000,
  // Two workers on two cores: DynamoDB Local's JVM and Chromium take CPU too, but one worker would make the
  // suite twice as long, and every test is independent of the others' speed.
  maxWorkers: 2,
};
