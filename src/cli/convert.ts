/**
 * `alignvar convert --var VARSR.pth [--vae VQVAE.pth] -o model.safetensors [--dtype f32|bf16|f16]
 * [--no-refiner] [--patch-nums 1,2,...]`: argv -> {@link convertCheckpoint}; no logic of its own.
 * Prints one summary line on stderr; Ctrl-C stops the conversion and leaves no output.
 */
import { parseArgs } from 'node:util';

import { CONVERT_DTYPES, convertCheckpoint, type ConvertDType } from '../convert/index.js';
import { parsePatchNums } from '../model/schedule.js';
import { UsageError, interruptSignal, log } from './shared.js';

/** Usage text of `alignvar convert`. */
export const USAGE = `alignvar convert --var <VARSR.pth> [--vae <VQVAE.pth>] -o <model.safetensors> [options]
      --var <path>          transformer checkpoint: VARSR.pth (['trainer']['var_wo_ddp']), an AlignVAR
                            train_var.py checkpoint, a plain state dict or a .safetensors file
      --vae <path>          VQVAE checkpoint: VQVAE.pth (['trainer']['vae_local']), VAR's
                            vae_ch160v4096z32.pth or a .safetensors file (default: the one in --var)
  -o, --out <path>          output .safetensors model (written atomically)
      --dtype <f32|bf16|f16> precision of the weight matrices (default f32; biases, norms and
                            embeddings stay f32)
      --no-refiner          leave VARSR's diffusion refiner (diffloss.*, decoder_norm.*) out
      --patch-nums <list>   scale schedule to record (default: the checkpoint's, else
                            1,2,3,4,6,9,13,18,24,32)
`;

/**
 * Runs `alignvar convert`.
 *
 * @param argv - The arguments after `convert`.
 * @returns 0 when the file was written (errors are thrown: usage 2, others 1).
 */
export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      var: { type: 'string' },
      vae: { type: 'string' },
      out: { type: 'string', short: 'o' },
      dtype: { type: 'string' },
      'no-refiner': { type: 'boolean' },
      'patch-nums': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(`Usage:\n  ${USAGE}`);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  if (values.var === undefined) throw new UsageError('--var <checkpoint> is required');
  if (values.out === undefined) throw new UsageError('-o/--out <model.safetensors> is required');
  const dtype = values.dtype ?? 'f32';
  if (!(CONVERT_DTYPES as readonly string[]).includes(dtype))
    throw new UsageError(`--dtype must be one of ${CONVERT_DTYPES.join(', ')}, got ${JSON.stringify(dtype)}`);
  let patchNums: number[] | undefined;
  if (values['patch-nums'] !== undefined) {
    patchNums = parsePatchNums(values['patch-nums']);
    if (patchNums === undefined)
      throw new UsageError(
        `--patch-nums must be a comma-separated integer list, got ${JSON.stringify(values['patch-nums'])}`,
      );
  }
  const r = await convertCheckpoint({
    var: values.var,
    vae: values.vae,
    out: values.out,
    dtype: dtype as ConvertDType,
    refiner: !values['no-refiner'],
    patchNums,
    signal: interruptSignal(),
  });
  const c = r.config;
  log(
    `wrote ${r.out}: ${r.tensors} tensors, ${(r.bytes / 2 ** 20).toFixed(1)} MiB, depth ${c.depth}, width ${c.width}, ` +
      `scales ${c.patchNums.join(',')}, ${c.lrSize}->${c.hrSize} px, dtype ${dtype}, refiner ${r.refiner ? 'kept' : 'left out'}, ` +
      `${r.dropped.length} recomputable/encoder tensors dropped`,
  );
  return 0;
}
