/** Error helpers: invalidOption messages, error classes, and rethrowNative's caller stacks. */
import { describe, expect, it } from 'vitest';

import {
  AlignvarError,
  NativeError,
  WeightsError,
  describeValue,
  invalidOption,
  rethrowNative,
} from '../../src/errors.js';

describe('invalidOption', () => {
  it('formats "Expected <what> for <name> but received <value>"', () => {
    const err = invalidOption('options.tileSize', 'an integer in [64, 1024]', 12.5);
    expect(err).toBeInstanceOf(TypeError);
    expect(err.message).toBe('Expected an integer in [64, 1024] for options.tileSize but received 12.5');
    expect(err.code).toBe('ERR_INVALID_OPTION');
  });

  it('renders values readably', () => {
    const msg = (v: unknown) => invalidOption('x', 'y', v).message.replace('Expected y for x but received ', '');
    expect(msg('cuda ')).toBe('"cuda "');
    expect(msg('a"b\n')).toBe('"a\\"b\\n"');
    expect(msg(3)).toBe('3');
    expect(msg(-0)).toBe('-0');
    expect(msg(Number.NaN)).toBe('NaN');
    expect(msg(-Infinity)).toBe('-Infinity');
    expect(msg(10n)).toBe('10n');
    expect(msg(true)).toBe('true');
    expect(msg(undefined)).toBe('undefined');
    expect(msg(null)).toBe('null');
    expect(msg(Symbol('s'))).toBe('Symbol(s)');
    expect(msg(function named() {})).toBe('[Function named]');
    expect(msg({ a: 1, b: 'two' })).toBe("{ a: 1, b: 'two' }");
    expect(msg([1, 2, 3])).toBe('[ 1, 2, 3 ]');
    expect(msg(new Float32Array(3))).toBe('Float32Array(3) [ 0, 0, 0 ]');
    expect(msg(new Float32Array(100))).toMatch(/^Float32Array\(100\) \[ 0, 0, 0, 0, 0, 0, 0, 0, \.\.\. 92 more items \]$/);
  });

  it('keeps long values short and on one line', () => {
    const long = describeValue('x'.repeat(1000));
    expect(long).toBe(`"${'x'.repeat(200)}"... (1000 characters)`);
    const nested = describeValue({ a: { b: { c: { d: 1 } } }, list: Array.from({ length: 50 }, (_, i) => `item-${i}`) });
    expect(nested).not.toContain('\n');
    expect(nested.length).toBeLessThanOrEqual(163);
  });

  it('starts the stack at the validating function', () => {
    function validateThing(): Error {
      return invalidOption('thing', 'a thing', 0);
    }
    const stack = validateThing().stack ?? '';
    expect(stack.split('\n')[1]).toContain('validateThing');
    expect(stack).not.toContain('at invalidOption');
  });
});

describe('error classes', () => {
  it('AlignvarError carries a code and a name', () => {
    const err = new AlignvarError('nope', 'ERR_X', { cause: 'why' });
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('AlignvarError');
    expect(err.code).toBe('ERR_X');
    expect(err.cause).toBe('why');
    expect(String(err)).toBe('AlignvarError: nope');
  });

  it('WeightsError names the file, the tensor and the problem', () => {
    const err = new WeightsError({
      file: '/x/y.safetensors',
      tensor: 'blocks.0.attn.mat_qkv.weight',
      problem: 'data offsets [0, 10) do not match shape [4608, 1536] x BF16 (14155776 bytes)',
    });
    expect(err).toBeInstanceOf(AlignvarError);
    expect(err.name).toBe('WeightsError');
    expect(err.code).toBe('ERR_INVALID_WEIGHTS');
    expect(err.message).toBe(
      'Invalid safetensors file /x/y.safetensors: tensor "blocks.0.attn.mat_qkv.weight": data offsets [0, 10) do not match shape [4608, 1536] x BF16 (14155776 bytes)',
    );
    expect(err.file).toBe('/x/y.safetensors');
    expect(err.tensor).toBe('blocks.0.attn.mat_qkv.weight');
    expect(err.problem).toMatch(/^data offsets/);
  });

  it('WeightsError without a tensor', () => {
    const err = new WeightsError({ file: 'w.safetensors', problem: 'the header length is 0' });
    expect(err.message).toBe('Invalid safetensors file w.safetensors: the header length is 0');
    expect(err.tensor).toBeUndefined();
  });
});

/** Rejects from the event loop, like an N-API AsyncWorker's OnError: no JS caller frames. */
function nativeReject(message: string, code?: string): Promise<never> {
  return new Promise((_, reject) => {
    setImmediate(() => {
      const err = new Error(message);
      if (code !== undefined) Object.assign(err, { code });
      reject(err);
    });
  });
}

describe('rethrowNative', () => {
  it('keeps the caller frame, the native message and the code', async () => {
    async function decodeLatentsForTest(): Promise<number> {
      return rethrowNative(nativeReject('cuda: out of memory', 'AV_OOM'));
    }
    const err = await decodeLatentsForTest().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NativeError);
    expect(err).toBeInstanceOf(AlignvarError);
    const native = err as NativeError;
    expect(native.name).toBe('NativeError');
    expect(native.message).toBe('cuda: out of memory');
    expect(native.code).toBe('AV_OOM');
    const stack = native.stack ?? '';
    expect(stack.split('\n')[0]).toBe('NativeError: cuda: out of memory');
    expect(stack.split('\n')[1]).toContain('decodeLatentsForTest');
    expect(stack).not.toContain('at rethrowNative');
    // The original rejection is kept as the cause, and its own stack lacks the caller.
    const cause = native.cause as Error;
    expect(cause).toBeInstanceOf(Error);
    expect(cause.message).toBe('cuda: out of memory');
    expect(cause.stack ?? '').not.toContain('decodeLatentsForTest');
  });

  it('uses ERR_NATIVE when the rejection has no code, and accepts non-Error rejections', async () => {
    const a = await rethrowNative(nativeReject('bad')).catch((e: unknown) => e);
    expect((a as NativeError).code).toBe('ERR_NATIVE');
    const b = await rethrowNative(Promise.reject('plain string')).catch((e: unknown) => e);
    expect(b).toBeInstanceOf(NativeError);
    expect((b as NativeError).message).toBe('plain string');
    expect((b as NativeError).cause).toBe('plain string');
  });

  it('resolves to the native value', async () => {
    await expect(rethrowNative(Promise.resolve(42))).resolves.toBe(42);
  });

  it('passes AlignvarErrors and AbortErrors through unchanged', async () => {
    const weights = new WeightsError({ file: 'f', problem: 'p' });
    await expect(rethrowNative(Promise.reject(weights))).rejects.toBe(weights);
    const abort = new DOMException('The operation was aborted', 'AbortError');
    await expect(rethrowNative(Promise.reject(abort))).rejects.toBe(abort);
  });
});
