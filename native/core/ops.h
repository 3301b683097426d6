// The op contract shared by every backend. One params struct per op; the model code
// (native/model) calls only these, through av_backend::compute(). Field names equal the
// keys of the JS objects that the `_ops` test export accepts (native/binding/test-ops.cc).
//
// Conventions for every op unless its comment says otherwise:
// - Shapes are written row-major, e.g. [M, K]; in av_tensor terms that is ne = {K, M}.
// - Every tensor must be contiguous (av_tensor_is_contiguous), f32, and live in the backend's
//   memory. Weight operands (`w`) may be f32, f16 or bf16; compute always accumulates in f32.
// - Optional operands are absent when their data pointer is null.
// - "row-group" broadcast: an operand g of shape [G, N] applied to x of shape [M, N] uses row
//   g[m / rows_per_group] for row m (AdaLN modulation: one row per image, broadcast over
//   tokens). rows_per_group = M means one row for all.
// - Output may alias an input only where stated ("in place ok").
// - Batch invariance: a row's result must not depend on how many other rows share the call.
//   For linear/conv with more than 64 rows per call, each output element's reduction order
//   is fixed by K alone (no M-dependent kernel choice or split-K). The model runs calls with
//   fewer rows one image at a time, so seeded outputs are identical across batch sizes.
// - Ordering: upload/copy/memset_zero/download and compute on one backend are executed in
//   call order (one stream on CUDA).
#pragma once

#include <cstdint>

#include "tensor.h"

enum av_op {
    AV_OP_LINEAR = 0,
    AV_OP_LAYERNORM,
    AV_OP_MODULATE,
    AV_OP_BINARY,
    AV_OP_UNARY,
    AV_OP_SOFTMAX,
    AV_OP_GROUPNORM,
    AV_OP_QKV_PREP,
    AV_OP_ATTN,
    AV_OP_CONV2D,
    AV_OP_RESAMPLE,
    AV_OP_VQ_LOOKUP,
    AV_OP_VQ_NEAREST,
    AV_OP_UPSAMPLE_ACCUM,
    AV_OP_SAMPLE,
    AV_OP_COPY,
    AV_OP_DIFFUSION_STEP,
    AV_OP_COUNT
};

const char* av_op_name(av_op op);
// Returns AV_OP_COUNT when the name is unknown.
av_op av_op_from_name(const char* name);

enum av_act {
    AV_ACT_NONE = 0,
    AV_ACT_GELU_TANH = 1,  // 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))
    AV_ACT_SILU = 2,       // x*sigmoid(x)
    AV_ACT_SIGMOID = 3,
};

// y = res + gate * act(x W^T + bias)       (each term only when present)
// x [batch, M, K]; w [batch_w, N, K] with batch_w in {1, batch} (1 = shared weights);
// bias [N]; gate [G, N] row-group broadcast within each batch item (rows_per_group);
// res [batch, M, N] (may alias y); y [batch, M, N].
// ne mapping: x.ne = {K, M, batch}, w.ne = {K, N, batch_w}, y.ne = {N, M, batch}.
struct av_linear_params {
    av_tensor x;
    av_tensor w;
    av_tensor bias;
    av_tensor gate;
    av_tensor res;
    av_tensor y;
    int32_t act = AV_ACT_NONE;
    int64_t rows_per_group = 1;
};

// y = LN(x) * (1 + scale) + shift  over the last axis C; biased variance, eps.
// x, y [M, C] (in place ok). Optional affine weight/bias [C] (applied before modulation:
// LN(x)*weight+bias). Optional scale/shift [G, C] with row-group broadcast.
struct av_layernorm_params {
    av_tensor x;
    av_tensor weight;
    av_tensor bias;
    av_tensor scale;
    av_tensor shift;
    av_tensor y;
    float eps = 1e-6f;
    int64_t rows_per_group = 1;
};

// y = x * (1 + scale) + shift, x/y [M, C] (in place ok), scale/shift [G, C] row-group broadcast.
struct av_modulate_params {
    av_tensor x;
    av_tensor scale;
    av_tensor shift;
    av_tensor y;
    int64_t rows_per_group = 1;
};

enum av_binary_kind {
    AV_BIN_ADD = 0,  // y = a + alpha*b
    AV_BIN_MUL = 1,  // y = a * (beta + alpha*b)
};

// Elementwise a (op) b with b broadcast: a, y [M, N] (in place ok); b [Mb, Nb] with
// Nb in {N, 1}; row m of a uses row (m / b_div) % Mb of b. With b_div = 1 this repeats b
// every Mb rows (position embeddings over a batch); with b_div = L it gives one row per
// image (per-image vectors over tokens).
struct av_binary_params {
    av_tensor a;
    av_tensor b;
    av_tensor y;
    int32_t kind = AV_BIN_ADD;
    float alpha = 1.0f;
    float beta = 1.0f;
    int64_t b_div = 1;
};

// y = act(x), any contiguous f32 shape (in place ok).
struct av_unary_params {
    av_tensor x;
    av_tensor y;
    int32_t act = AV_ACT_NONE;
};

// y = softmax(scale * x) over the last axis. x, y [M, N] (in place ok). -inf entries give 0;
// a row that is all -inf gives all zeros.
struct av_softmax_params {
    av_tensor x;
    av_tensor y;
    float scale = 1.0f;
};

// GroupNorm over [B, C, S] (S = H*W), `groups` groups of C/groups channels; biased
// variance, eps; affine weight/bias [C]; optional fused SiLU after the affine.
struct av_groupnorm_params {
    av_tensor x;
    av_tensor weight;
    av_tensor bias;
    av_tensor y;
    int32_t groups = 32;
    float eps = 1e-6f;
    int32_t silu = 0;
};

// Splits a fused qkv projection and prepares attention inputs (spec 4.2, 4.5):
//   qkv [R, L, 3, H, D]  (the output of mat_qkv, q|k|v, head-major within each)
//   q_out [R, H, L, D]
//   k_cache, v_cache [R, H, n_ctx, D], both f32 or both bf16 (the KV cache dtype): this
//   step's k and v are written at sequence positions [kv_pos, kv_pos + L). A bf16 cache
//   stores the f32 result rounded to nearest even (every other step is unchanged).
// With l2norm: q <- q/max(|q|,1e-12)*q_scale[h], k <- k/max(|k|,1e-12) per head vector.
// With rope (needs D % 4 == 0): rope_pos [L, 2] fp32 gives (tx, ty) per token; frequencies
// theta_i = rope_base^(-4i/D), i < D/4; pairs p < D/4 rotate by tx*theta_p, pairs p >= D/4
// by ty*theta_{p-D/4}; pair p is (x[2p], x[2p+1]); applied to q and k after the l2norm.
struct av_qkv_prep_params {
    av_tensor qkv;
    av_tensor q_scale;
    av_tensor rope_pos;
    av_tensor q_out;
    av_tensor k_cache;
    av_tensor v_cache;
    int64_t kv_pos = 0;
    int32_t l2norm = 1;
    int32_t rope = 1;
    float rope_base = 10000.0f;
};

// Attention over a KV cache (spec 4.5, 11.4; STYLE rule 5):
//   q [R, H, Lq, D]; k, v [R, H, n_ctx, D] of which the first n_kv positions are used;
//   k and v are both f32 or both bf16 (a bf16 KV cache; its values are widened to f32
//   exactly, so the op computes what it would on the f32 cache holding the same values);
//   o [R, Lq, H, D] (heads concatenated: [R, Lq, H*D]).
//   logit_ij = scale * q_i.k_j + kb_beta[h] * key_bias[r % Rb, j]  (bias only when present;
//   kb_beta absent = 1) and -inf where q_lvl[i] < k_lvl[j] (block-causal; both present or
//   both absent, i32). Online softmax in fp32; keys at -inf are skipped; a row with every key
//   masked gives o = 0.
//   key_bias [Rb, n_ctx] fp32 (CFG: Rb = B images, R = 2B rows share it as r % Rb).
struct av_attn_params {
    av_tensor q;
    av_tensor k;
    av_tensor v;
    av_tensor key_bias;
    av_tensor kb_beta;
    av_tensor q_lvl;
    av_tensor k_lvl;
    av_tensor o;
    int64_t n_kv = 0;
    float scale = 1.0f;
};

// 2-D convolution. x [B, Cin, H, W]; w [Cout, Cin, kh, kw] (f32|f16|bf16); bias [Cout];
// y [B, Cout, Ho, Wo] with Ho = (H + pad_t + pad_b - dil*(kh-1) - 1)/stride + 1.
// y = res + act(conv(x) + bias)   (res [B, Cout, Ho, Wo], may alias y; zero padding).
struct av_conv2d_params {
    av_tensor x;
    av_tensor w;
    av_tensor bias;
    av_tensor res;
    av_tensor y;
    int32_t stride = 1;
    int32_t pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
    int32_t dilation = 1;
    int32_t act = AV_ACT_NONE;
};

enum av_resample_mode {
    AV_RESAMPLE_BICUBIC = 0,      // PyTorch bicubic, A=-0.75, align_corners=False, clamped taps (spec 5.5)
    AV_RESAMPLE_AREA = 1,         // adaptive average pooling windows (spec 5.5)
    AV_RESAMPLE_NEAREST = 2,      // out[i] = in[floor(i*in/out)]
    AV_RESAMPLE_PIL_BICUBIC = 3,  // Pillow bicubic, a=-0.5, antialiased support, renormalised border taps (spec 2.1)
};

// Resample planes: x [N, H, W] -> y [N, Ho, Wo]. Separable: horizontal pass first.
struct av_resample_params {
    av_tensor x;
    av_tensor y;
    int32_t mode = AV_RESAMPLE_BICUBIC;
};

// Codebook gather: idx [B, T] i32 (T tokens per image) -> rows of codebook [V, Cv].
// channel_major = 0: y [B, T, Cv]; channel_major = 1: y [B, Cv, T] (a [B, Cv, pn, pn] map).
struct av_vq_lookup_params {
    av_tensor idx;
    av_tensor codebook;
    av_tensor y;
    int32_t channel_major = 1;
};

// Nearest code by squared L2 (ties to the lowest index): z [B, Cv, T] when channel_major,
// else [B, T, Cv]; codebook [V, Cv]; idx [B, T] i32.
struct av_vq_nearest_params {
    av_tensor z;
    av_tensor codebook;
    av_tensor idx;
    int32_t channel_major = 1;
};

// Residual accumulation of one scale (spec 5.4):
//   t = bicubic_up(h, G x G)                     h [B, Cv, pn, pn] -> [B, Cv, G, G]
//   t = (1 - phi_ratio) t + phi_ratio (conv3x3(t, phi_w) + phi_b)   when phi_w present
//   f_hat += t                                   f_hat [B, Cv, G, G]
//   next = area_down(f_hat, pn_next)^T            [B, pn_next^2, Cv] token-major, when present
struct av_upsample_accum_params {
    av_tensor h;
    av_tensor phi_w;
    av_tensor phi_b;
    av_tensor f_hat;
    av_tensor next;
    float phi_ratio = 0.5f;
    int32_t pn_next = 0;
};

// Sampling (spec 5.2, 5.3): logits [R, L, V] fp32.
//   cfg = 1: R = 2B and G = (1+t) Z[b] - t Z[B+b];  cfg = 0: R = B and G = Z.
//   top-k (k > 0) keeps ties at the k-th value; top-p (0 < p < 1) removes ascending
//   cumulative mass <= 1-p, always keeping the max. With top_k == 1 the result is the argmax
//   (lowest index among ties) and no random number is drawn.
//   Otherwise u = Philox4x32-10(key = seed, counter = (image_key[b], scale, position, 0)) in
//   [0,1) picks the smallest index whose inclusive prefix sum of probabilities exceeds u.
//   image_key [B] i32 identifies each image/tile independently of batch composition.
//   idx [B, L] i32.
struct av_sample_params {
    av_tensor logits;
    av_tensor image_key;
    av_tensor idx;
    int32_t cfg = 0;
    float t = 0.0f;
    int32_t top_k = 1;
    float top_p = 0.0f;
    uint64_t seed = 0;
    int32_t scale = 0;
};

// Strided copy with dtype conversion: x is any view (ne/nb), y is contiguous with the same
// ne. f32 <-> f16/bf16 conversions round to nearest even. Used for permutes.
struct av_copy_params {
    av_tensor x;
    av_tensor y;
};

// One step of the diffusion refiner's iDDPM ancestral sampler (spec 6.2, VARSR only).
//   x [N, Cv] (in/out), N = B * L rows with L = `tokens`: row r is token r % L of image r / L;
//   Cv even. image_key [B] i32.
//   o [halves * N, 2 * Cv]: the network's output on the rows [x ; x]; eps = o[:, :Cv],
//   v = o[:, Cv:]; halves = 2 under guidance (rows [N, 2N) are the negative half), else 1.
//   init = 1: x = noise(stream) and nothing else (o is not read): the initial draw.
//   Otherwise, per element, in fp32 with the constants as given (rounded from float64):
//     eps  = halves == 2 ? (1 + w) eps_c - w eps_n : eps_c
//     x0   = clamp(c_x * x - c_eps * eps, -1, 1)
//     mean = coef1 * x0 + coef2 * x
//     f    = (v_c + 1) / 2,  logvar = f * log_beta + (1 - f) * post_log_var
//     x    = noise ? mean + exp(0.5 * logvar) * n : mean           (v_c: the conditional half's v)
//   eps_out [N, Cv] (optional) receives the guided eps.
//   n (the project's departure from VARSR's global RNG, docs/decisions.md): Philox4x32-10 with
//   key (seed low 32 bits, seed high 32 bits) at counter (image_key[r / L], stream, r % L, q) for
//   channel pair q < Cv/2; output words x0, x1 give u1 = ((x0 >> 8) + 1) 2^-24 in (0, 1] and
//   u2 = (x1 >> 8) 2^-24; channel 2q = sqrt(-2 ln u1) cos(2 pi u2) and channel 2q + 1 the same
//   with sin, computed in float64 and rounded to f32. The refiner uses stream 0x100 + n.
struct av_diffusion_step_params {
    av_tensor x;
    av_tensor o;
    av_tensor image_key;
    av_tensor eps_out;
    int64_t tokens = 1;
    int32_t init = 0;
    int32_t noise = 1;
    int32_t halves = 1;
    int32_t stream = 0;
    uint64_t seed = 0;
    float w = 0.0f;
    float c_x = 1.0f;
    float c_eps = 0.0f;
    float coef1 = 1.0f;
    float coef2 = 0.0f;
    float log_beta = 0.0f;
    float post_log_var = 0.0f;
};
