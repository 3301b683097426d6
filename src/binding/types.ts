/**
 * The typed native contract: the only file that names the addon's exports.
 * Shapes are row-major; tensors are typed arrays with a dtype tag.
 */

/** Element type of a native tensor. */
export type DType = 'f32' | 'f16' | 'bf16' | 'i32' | 'u8';

/** A tensor handed to native code: a typed array plus its row-major shape. */
export interface NativeTensor {
  data: Float32Array | Uint16Array | Int32Array | Uint8Array;
  shape: number[];
  dtype?: DType;
}

/** One compute device of a backend. */
export interface DeviceInfo {
  name: string;
  /** Bytes of device memory. */
  totalMemory: number;
  /** e.g. "9.0" */
  computeCapability: string;
}

/** What one backend of this build can do on this machine. */
export interface BackendInfo {
  name: 'cpu' | 'cuda';
  /** Whether this build contains the backend. */
  compiled: boolean;
  /** Whether it can be used on this machine now. */
  available: boolean;
  /** Why it is unavailable; empty when available. */
  reason: string;
  /** Backend details, e.g. the CPU's SIMD level and thread count. */
  detail: string;
  devices: DeviceInfo[];
}

/** Names of the ops of native/core/ops.h. */
export type OpName =
  | 'linear'
  | 'layernorm'
  | 'modulate'
  | 'binary'
  | 'unary'
  | 'softmax'
  | 'groupnorm'
  | 'qkv_prep'
  | 'attn'
  | 'conv2d'
  | 'resample'
  | 'vq_lookup'
  | 'vq_nearest'
  | 'upsample_accum'
  | 'sample'
  | 'copy';

/** Op parameters: keys equal the C++ field names of the op's params struct. */
export type OpParams = Record<string, NativeTensor | number | bigint | undefined>;

/** The addon's exports. */
export interface NativeAddon {
  backendInfo(): BackendInfo[];
  /** Test-only: run one op on a backend over typed arrays; outputs are written in place. */
  _ops(backend: string, op: OpName, params: OpParams, repeat?: number): Promise<void>;
  /** Test-only: OpenBLAS sgemm c = a b^T, for benchmarks. */
  _blasSgemm(params: {
    a: NativeTensor;
    b: NativeTensor;
    c: NativeTensor;
    M: number;
    N: number;
    K: number;
    repeat?: number;
  }): Promise<void>;
}
