/**
 * Runs the CLI from sources in a child process (`node --import tsx src/cli/main.ts ...`), as a
 * user would run `alignvar`, for the CLI tests.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The CLI entry point. */
export const CLI = join(ROOT, 'src', 'cli', 'main.ts');

/** What a CLI run left: exit status, stdout, stderr. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `alignvar <args>` in the repository root with NO_COLOR set.
 *
 * @param args - The command line after `alignvar`.
 * @returns Its exit status and output (never rejects; a timeout counts as a failure).
 */
export function cli(...args: string[]): Promise<CliResult> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', CLI, ...args],
      { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' }, timeout: 300_000 },
      (err, stdout, stderr) => {
        const code = err ? ((err as { code?: number }).code ?? 1) : 0;
        done({ code: typeof code === 'number' ? code : 1, stdout, stderr });
      },
    );
  });
}
