// qkv_prep and flash attention (spec 4.2, 4.5, 11.4; STYLE rule 5).
//
// qkv_prep: one block per token (r, l). The token's RoPE table (D/2 angles) is built in
//   shared memory exactly as native/cpu/attn.cc builds it: theta_i = 1 / fp32(pow(base,
//   fp32(4i) / D)), phi = fp32(t * theta), cos/sin evaluated in double and rounded, so both
//   backends use bit-identical tables. Then one warp per (head, q|k|v) vector: the squared
//   norm is summed in double (as the CPU does), the scale applied, the pairs rotated with
//   explicitly rounded multiplies/adds (no FMA contraction, matching the CPU's plain fp32),
//   and the results written to q_out [R, H, L, D] and to the caches [R, H, n_ctx, D] at
//   kv_pos + l. v is copied. A bf16 cache (template KV) stores each f32 result rounded to
//   nearest even, as the CPU does.
//
// Every attention kernel is templated on the cache dtype KV (float or __nv_bfloat16, ops.h):
//   K/V elements are widened to f32 exactly when they are loaded, so a bf16 cache only halves
//   the bytes read; the math after the load is the same.
//
// attn, D = 64 fast path (attn_d64_kernel): FlashAttention-2 style. Grid (ceil(Lq / (16 NW)),
//   H, R), NW warps per block, each warp owns 16 query rows for the whole key loop. Q is
//   loaded once from global straight into mma A fragments (f16). Keys/values stream in tiles
//   of 64: the f32 cache rows are loaded into registers (one tile ahead, in flight during the
//   math, for 8-warp blocks), converted to f16 and stored k-contiguous in shared memory (rows padded to 72
//   halves, conflict-free ldmatrix). S = Q K^T (mma m16n8k16, f32 accumulate), then in fp32:
//   s = scale * S + beta[h] * key_bias[r % Rb, j] (a -inf bias stays -inf whatever beta),
//   -inf where q_lvl[i] < k_lvl[j] or j >= n_kv; online softmax with the running max m and
//   sum l per row (a row that has seen only -inf keeps m = -inf and exponentiates against 0,
//   so no inf - inf NaN; l == 0 at the end gives o = 0); P is rounded to f16 in registers and
//   reused as the A operand of O += P V (V via ldmatrix.trans). A warp whose 16 rows are all
//   below every key level of a tile skips that tile (block-causal). f16 rather than bf16:
//   4x finer rounding of q.k at the temperatures s_h <= 100 of l2-normalised attention, and
//   the reference ran fp16 autocast; element magnitudes must stay below 65504.
// attn, generic D (attn_generic_kernel, e.g. the VQVAE's single head D = 640): exact fp32.
//   Grid (ceil(Lq / 16), H, R), 128 threads; 16 queries per block, keys in tiles of 32.
//   Q and the unnormalised output rows live in dynamic shared memory (2 * 16 * D floats);
//   thread t computes 4 scores (queries 4 (t / 32) .. +3, key t % 32) reading K from global
//   (each K row serves 4 queries), one warp per 4 rows does the online softmax, and each
//   thread updates output columns d = t, t + 128, ... of all 16 rows reading V once per block.
//
// Reference: native/cpu/attn.cc (same masking, bias and -inf rules); FlashAttention-2 (Dao,
//   2023) for the tiling; flash-attention csrc/flash_attn/src/softmax.h for the fragment-level
//   online softmax.
#include "attn.cuh"
#include "core/ops-check.h"

namespace {

constexpr float k_log2e = 1.4426950408889634f;

// ---- KV cache elements: f32 or bf16, widened to f32 exactly on load ---------------------------

template <typename KV>
__device__ __forceinline__ float4 kv_load4(const KV* p);
template <>
__device__ __forceinline__ float4 kv_load4<float>(const float* p) {
    return *reinterpret_cast<const float4*>(p);
}
// Four bf16 (8-byte aligned): element 0 is the low half of the first word (little endian).
template <>
__device__ __forceinline__ float4 kv_load4<__nv_bfloat16>(const __nv_bfloat16* p) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                       __uint_as_float(u.y & 0xffff0000u));
}
__device__ __forceinline__ void kv_store(float* p, float x) { *p = x; }
__device__ __forceinline__ void kv_store(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

// ---- qkv_prep --------------------------------------------------------------------------------

// blockIdx.x = token t = r*L + l. Dynamic smem: cs[D/2], sn[D/2] floats.
template <typename KV>
__global__ void qkv_prep_kernel(const float* __restrict__ qkv, const float* __restrict__ q_scale,
                                const float* __restrict__ rope_pos, float* __restrict__ q_out,
                                KV* __restrict__ k_cache, KV* __restrict__ v_cache, int64_t L, int H, int D,
                                int64_t n_ctx, int64_t kv_pos, bool l2, bool rope, float base) {
    extern __shared__ float tab[];
    float* cs = tab;
    float* sn = tab + D / 2;
    const int64_t tok = blockIdx.x;
    const int64_t r = tok / L, l = tok % L;
    const int half = D / 2, n4 = D / 4;
    if (rope) {
        const float tx = rope_pos[2 * l], ty = rope_pos[2 * l + 1];
        for (int p = threadIdx.x; p < half; p += blockDim.x) {
            const int i = p < n4 ? p : p - n4;
            const float e = __fdiv_rn(static_cast<float>(4 * i), static_cast<float>(D));
            const float pw = static_cast<float>(pow(static_cast<double>(base), static_cast<double>(e)));
            const float theta = __fdiv_rn(1.0f, pw);
            const float phi = __fmul_rn(p < n4 ? tx : ty, theta);
            cs[p] = static_cast<float>(cos(static_cast<double>(phi)));
            sn[p] = static_cast<float>(sin(static_cast<double>(phi)));
        }
    }
    __syncthreads();
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE, nwarps = blockDim.x / WARP_SIZE;
    const float* src_tok = qkv + tok * 3 * H * D;  // [3, H, D]
    for (int item = warp; item < 3 * H; item += nwarps) {
        const int which = item / H, h = item % H;  // 0 = q, 1 = k, 2 = v
        const float* src = src_tok + static_cast<int64_t>(item) * D;
        // q goes to q_out (f32), k and v to the cache (KV).
        float* qd = which == 0 ? q_out + ((r * H + h) * L + l) * D : nullptr;
        KV* kvd = which == 0 ? nullptr : (which == 1 ? k_cache : v_cache) + ((r * H + h) * n_ctx + kv_pos + l) * D;
        auto put = [&](int d, float x) {
            if (qd) qd[d] = x;
            else kv_store(kvd + d, x);
        };
        if (which == 2) {
            for (int d = lane; d < D; d += WARP_SIZE) put(d, src[d]);
            continue;
        }
        float mul = 1.0f;
        if (l2) {
            double s = 0.0;
            for (int d = lane; d < D; d += WARP_SIZE) s += static_cast<double>(src[d]) * src[d];
            s = warp_reduce_sum(s);
            const double nrm = sqrt(s);
            mul = static_cast<float>(1.0 / (nrm > 1e-12 ? nrm : 1e-12));
            if (which == 0 && q_scale) mul = __fmul_rn(mul, q_scale[h]);
        }
        if (rope) {
            for (int p = lane; p < half; p += WARP_SIZE) {
                const float a = __fmul_rn(src[2 * p], mul), b = __fmul_rn(src[2 * p + 1], mul);
                put(2 * p, __fsub_rn(__fmul_rn(a, cs[p]), __fmul_rn(b, sn[p])));
                put(2 * p + 1, __fadd_rn(__fmul_rn(a, sn[p]), __fmul_rn(b, cs[p])));
            }
        } else {
            for (int d = lane; d < D; d += WARP_SIZE) put(d, __fmul_rn(src[d], mul));
        }
    }
}

// ---- attention, shared pieces ----------------------------------------------------------------

struct attn_args {
    const float* q;         // [R, H, Lq, D]
    const void* k;          // [R, H, n_ctx, D], f32 or bf16 (the kernels' KV)
    const void* v;
    const float* key_bias;  // [Rb, n_ctx] or null
    const float* kb_beta;   // [H] or null (= 1)
    const int32_t* q_lvl;   // [Lq] or null
    const int32_t* k_lvl;   // [n_ctx] or null
    float* o;               // [R, Lq, H, D]
    int64_t Lq, n_ctx, n_kv, Rb;
    int H, D;
    float scale;
};

// beta * bias of key j (0 without a bias); -inf past n_kv; a -inf bias stays -inf.
__device__ __forceinline__ float attn_key_bias(const attn_args& a, const float* kbias, float beta, int64_t j) {
    if (j >= a.n_kv) return -INFINITY;
    if (!kbias) return 0.0f;
    const float b = kbias[j];
    return b == -INFINITY ? -INFINITY : beta * b;
}

// ---- attention, D = 64, tensor cores ---------------------------------------------------------

constexpr int A_D = 64;
constexpr int A_BC = 64;        // keys per tile
constexpr int A_LDK = A_D + 8;  // padded smem row (halves)

template <int NW, bool HAS_MASK, typename KV>
__global__ void __launch_bounds__(NW* WARP_SIZE) attn_d64_kernel(attn_args a) {
    constexpr int NT = NW * WARP_SIZE;
    constexpr int KV4 = A_BC * A_D / 4 / NT;  // float4 groups of K (and of V) per thread per tile
    __shared__ __align__(128) uint16_t Ks[A_BC * A_LDK];
    __shared__ __align__(128) uint16_t Vs[A_BC * A_LDK];
    __shared__ float bias_s[A_BC];
    __shared__ int klvl_s[A_BC];

    const int r = blockIdx.z, h = blockIdx.y;
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int g = lane / 4, t = lane % 4;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * NW * 16 + warp * 16;
    const int64_t ra = row0 + g, rb = row0 + g + 8;  // this thread's two query rows
    const int64_t bh = static_cast<int64_t>(r) * a.H + h;
    const float* qb = a.q + bh * a.Lq * A_D;
    const KV* kb = static_cast<const KV*>(a.k) + bh * a.n_ctx * A_D;
    const KV* vb = static_cast<const KV*>(a.v) + bh * a.n_ctx * A_D;
    const float* kbias = a.key_bias ? a.key_bias + (r % a.Rb) * a.n_ctx : nullptr;
    const float beta = a.kb_beta ? a.kb_beta[h] : 1.0f;
    const float sl2 = a.scale * k_log2e;  // scores are kept in the log2 domain (exp2f)

    // Q fragments for the 4 k16 steps over d.
    uint32_t qf[4][4];
    {
        const bool oka = ra < a.Lq, okb = rb < a.Lq;
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
            const int d = ks * 16 + 2 * t;
            float2 x0 = oka ? *reinterpret_cast<const float2*>(qb + ra * A_D + d) : make_float2(0.f, 0.f);
            float2 x1 = okb ? *reinterpret_cast<const float2*>(qb + rb * A_D + d) : make_float2(0.f, 0.f);
            float2 x2 = oka ? *reinterpret_cast<const float2*>(qb + ra * A_D + d + 8) : make_float2(0.f, 0.f);
            float2 x3 = okb ? *reinterpret_cast<const float2*>(qb + rb * A_D + d + 8) : make_float2(0.f, 0.f);
            qf[ks][0] = av_pack2<__half>(x0.x, x0.y);
            qf[ks][1] = av_pack2<__half>(x1.x, x1.y);
            qf[ks][2] = av_pack2<__half>(x2.x, x2.y);
            qf[ks][3] = av_pack2<__half>(x3.x, x3.y);
        }
    }
    int qla = 0, qlb = 0, warp_qmax = 0;
    if constexpr (HAS_MASK) {
        qla = a.q_lvl[ra < a.Lq ? ra : a.Lq - 1];
        qlb = a.q_lvl[rb < a.Lq ? rb : a.Lq - 1];
        int mx = qla > qlb ? qla : qlb;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const int other = __shfl_xor_sync(0xffffffffu, mx, o);
            mx = other > mx ? other : mx;
        }
        warp_qmax = mx;
    }

    float o_acc[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) o_acc[i][e] = 0.0f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;

    // Register prefetch of one K/V tile (+ its bias and levels).
    float4 kr[KV4], vr[KV4];
    float bias_r = 0.0f;
    int klvl_r = 0;
    auto load_tile = [&](int64_t j0) {
#pragma unroll
        for (int i = 0; i < KV4; ++i) {
            const int c = threadIdx.x + i * NT;
            const int64_t j = j0 + c / 16;
            const int d = (c % 16) * 4;
            const bool ok = j < a.n_kv;
            kr[i] = ok ? kv_load4(kb + j * A_D + d) : make_float4(0.f, 0.f, 0.f, 0.f);
            vr[i] = ok ? kv_load4(vb + j * A_D + d) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        if (threadIdx.x < A_BC) {
            const int64_t j = j0 + threadIdx.x;
            bias_r = attn_key_bias(a, kbias, beta, j);
            if constexpr (HAS_MASK) klvl_r = j < a.n_kv ? a.k_lvl[j] : 0;
        }
    };
    auto store_tile = [&]() {
#pragma unroll
        for (int i = 0; i < KV4; ++i) {
            const int c = threadIdx.x + i * NT;
            const int row = c / 16, d = (c % 16) * 4;
            uint2 uk, uv;
            uk.x = av_pack2<__half>(kr[i].x, kr[i].y);
            uk.y = av_pack2<__half>(kr[i].z, kr[i].w);
            uv.x = av_pack2<__half>(vr[i].x, vr[i].y);
            uv.y = av_pack2<__half>(vr[i].z, vr[i].w);
            *reinterpret_cast<uint2*>(Ks + row * A_LDK + d) = uk;
            *reinterpret_cast<uint2*>(Vs + row * A_LDK + d) = uv;
        }
        if (threadIdx.x < A_BC) {
            bias_s[threadIdx.x] = bias_r * k_log2e;
            klvl_s[threadIdx.x] = klvl_r;
        }
    };

    // With 8 warps the next tile is loaded into registers during the math (a tile ahead);
    // 4-warp blocks (small Lq) load it just in time instead: the prefetch registers would
    // push them to 255 registers, and three resident blocks hide the latency better.
    constexpr bool PREFETCH = NW >= 8;
    if constexpr (PREFETCH) load_tile(0);
    for (int64_t j0 = 0; j0 < a.n_kv; j0 += A_BC) {
        __syncthreads();  // every warp is done with the previous tile
        if constexpr (!PREFETCH) load_tile(j0);
        store_tile();
        __syncthreads();
        if constexpr (PREFETCH) {
            if (j0 + A_BC < a.n_kv) load_tile(j0 + A_BC);  // in flight during the math below
        }

        if constexpr (HAS_MASK) {
            // Block-causal skip: every row of this warp is below every key level of the tile.
            int kmin = klvl_s[lane] < klvl_s[lane + 32] ? klvl_s[lane] : klvl_s[lane + 32];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                const int other = __shfl_xor_sync(0xffffffffu, kmin, o);
                kmin = other < kmin ? other : kmin;
            }
            // Keys past n_kv carry level 0 but are masked by their -inf bias anyway.
            if (warp_qmax < kmin) continue;
        }

        // S = Q K^T: 16 rows x 64 keys per warp.
        float s[8][4];
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[i][e] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
#pragma unroll
            for (int nj = 0; nj < 4; ++nj) {
                uint32_t q4[4];
                av_ldmatrix_x4(q4, Ks + (nj * 16 + ((lane / 8) / 2) * 8 + lane % 8) * A_LDK + ks * 16 +
                                       ((lane / 8) % 2) * 8);
                const uint32_t b0[2] = {q4[0], q4[1]}, b1[2] = {q4[2], q4[3]};
                av_mma_16816<__half>(s[2 * nj], qf[ks], b0);
                av_mma_16816<__half>(s[2 * nj + 1], qf[ks], b1);
            }
        }

        // Scale, bias, mask; row maxima over the quad (the 4 lanes sharing rows g, g + 8).
        float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
        for (int ni = 0; ni < 8; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int jl = ni * 8 + 2 * t + (e & 1);
                float x = s[ni][e] * sl2 + bias_s[jl];
                if constexpr (HAS_MASK) {
                    if ((e < 2 ? qla : qlb) < klvl_s[jl]) x = -INFINITY;
                }
                s[ni][e] = x;
                if (e < 2)
                    mx_a = fmaxf(mx_a, x);
                else
                    mx_b = fmaxf(mx_b, x);
            }
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
            mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, o));
            mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, o));
        }
        const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
        const float ms_a = mn_a == -INFINITY ? 0.0f : mn_a, ms_b = mn_b == -INFINITY ? 0.0f : mn_b;
        const float al_a = exp2f(m_a - ms_a), al_b = exp2f(m_b - ms_b);  // m = -inf gives 0
        m_a = mn_a;
        m_b = mn_b;
        float ps_a = 0.0f, ps_b = 0.0f;
#pragma unroll
        for (int ni = 0; ni < 8; ++ni) {
            s[ni][0] = exp2f(s[ni][0] - ms_a);
            s[ni][1] = exp2f(s[ni][1] - ms_a);
            s[ni][2] = exp2f(s[ni][2] - ms_b);
            s[ni][3] = exp2f(s[ni][3] - ms_b);
            ps_a += s[ni][0] + s[ni][1];
            ps_b += s[ni][2] + s[ni][3];
        }
        // l stays a per-lane partial sum (alpha is uniform over the quad); reduced at the end.
        l_a = l_a * al_a + ps_a;
        l_b = l_b * al_b + ps_b;
#pragma unroll
        for (int ni = 0; ni < 8; ++ni) {
            o_acc[ni][0] *= al_a;
            o_acc[ni][1] *= al_a;
            o_acc[ni][2] *= al_b;
            o_acc[ni][3] *= al_b;
        }

        // O += P V: P from the S fragments (k = keys), V rows k-major via ldmatrix.trans.
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            const uint32_t pa[4] = {av_pack2<__half>(s[2 * kk][0], s[2 * kk][1]),
                                    av_pack2<__half>(s[2 * kk][2], s[2 * kk][3]),
                                    av_pack2<__half>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    av_pack2<__half>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int dp = 0; dp < 4; ++dp) {
                uint32_t v4[4];
                // matrix lane/8: keys kk*16 + ((lane/8)%2)*8 + lane%8, dims dp*16 + ((lane/8)/2)*8
                av_ldmatrix_x4_trans(v4, Vs + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * A_LDK + dp * 16 +
                                             ((lane / 8) / 2) * 8);
                const uint32_t b0[2] = {v4[0], v4[1]}, b1[2] = {v4[2], v4[3]};
                av_mma_16816<__half>(o_acc[2 * dp], pa, b0);
                av_mma_16816<__half>(o_acc[2 * dp + 1], pa, b1);
            }
        }
    }

#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) {
        l_a += __shfl_xor_sync(0xffffffffu, l_a, o);
        l_b += __shfl_xor_sync(0xffffffffu, l_b, o);
    }
    const float inv_a = l_a > 0.0f ? 1.0f / l_a : 0.0f;  // l == 0: every key masked
    const float inv_b = l_b > 0.0f ? 1.0f / l_b : 0.0f;
#pragma unroll
    for (int ni = 0; ni < 8; ++ni) {
        const int d = ni * 8 + 2 * t;
        if (ra < a.Lq)
            *reinterpret_cast<float2*>(a.o + ((r * a.Lq + ra) * a.H + h) * A_D + d) =
                make_float2(o_acc[ni][0] * inv_a, o_acc[ni][1] * inv_a);
        if (rb < a.Lq)
            *reinterpret_cast<float2*>(a.o + ((r * a.Lq + rb) * a.H + h) * A_D + d) =
                make_float2(o_acc[ni][2] * inv_b, o_acc[ni][3] * inv_b);
    }
}

// ---- attention, generic D, fp32 --------------------------------------------------------------

constexpr int G_BQ = 16, G_BC = 32, G_NT = 128;

// Dynamic smem: Qs[16][D], Os[16][D] floats.
template <bool VEC, bool HAS_MASK, typename KV>
__global__ void __launch_bounds__(G_NT) attn_generic_kernel(attn_args a) {
    extern __shared__ float dyn[];
    const int D = a.D;
    float* Qs = dyn;
    float* Os = dyn + G_BQ * D;
    __shared__ float Ss[G_BQ][G_BC + 1];
    __shared__ float m_s[G_BQ], l_s[G_BQ], al_s[G_BQ];
    __shared__ float bias_s[G_BC];
    __shared__ int klvl_s[G_BC];
    __shared__ int qlvl_s[G_BQ];

    const int r = blockIdx.z, h = blockIdx.y;
    const int64_t i0 = static_cast<int64_t>(blockIdx.x) * G_BQ;
    const int tid = threadIdx.x, lane = tid % WARP_SIZE, warp = tid / WARP_SIZE;
    const int64_t bh = static_cast<int64_t>(r) * a.H + h;
    const float* qb = a.q + bh * a.Lq * D;
    const KV* kb = static_cast<const KV*>(a.k) + bh * a.n_ctx * D;
    const KV* vb = static_cast<const KV*>(a.v) + bh * a.n_ctx * D;
    const float* kbias = a.key_bias ? a.key_bias + (r % a.Rb) * a.n_ctx : nullptr;
    const float beta = a.kb_beta ? a.kb_beta[h] : 1.0f;

    for (int e = tid; e < G_BQ * D; e += G_NT) {
        const int q = e / D, d = e % D;
        Qs[e] = i0 + q < a.Lq ? qb[(i0 + q) * D + d] : 0.0f;
        Os[e] = 0.0f;
    }
    if (tid < G_BQ) {
        m_s[tid] = -INFINITY;
        l_s[tid] = 0.0f;
        if constexpr (HAS_MASK) qlvl_s[tid] = a.q_lvl[i0 + tid < a.Lq ? i0 + tid : a.Lq - 1];
    }

    const int jl = tid % G_BC, qg = tid / G_BC;  // score phase: key jl, queries 4 qg .. 4 qg + 3
    for (int64_t j0 = 0; j0 < a.n_kv; j0 += G_BC) {
        if (tid < G_BC) {
            bias_s[tid] = attn_key_bias(a, kbias, beta, j0 + tid);
            if constexpr (HAS_MASK) klvl_s[tid] = j0 + tid < a.n_kv ? a.k_lvl[j0 + tid] : 0;
        }
        __syncthreads();  // Qs/Os initialised, bias of this tile, previous tile's Ss consumed
        {
            const int64_t j = j0 + jl;
            float acc[4] = {0.f, 0.f, 0.f, 0.f};
            if (j < a.n_kv) {
                const KV* kr = kb + j * D;
                if constexpr (VEC) {
                    for (int d = 0; d < D; d += 4) {
                        const float4 kv = kv_load4(kr + d);
#pragma unroll
                        for (int i = 0; i < 4; ++i) {
                            const float4 qv = *reinterpret_cast<const float4*>(Qs + (qg * 4 + i) * D + d);
                            acc[i] = fmaf(qv.x, kv.x, fmaf(qv.y, kv.y, fmaf(qv.z, kv.z, fmaf(qv.w, kv.w, acc[i]))));
                        }
                    }
                } else {
                    for (int d = 0; d < D; ++d) {
                        const float kv = av_to_f32(kr[d]);
#pragma unroll
                        for (int i = 0; i < 4; ++i) acc[i] = fmaf(Qs[(qg * 4 + i) * D + d], kv, acc[i]);
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int q = qg * 4 + i;
                float x = a.scale * acc[i] + bias_s[jl];
                if constexpr (HAS_MASK) {
                    if (qlvl_s[q] < klvl_s[jl]) x = -INFINITY;
                }
                Ss[q][jl] = x;
            }
        }
        __syncthreads();
        // Online softmax: warp w owns rows 4w .. 4w + 3, lane = key.
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int q = warp * 4 + i;
            const float x = Ss[q][lane];
            const float mx = warp_reduce_max(x);
            const float m_old = m_s[q];
            const float mn = fmaxf(m_old, mx);
            const float ms = mn == -INFINITY ? 0.0f : mn;
            const float p = expf(x - ms);
            Ss[q][lane] = p;
            const float sum = warp_reduce_sum(p);
            if (lane == 0) {
                const float al = expf(m_old - ms);
                al_s[q] = al;
                l_s[q] = l_s[q] * al + sum;
                m_s[q] = mn;
            }
        }
        __syncthreads();
        const int bc = a.n_kv - j0 < G_BC ? static_cast<int>(a.n_kv - j0) : G_BC;
        for (int d = tid; d < D; d += G_NT) {
            float acc[G_BQ];
#pragma unroll
            for (int q = 0; q < G_BQ; ++q) acc[q] = Os[q * D + d] * al_s[q];
            for (int j = 0; j < bc; ++j) {
                const float vv = av_to_f32(vb[(j0 + j) * D + d]);
#pragma unroll
                for (int q = 0; q < G_BQ; ++q) acc[q] = fmaf(Ss[q][j], vv, acc[q]);
            }
#pragma unroll
            for (int q = 0; q < G_BQ; ++q) Os[q * D + d] = acc[q];
        }
        // The barrier at the top of the next tile orders these Os/Ss uses before reuse.
    }
    __syncthreads();
    for (int e = tid; e < G_BQ * D; e += G_NT) {
        const int q = e / D, d = e % D;
        if (i0 + q >= a.Lq) continue;
        const float l = l_s[q];
        a.o[((r * a.Lq + i0 + q) * a.H + h) * D + d] = l > 0.0f ? Os[e] / l : 0.0f;
    }
}

template <typename KV>
av_status launch_attn(const attn_args& a, int64_t R, const av_cuda_ctx& ctx) {
    const bool mask = a.q_lvl != nullptr;
    auto a16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; };
    if (a.D == A_D && a16(a.q) && a16(a.k) && a16(a.v) && a16(a.o)) {
        const bool big = ceil_div<int64_t>(a.Lq, 128) * a.H * R >= ctx.sm_count;
        BOOL_SWITCH(mask, MASK, [&] {
            if (big) {
                const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(a.Lq, 128)), a.H, static_cast<unsigned>(R));
                attn_d64_kernel<8, MASK, KV><<<grid, 256, 0, ctx.stream>>>(a);
            } else {
                const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(a.Lq, 64)), a.H, static_cast<unsigned>(R));
                attn_d64_kernel<4, MASK, KV><<<grid, 128, 0, ctx.stream>>>(a);
            }
        });
        CUDA_CHECK_LAUNCH("attn (d64)");
        return av_status::success();
    }
    const size_t smem = sizeof(float) * 2 * G_BQ * static_cast<size_t>(a.D);
    const size_t static_smem = sizeof(float) * (G_BQ * (G_BC + 1) + 4 * G_BQ + 2 * G_BC);
    if (smem + static_smem > ctx.smem_optin)
        return av_status::error(AV_ERR_UNSUPPORTED, "attn: head dim " + std::to_string(a.D) +
                                                        " needs more shared memory than this device has (" +
                                                        std::to_string(ctx.smem_optin) + " bytes per block)");
    const bool vec = a.D % 4 == 0 && a16(a.k) && a16(a.q);
    const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(a.Lq, G_BQ)), a.H, static_cast<unsigned>(R));
    av_status st = av_status::success();
    BOOL_SWITCH(vec, VEC, [&] {
        BOOL_SWITCH(mask, MASK, [&] {
            auto kern = attn_generic_kernel<VEC, MASK, KV>;
            if (smem > 48 * 1024) {
                cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                     static_cast<int>(smem));
                if (e != cudaSuccess) {
                    st = av_status::error(AV_ERR_BACKEND, std::string("attn: cudaFuncSetAttribute failed: ") +
                                                              cudaGetErrorString(e));
                    return;
                }
            }
            kern<<<grid, G_NT, smem, ctx.stream>>>(a);
        });
    });
    AV_TRY(st);
    CUDA_CHECK_LAUNCH("attn (generic D)");
    return av_status::success();
}

}  // namespace

av_status av_cuda_qkv_prep(const av_qkv_prep_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_qkv_prep(p));
    const int64_t D = p.q_out.ne[0], L = p.q_out.ne[1], H = p.q_out.ne[2], R = p.q_out.ne[3];
    const int64_t n_ctx = p.k_cache.ne[1];
    const bool l2 = p.l2norm != 0, rope = p.rope != 0;

    AV_CHECK(H <= 65535 && D <= 65535, "qkv_prep: H or D too large");
    if (R * L * H * D == 0) return av_status::success();
    AV_CHECK(R * L <= 2147483647LL, "qkv_prep: too many tokens");
    const size_t smem = sizeof(float) * static_cast<size_t>(D);
    AV_CHECK(smem <= 48 * 1024, "qkv_prep: D too large");
    const float* qs = av_tensor_present(p.q_scale) ? static_cast<const float*>(p.q_scale.data) : nullptr;
    const float* rp = rope ? static_cast<const float*>(p.rope_pos.data) : nullptr;
    const unsigned grid = static_cast<unsigned>(R * L);
    if (p.k_cache.dtype == AV_BF16)
        qkv_prep_kernel<__nv_bfloat16><<<grid, 256, smem, ctx.stream>>>(
            static_cast<const float*>(p.qkv.data), qs, rp, static_cast<float*>(p.q_out.data),
            static_cast<__nv_bfloat16*>(p.k_cache.data), static_cast<__nv_bfloat16*>(p.v_cache.data), L,
            static_cast<int>(H), static_cast<int>(D), n_ctx, p.kv_pos, l2, rope, p.rope_base);
    else
        qkv_prep_kernel<float><<<grid, 256, smem, ctx.stream>>>(
            static_cast<const float*>(p.qkv.data), qs, rp, static_cast<float*>(p.q_out.data),
            static_cast<float*>(p.k_cache.data), static_cast<float*>(p.v_cache.data), L, static_cast<int>(H),
            static_cast<int>(D), n_ctx, p.kv_pos, l2, rope, p.rope_base);
    CUDA_CHECK_LAUNCH("qkv_prep");
    return av_status::success();
}

av_status av_cuda_attn(const av_attn_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_attn(p));
    const int64_t D = p.q.ne[0], Lq = p.q.ne[1], H = p.q.ne[2], R = p.q.ne[3];
    const int64_t n_ctx = p.k.ne[1];
    const int64_t Rb = av_tensor_present(p.key_bias) ? av_tensor_nelements(p.key_bias) / n_ctx : 1;

    AV_CHECK(H <= 65535 && R <= 65535, "attn: H or R above 65535");
    if (Lq == 0 || R == 0 || H == 0 || D == 0) return av_status::success();
    attn_args a;
    a.q = static_cast<const float*>(p.q.data);
    a.k = p.k.data;
    a.v = p.v.data;
    a.key_bias = av_tensor_present(p.key_bias) ? static_cast<const float*>(p.key_bias.data) : nullptr;
    a.kb_beta = av_tensor_present(p.kb_beta) ? static_cast<const float*>(p.kb_beta.data) : nullptr;
    a.q_lvl = av_tensor_present(p.q_lvl) ? static_cast<const int32_t*>(p.q_lvl.data) : nullptr;
    a.k_lvl = av_tensor_present(p.k_lvl) ? static_cast<const int32_t*>(p.k_lvl.data) : nullptr;
    a.o = static_cast<float*>(p.o.data);
    a.Lq = Lq;
    a.n_ctx = n_ctx;
    a.n_kv = p.n_kv;
    a.Rb = Rb;
    a.H = static_cast<int>(H);
    a.D = static_cast<int>(D);
    a.scale = p.scale;
    return p.k.dtype == AV_BF16 ? launch_attn<__nv_bfloat16>(a, R, ctx) : launch_attn<float>(a, R, ctx);
}
