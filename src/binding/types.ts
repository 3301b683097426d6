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
  | 'copy'
  | 'diffusion_step';

/** Op parameters: keys equal the C++ field names of the op's params struct. */
export type OpParams = Record<string, NativeTensor | number | bigint | undefined>;

/** The addon's exports. */
export interface NativeAddon {
  backendInfo(): BackendInfo[];
  /**
   * Where to look first for the CUDA backend library (libav_cuda.so); otherwise only next to
   * the addon. Returns false (changing nothing) once the library has been looked for.
   */
  setCudaLibrary(path: string): boolean;
  /**
   * Test-only (dev builds, CMake AV_TEST_BINDINGS; absent from release builds and prebuilds):
   * run one op on a backend over typed arrays; outputs are written in place.
   */
  _ops(backend: string, op: OpName, params: OpParams, repeat?: number): Promise<void>;
  /** Test-only (dev builds, like `_ops`): OpenBLAS sgemm c = a b^T, for benchmarks. */
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

/** Model hyper-parameters handed to the native session (keys = av_model_config fields). */
export interface NativeModelConfig {
  depth: number;
  width: number;
  heads: number;
  mlp_hidden: number;
  vocab: number;
  cvae: number;
  num_classes: number;
  patch_nums: number[];
  cond_ch: number[];
  vq_ch: number;
  vq_ch_mult: number[];
  vq_num_res: number;
  vq_attn_at_lowest: boolean;
  n_phi: number;
  quant_resi: number;
  rope_base: number;
  sca: boolean;
  /** RoPE coordinates [seqLen, 2] from src/model/schedule.ts. */
  rope: Float32Array;
  /** Phi conv index per scale (-1 at the last scale). */
  phi_index: Int32Array;
  /** LR-conditioned decoder (metadata decoder_lr). */
  decoder_lr?: boolean;
  /** Token mode "mean" (metadata token_mode). */
  token_mean?: boolean;
  /** VARSR refiner width W and block count (spec 6.1); 0 / absent: no refiner stage. */
  refiner_width?: number;
  refiner_blocks?: number;
  /** KV cache dtype (a session setting, not from the file). Default 'f32'. */
  kv_dtype?: 'f32' | 'bf16';
}

/** One batch of LR tiles and its sampling settings (keys = av_prepare_args fields). */
export interface NativePrepareArgs {
  /** u8 RGB [B, h, w, 3]. */
  lr: NativeTensor;
  /** Sampler key per tile [B]. */
  image_keys: Int32Array;
  seed: bigint;
  /** Guidance weight; 0 runs without the negative half. */
  cfg: number;
  top_k: number;
  top_p: number;
  /** Keep host copies of intermediates for `_debug`. */
  debug?: boolean;
}

/** A named engine intermediate (test-only). */
export interface NativeDebugTensor {
  data: Float32Array;
  shape: number[];
}

/** Sizes reported by `Session.info()`. */
export interface NativeSessionInfo {
  disposed: boolean;
  backend?: string;
  /** Absent while a call is running. */
  weight_bytes?: number;
  state_bytes?: number;
  hr_size?: number;
}

/**
 * The native session (native/binding/session.h): one model on one backend plus the batch
 * being upscaled. Calls must not overlap; every compute method returns a Promise.
 */
export interface NativeSession {
  /** Uploads one weight; `tensor.data` may be released once the promise settles. */
  loadTensor(name: string, tensor: NativeTensor): Promise<void>;
  /** Resolves all weights, checks backend support, precomputes the AdaLN modulation. */
  finalize(): Promise<void>;
  /** LR preprocessing, conditioning net, SCA masks and the prefix of a new batch. */
  prepare(args: NativePrepareArgs): Promise<void>;
  /** Runs scale `si` (0..K-1 in order); resolves with the sampled tokens [B, pn^2]. */
  step(si: number): Promise<Int32Array>;
  /** The refiner stage (sessions created with refiner_width > 0), after the last step. */
  refine(): Promise<void>;
  /** Decodes the batch: u8 RGB [B, S, S, 3]. */
  /** residual_scale > 0: residual latent, output = 2 * up01 - 1 + residual_scale * decoder (before the clamp). */
  decode(args?: { color_fix?: 'adain' | 'wavelet' | 'none'; residual_scale?: number }): Promise<Uint8Array>;
  /**
   * Test-only: a named intermediate (hr_in, up01, lr_tokens, sg, masks, key_bias, prefix_x,
   * x, logits, f_hat, decoded; with the refiner refiner_z, refiner_noise, refiner_eps,
   * refiner_x); see native/model/engine.cc.
   */
  _debug(name: string): Promise<NativeDebugTensor>;
  info(): NativeSessionInfo;
  /** Releases the weights, caches and backend. */
  dispose(): Promise<void>;
}

/** Constructor of {@link NativeSession}: backend 'cpu' | 'cuda', CUDA device index. */
export type NativeSessionConstructor = new (
  backend: string,
  device: number,
  config: NativeModelConfig,
) => NativeSession;

// Declaration merging: the Session class export.
export interface NativeAddon {
  Session: NativeSessionConstructor;
}
