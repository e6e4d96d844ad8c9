import type { Config } from 'jest';

import { scaled } from './test/util/time-scale';

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
  // A hang guard: longer where the build under test is slower (test/util/time-scale.ts).
  testTimeout: scaled(30000),
  maxWorkers: 2,
};

export default config;
