/**
 * `alignvar info [--model <path>]`: the backends of this machine and a model's configuration,
 * printed to stdout. Text read from the model file is printed with control characters escaped.
 */
import { stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';

import { DEFAULT_MODEL_PATH, backendInfo, inspectModel } from '../upscaler.js';
import { UsageError, errorMessage, escapeControl } from './shared.js';

/** Usage text of `alignvar info`. */
export const USAGE = `alignvar info [--model <path>]
      --model <path>     also describe this model file (default: the embedded model, if present)
`;

/**
 * Runs `alignvar info`.
 *
 * @param argv - The arguments after `info`.
 * @returns 0, or 1 when the model file cannot be read.
 */
export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { model: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(`Usage:\n  ${USAGE}`);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const out: string[] = ['Backends:'];
  for (const b of backendInfo()) {
    const state = b.available ? 'available' : `unavailable: ${b.reason}`;
    out.push(`  ${b.name}: ${state}${b.detail ? ` (${b.detail})` : ''}`);
    for (const d of b.devices) {
      out.push(`    ${d.name}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB, compute capability ${d.computeCapability}`);
    }
  }
  let status = 0;
  const model =
    values.model ?? ((await stat(DEFAULT_MODEL_PATH).catch(() => undefined)) ? DEFAULT_MODEL_PATH : undefined);
  if (model === undefined) {
    out.push(`Model: none (the embedded model ${DEFAULT_MODEL_PATH} is not present; pass --model <path>)`);
  } else {
    try {
      const m = await inspectModel(model);
      const c = m.config;
      out.push(`Model: ${m.path}`);
      out.push(`  tile: ${c.lrSize}x${c.lrSize} -> ${c.hrSize}x${c.hrSize} (x${c.hrSize / c.lrSize})`);
      out.push(`  transformer: depth ${c.depth}, width ${c.width}, heads ${c.heads}, vocabulary ${c.vocab}`);
      out.push(
        `  scales: ${c.patchNums.join(',')}; SCA ${c.sca ? 'on' : 'off'}; default cfg ${m.defaultCfg}, colour fix ${m.defaultColorFix}`,
      );
      out.push(`  VQVAE: ${c.vqCh} channels x (${c.vqChMult.join(',')}), latent ${c.cvae}`);
      if (m.metadata.status) out.push(`  status: ${escapeControl(m.metadata.status)}`);
    } catch (err) {
      out.push(`Model: ${model}: ${escapeControl(errorMessage(err))}`);
      status = 1;
    }
  }
  process.stdout.write(`${out.join('\n')}\n`);
  return status;
}
