#!/usr/bin/env node
/**
 * The `alignvar` command: dispatches `alignvar <command> ...` to `./<command>.js` (one module per
 * command, each exporting `run(argv): Promise<number>`), prints the top-level help and version,
 * maps errors to exit statuses and turns Ctrl-C into an abort.
 *
 * Exit status: 0 all done, 1 something failed, 2 usage error, 130 interrupted (Ctrl-C).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { packageRoot } from '../binding/load.js';
import { UsageError, errorMessage, interrupt, log } from './shared.js';

/** The commands and the one-line summary the top-level help shows for each. */
const COMMANDS: Record<string, string> = {
  upscale: 'upscale images or folders x4',
  info: 'backends of this machine and a model file',
  bench: 'per-scale latency and throughput',
  serve: 'HTTP server for upscaling',
  worker: 'BullMQ worker that upscales queued jobs',
  enqueue: 'add upscale jobs to a BullMQ queue',
  convert: 'convert a .pth checkpoint to safetensors',
};

/** A command module: `run` returns the exit status. */
interface CommandModule {
  run(argv: string[]): Promise<number>;
  /** The command's own usage text, shown by the top-level help when present. */
  USAGE?: string;
}

/** The file of a command module next to this one (`.ts` when run from sources, `.js` when built). */
function commandFile(command: string): URL | undefined {
  if (!Object.hasOwn(COMMANDS, command)) return undefined;
  for (const ext of ['.js', '.ts']) {
    const url = new URL(`./${command}${ext}`, import.meta.url);
    if (existsSync(fileURLToPath(url))) return url;
  }
  return undefined;
}

async function loadCommand(command: string): Promise<CommandModule | undefined> {
  if (commandFile(command) === undefined) return undefined;
  // A computed specifier: modules of commands not written yet do not break the type check.
  const specifier = `./${command}.js`;
  const mod = (await import(specifier)) as Partial<CommandModule>;
  if (typeof mod.run !== 'function') throw new Error(`command module ${specifier} exports no run()`);
  return mod as CommandModule;
}

async function help(): Promise<string> {
  const lines = ['Usage:'];
  const details: string[] = [];
  for (const [command, summary] of Object.entries(COMMANDS)) {
    if (commandFile(command) === undefined) continue;
    lines.push(`  alignvar ${command.padEnd(8)} ${summary}`);
    if (command === 'upscale' || command === 'info') {
      const usage = (await loadCommand(command))?.USAGE;
      if (usage) details.push(usage);
    }
  }
  lines.push('  alignvar --help | --version', '', 'Run "alignvar <command> --help" for the options of a command.');
  return `${lines.join('\n')}\n\n${details.join('\n')}`;
}

function version(): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/**
 * Runs one `alignvar` invocation.
 *
 * @param argv - The arguments after the program name.
 * @returns The exit status.
 */
async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case '--version':
      case '-v':
        process.stdout.write(`${version()}\n`);
        return 0;
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        process.stdout.write(await help());
        return command === undefined ? 2 : 0;
      default: {
        const mod = await loadCommand(command);
        if (mod === undefined) {
          const known = Object.keys(COMMANDS).filter((c) => commandFile(c) !== undefined);
          throw new UsageError(
            Object.hasOwn(COMMANDS, command)
              ? `the command ${JSON.stringify(command)} is not available in this build`
              : `unknown command ${JSON.stringify(command)} (commands: ${known.join(', ')})`,
          );
        }
        return await mod.run(rest);
      }
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      log(`alignvar: ${errorMessage(err)}\nRun "alignvar --help" for usage.`);
      return 2;
    }
    if (err instanceof Error && err.name === 'AbortError') {
      log('alignvar: interrupted');
      return 130;
    }
    log(`alignvar: error: ${errorMessage(err)}`);
    return 1;
  }
}

// First Ctrl-C: abort the command's work (it finishes cleanly and exits 130); a command that
// holds no interrupt signal, or a second Ctrl-C, ends the process at once with 130.
let interrupted = false;
process.on('SIGINT', () => {
  if (interrupted || !interrupt()) process.exit(130);
  interrupted = true;
});

process.exitCode = await main(process.argv.slice(2));
