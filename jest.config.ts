import type { Config } from 'jest';

const config: Config = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    // `npm test` type-checks everything with tsc first; here ts-jest only transpiles.
    '^.+\\.ts$': ['ts-jest', { diagnostics: false }],
  },
  // Every test file checks that the process's open-fd table is unchanged after each test.
  setupFilesAfterEnv: ['<rootDir>/test/setup/fd-table.ts'],
  testTimeout: 30000,
  maxWorkers: 2,
};

export default config;
