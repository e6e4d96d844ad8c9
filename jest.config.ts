import type { Config } from 'jest';

// FDBRIDGE_TEST_TIME_SCALE: how much slower the build under test runs
// (test/util/time-scale.ts, which also checks the value). Read here
// directly: Node 22 and later load this file with their own type
// stripping, which resolves no extensionless import.
const timeScale = Math.max(1, Number(process.env['FDBRIDGE_TEST_TIME_SCALE'] || 1)) || 1;

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
  testTimeout: Math.ceil(30000 * timeScale),
  maxWorkers: 2,
};

export default config;
