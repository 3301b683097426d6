/**
 * A restricted pickle reader for the `data.pkl` of a torch zip checkpoint: it builds plain data
 * and never runs anything. Python's pickle turns `GLOBAL module name` + `REDUCE` into a call of
 * any importable function, which is how a `.pth` carries code; here a global is only a name, and
 * only the names a state dict and VAR's trainer dict need are accepted:
 *
 * - `collections.OrderedDict` (called with no or one list of pairs) -> a `Map`;
 * - `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` -> a {@link TensorRef};
 * - torch storage types (`torch.FloatStorage`, `torch.BFloat16Storage`, ...), only inside a
 *   persistent id `('storage', type, key, location, numel)` -> a {@link StorageRef} (one object per
 *   key, so shared storages stay shared);
 * - torch dtypes (`torch.float32`, ...) as inert values, `torch.device(...)` as an inert
 *   {@link PyObject} and `torch.Size(...)` as an array;
 * - `argparse.Namespace` (VARSR's `args`) as an inert {@link PyObject} whose attributes come from
 *   `BUILD`; `builtins.set` / `frozenset` as arrays.
 *
 * Any other global is refused at once with an error naming it (e.g. `posix.system`), before
 * anything is built from it. Dicts become `Map`s (keys may be ints), lists and tuples arrays,
 * ints numbers (bigints beyond 2^53), strs strings, bytes `Uint8Array`s.
 *
 * Opcodes: protocols 0-5 except the extension registry (EXT1/2/4), out-of-band buffers and the
 * instance opcodes INST/OBJ (only reachable through a refused class anyway).
 */

/** A torch storage referenced by a checkpoint: the zip record `data/<key>`. */
export interface StorageRef {
  readonly kind: 'storage';
  /** The record name under `<archive>/data/`. */
  readonly key: string;
  /** Element type (safetensors spelling). */
  readonly dtype: TorchDType;
  /** Elements in the storage. */
  readonly numel: number;
  /** Device it was saved from (`cpu`, `cuda:0`); informational. */
  readonly location: string;
}

/** A tensor of a checkpoint: a strided view of a storage. */
export interface TensorRef {
  readonly kind: 'tensor';
  readonly storage: StorageRef;
  /** Offset of element [0, ..., 0] in the storage, in elements. */
  readonly offset: number;
  readonly shape: readonly number[];
  /** Strides in elements. */
  readonly stride: readonly number[];
}

/** An inert Python object (only `argparse.Namespace` is built): class name and attributes. */
export interface PyObject {
  readonly kind: 'object';
  readonly cls: string;
  readonly attrs: Map<unknown, unknown>;
}

/** An accepted global used as a value (a dtype, a class that was not called). */
export interface PyGlobal {
  readonly kind: 'global';
  readonly name: string;
}

/** Element types of torch storages. */
export type TorchDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** Bytes per element. */
export const TORCH_DTYPE_SIZES: Readonly<Record<TorchDType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

const STORAGE_TYPES: Readonly<Record<string, TorchDType>> = {
  'torch.DoubleStorage': 'F64',
  'torch.FloatStorage': 'F32',
  'torch.HalfStorage': 'F16',
  'torch.BFloat16Storage': 'BF16',
  'torch.LongStorage': 'I64',
  'torch.IntStorage': 'I32',
  'torch.ShortStorage': 'I16',
  'torch.CharStorage': 'I8',
  'torch.ByteStorage': 'U8',
  'torch.BoolStorage': 'BOOL',
};

const INERT_GLOBALS = new Set([
  'torch.float64',
  'torch.float32',
  'torch.float16',
  'torch.bfloat16',
  'torch.int64',
  'torch.int32',
  'torch.int16',
  'torch.int8',
  'torch.uint8',
  'torch.bool',
]);

const CALLABLE_GLOBALS = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
  'argparse.Namespace',
  'torch.device',
  'torch.Size',
  'builtins.set',
  'builtins.frozenset',
  // Protocol-2 pickles of Python 3 name builtins through the 2.x module name.
  '__builtin__.set',
  '__builtin__.frozenset',
]);

/** A refused or malformed pickle: `message` names what and where (byte offset). */
export class PickleError extends Error {}
Object.defineProperty(PickleError.prototype, 'name', { value: 'PickleError', enumerable: false, writable: true });

function isGlobal(v: unknown, name?: string): v is PyGlobal {
  return (
    typeof v === 'object' &&
    v !== null &&
    (v as PyGlobal).kind === 'global' &&
    (name === undefined || (v as PyGlobal).name === name)
  );
}

function toInt(v: unknown, what: string): number {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
  throw new PickleError(
    `${what}: expected an integer but found ${typeof v === 'bigint' ? `${v}n` : (JSON.stringify(v) ?? typeof v)}`,
  );
}

function intList(v: unknown, what: string): number[] {
  if (!Array.isArray(v)) throw new PickleError(`${what}: expected a tuple of integers`);
  return v.map((x, i) => toInt(x, `${what}[${i}]`));
}

/** Little-endian two's-complement bytes -> number (safe) or bigint. */
function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
  if (b[b.length - 1]! & 0x80) n -= 1n << BigInt(8 * b.length);
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

/** Options of {@link unpickle}. */
export interface UnpickleOptions {
  /** Where the pickle came from, for messages (e.g. `VARSR.pth: archive/data.pkl`). */
  source: string;
}

/**
 * Reads one pickle with the restricted globals above.
 *
 * @param data - The pickle bytes.
 * @returns The top-level value; tensors are {@link TensorRef}s pointing at zip records.
 * @throws PickleError for a refused global, an unsupported opcode or malformed data.
 */
export function unpickle(data: Uint8Array, options: UnpickleOptions): unknown {
  const src = options.source;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const text = new TextDecoder('utf-8', { fatal: true });
  const latin1 = new TextDecoder('latin1');
  const storages = new Map<string, StorageRef>();
  const memo = new Map<number, unknown>();
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  let pos = 0;
  let at = 0;

  const fail = (msg: string): never => {
    throw new PickleError(`${src}: ${msg} (pickle byte ${at})`);
  };
  const need = (n: number): void => {
    if (pos + n > data.length) fail('the pickle ends in the middle of an opcode');
  };
  const u8 = (): number => {
    need(1);
    return data[pos++]!;
  };
  const u16 = (): number => {
    need(2);
    const v = view.getUint16(pos, true);
    pos += 2;
    return v;
  };
  const u32 = (): number => {
    need(4);
    const v = view.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const i32 = (): number => {
    need(4);
    const v = view.getInt32(pos, true);
    pos += 4;
    return v;
  };
  const u64 = (): number => {
    need(8);
    const v = view.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(data.length)) fail('a length beyond the end of the pickle');
    return Number(v);
  };
  const bytes = (n: number): Uint8Array => {
    need(n);
    const b = data.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const line = (): string => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail('a text opcode without a newline');
    const s = latin1.decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const utf8 = (b: Uint8Array): string => {
    try {
      return text.decode(b);
    } catch {
      return fail('a string that is not valid UTF-8');
    }
  };
  const pop = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = marks.pop();
    if (prev === undefined) fail('no MARK to pop to');
    stack = prev!;
    return items;
  };
  const memoGet = (i: number): unknown => {
    if (!memo.has(i)) fail(`memo entry ${i} was never stored`);
    return memo.get(i);
  };

  const resolveGlobal = (module: string, name: string): PyGlobal => {
    const full = `${module}.${name}`;
    if (CALLABLE_GLOBALS.has(full) || INERT_GLOBALS.has(full) || Object.hasOwn(STORAGE_TYPES, full))
      return { kind: 'global', name: full };
    return fail(
      `refused global ${full}: a state dict needs only collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch storage types, and nothing in a checkpoint is ever run`,
    );
  };

  const persistent = (pid: unknown): StorageRef => {
    if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== 'storage')
      return fail(`a persistent id that is not ('storage', type, key, location, numel)`);
    const [, type, key, location, numel] = pid as unknown[];
    if (!isGlobal(type) || !Object.hasOwn(STORAGE_TYPES, type.name))
      return fail(`a persistent id whose storage type is not a torch storage class`);
    if (typeof key !== 'string' || !/^[A-Za-z0-9_]+$/.test(key)) return fail(`a storage key that is not a plain name`);
    const n = toInt(numel, `${src}: storage ${key} numel`);
    const dtype = STORAGE_TYPES[type.name]!;
    const old = storages.get(key);
    if (old !== undefined) {
      if (old.dtype !== dtype || old.numel !== n)
        fail(`storage ${key} is declared twice with different types or sizes`);
      return old;
    }
    const ref: StorageRef = { kind: 'storage', key, dtype, numel: n, location: String(location) };
    storages.set(key, ref);
    return ref;
  };

  const call = (fn: unknown, args: unknown): unknown => {
    if (!isGlobal(fn) || !CALLABLE_GLOBALS.has(fn.name))
      return fail(`REDUCE on ${isGlobal(fn) ? fn.name : 'a value that is not a callable global'}`);
    if (!Array.isArray(args)) return fail(`REDUCE arguments of ${fn.name} are not a tuple`);
    switch (fn.name) {
      case 'collections.OrderedDict': {
        const m = new Map<unknown, unknown>();
        if (args.length === 1 && Array.isArray(args[0]))
          for (const kv of args[0] as unknown[]) {
            if (!Array.isArray(kv) || kv.length !== 2) fail('OrderedDict items that are not pairs');
            m.set((kv as unknown[])[0], (kv as unknown[])[1]);
          }
        else if (args.length !== 0) fail('OrderedDict called with unexpected arguments');
        return m;
      }
      case 'torch._utils._rebuild_tensor_v2': {
        if (args.length < 4) return fail('_rebuild_tensor_v2 with fewer than 4 arguments');
        const storage = args[0] as StorageRef;
        if (typeof storage !== 'object' || storage === null || storage.kind !== 'storage')
          return fail('_rebuild_tensor_v2 on something that is not a storage');
        const offset = toInt(args[1], `${src}: tensor storage offset`);
        const shape = intList(args[2], `${src}: tensor size`);
        const stride = intList(args[3], `${src}: tensor stride`);
        if (shape.length !== stride.length) fail(`a tensor with ${shape.length} sizes but ${stride.length} strides`);
        if (shape.some((d) => d < 0) || stride.some((d) => d < 0) || offset < 0)
          fail('a tensor with negative sizes, strides or offset');
        if (!shape.includes(0)) {
          let last = offset;
          for (let i = 0; i < shape.length; i++) last += (shape[i]! - 1) * stride[i]!;
          if (last >= storage.numel)
            fail(
              `a tensor view [${shape.join(', ')}] (offset ${offset}, strides [${stride.join(', ')}]) reaching element ${last} of storage record data/${storage.key}, which holds ${storage.numel} elements`,
            );
        }
        const t: TensorRef = { kind: 'tensor', storage, offset, shape, stride };
        return t;
      }
      case 'torch._utils._rebuild_parameter':
      case 'torch._utils._rebuild_parameter_with_state': {
        const t = args[0] as TensorRef;
        if (typeof t !== 'object' || t === null || t.kind !== 'tensor')
          return fail(`${fn.name} on something that is not a tensor`);
        return t;
      }
      case 'torch.device':
        // torch.device('cuda', 0) in optimizer or args data: an inert record of its arguments.
        return { kind: 'object', cls: fn.name, attrs: new Map(args.map((a, i) => [i, a])) } satisfies PyObject;
      case 'torch.Size':
        if (args.length === 1 && Array.isArray(args[0])) return [...(args[0] as unknown[])];
        return fail('torch.Size called with unexpected arguments');
      case 'argparse.Namespace':
        if (args.length !== 0) fail('argparse.Namespace called with positional arguments');
        return { kind: 'object', cls: fn.name, attrs: new Map() } satisfies PyObject;
      default:
        // set / frozenset
        if (args.length === 0) return [];
        if (args.length === 1 && Array.isArray(args[0])) return [...(args[0] as unknown[])];
        return fail(`${fn.name} called with unexpected arguments`);
    }
  };

  const build = (obj: unknown, state: unknown): void => {
    if (typeof obj === 'object' && obj !== null && (obj as PyObject).kind === 'object') {
      if (!(state instanceof Map)) fail(`BUILD of ${(obj as PyObject).cls} with a state that is not a dict`);
      for (const [k, v] of state as Map<unknown, unknown>) (obj as PyObject).attrs.set(k, v);
      return;
    }
    // OrderedDict state dicts carry `_metadata` (module versions) as instance attributes: inert,
    // dropped. Tensors have no BUILD in torch's format.
    if (obj instanceof Map) return;
    fail('BUILD on a value that is not an accepted object');
  };

  const setItems = (d: unknown, items: unknown[]): void => {
    if (!(d instanceof Map)) fail('SETITEM(S) on a value that is not a dict');
    if (items.length % 2 !== 0) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < items.length; i += 2) (d as Map<unknown, unknown>).set(items[i], items[i + 1]);
  };

  for (;;) {
    at = pos;
    if (pos >= data.length) fail('the pickle ends before its STOP opcode (truncated)');
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail('pickle protocol above 5');
        break;
      case 0x95: // FRAME
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length !== 0) fail('STOP with a stack that does not hold exactly one value');
        return stack[0];
      case 0x28: // MARK
        marks.push(stack);
        stack = [];
        break;
      case 0x30: // POP
        if (stack.length > 0) stack.pop();
        else popMark();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        stack.push(i32());
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(decodeLong(bytes(u8())));
        break;
      case 0x8b: {
        // LONG4
        const n = i32();
        if (n < 0) fail('LONG4 with a negative length');
        stack.push(decodeLong(bytes(n)));
        break;
      }
      case 0x49: {
        // INT (text): also True/False as 01/00
        const s = line().trim();
        if (s === '01') stack.push(true);
        else if (s === '00') stack.push(false);
        else if (/^[+-]?\d+$/.test(s)) stack.push(Number.isSafeInteger(Number(s)) ? Number(s) : BigInt(s));
        else fail(`INT ${JSON.stringify(s)}`);
        break;
      }
      case 0x4c: {
        // LONG (text)
        const s = line().trim().replace(/L$/, '');
        if (!/^[+-]?\d+$/.test(s)) fail(`LONG ${JSON.stringify(s)}`);
        stack.push(Number.isSafeInteger(Number(s)) ? Number(s) : BigInt(s));
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(view.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x46: {
        // FLOAT (text)
        const v = Number(line().trim());
        if (Number.isNaN(v)) fail('FLOAT that is not a number');
        stack.push(v);
        break;
      }
      case 0x58: // BINUNICODE
        stack.push(utf8(bytes(u32())));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(utf8(bytes(u8())));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(utf8(bytes(u64())));
        break;
      case 0x56: // UNICODE (raw-unicode-escape; ASCII subset suffices here)
        stack.push(line());
        break;
      case 0x54: {
        // BINSTRING
        const n = i32();
        if (n < 0) fail('BINSTRING with a negative length');
        stack.push(latin1.decode(bytes(n)));
        break;
      }
      case 0x55: // SHORT_BINSTRING
        stack.push(latin1.decode(bytes(u8())));
        break;
      case 0x53: {
        // STRING (text, quoted)
        const s = line();
        stack.push(s.replace(/^(['"])(.*)\1$/, '$2'));
        break;
      }
      case 0x42: // BINBYTES
        stack.push(bytes(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()).slice());
        break;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        stack.push(bytes(u64()).slice());
        break;
      case 0x29: // EMPTY_TUPLE
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x8f: // EMPTY_SET
        stack.push([]);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x74: // TUPLE
      case 0x6c: // LIST
      case 0x91: {
        // FROZENSET (popMark replaces `stack`: take the items before pushing)
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x64: {
        // DICT
        const items = popMark();
        const m = new Map();
        setItems(m, items);
        stack.push(m);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop();
        const l = top();
        if (!Array.isArray(l)) fail('APPEND to a value that is not a list');
        (l as unknown[]).push(v);
        break;
      }
      case 0x65: // APPENDS
      case 0x90: {
        // ADDITEMS
        const items = popMark();
        const l = top();
        if (!Array.isArray(l)) fail('APPENDS to a value that is not a list');
        (l as unknown[]).push(...items);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x63: {
        // GLOBAL
        const module = line();
        const name = line();
        stack.push(resolveGlobal(module, name));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL without string names');
        stack.push(resolveGlobal(module as string, name as string));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x81: {
        // NEWOBJ: cls.__new__(cls, *args); only the accepted classes, built as by a call
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x92: {
        // NEWOBJ_EX
        const kwargs = pop();
        const args = pop();
        if (!(kwargs instanceof Map) || kwargs.size !== 0) fail('NEWOBJ_EX with keyword arguments');
        stack.push(call(pop(), args));
        break;
      }
      case 0x62: {
        // BUILD
        const state = pop();
        build(top(), state);
        break;
      }
      case 0x51: // BINPERSID
        stack.push(persistent(pop()));
        break;
      case 0x50: // PERSID (text ids are not torch's)
        fail('a text persistent id (PERSID); torch writes BINPERSID');
        break;
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x70: // PUT
        memo.set(toInt(Number(line()), 'PUT index'), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
        stack.push(memoGet(u8()));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(memoGet(u32()));
        break;
      case 0x67: // GET
        stack.push(memoGet(toInt(Number(line()), 'GET index')));
        break;
      case 0x69: {
        // INST: a class instantiation by name; resolveGlobal refuses anything not accepted
        const g = resolveGlobal(line(), line());
        const v = call(g, popMark());
        stack.push(v);
        break;
      }
      default:
        fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')}`);
    }
  }
}
