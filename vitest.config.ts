import { defineConfig } from 'vitest/config';

// Native suites share one addon and one CPU pool: run files in forked workers, one at a time.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
