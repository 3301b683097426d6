// Token sampling on the device (spec 5.2, 5.3): CFG mix, top-k, top-p, Philox draw.
//
// Grid: one block of 256 threads per output row (image b, position l); the row's V guided
// logits live in shared memory. The steps and their arithmetic follow native/cpu/sample.cc
// exactly, so both backends pick the same index for the same (seed, image_key, scale, l):
//   1. G = (1+t) Z[b] - t Z[B+b] with explicitly rounded products and difference (no FMA).
//   2. top_k == 1: argmax, lowest index among ties (block reduction on (value, index)); no
//      random number is drawn; a row of -inf / NaN gives 0.
//   3. top-k / top-p need the row sorted ascending by (G, index): a bitonic sort of (value,
//      index) pairs in shared memory (V padded to a power of two with (+inf, INT_MAX)).
//      top-k: thr = the k-th largest = sorted[V - k]; entries < thr become -inf (ties stay).
//      Their new -inf keys stay in front of the survivors; the order among -inf entries does
//      not matter (they add exact zeros to every sum below).
//   4. top-p: thread 0 walks the sorted row in order: s_j = exp(G_j - max), S = sum s_j, then
//      cum += s_j / S, and entries (except the max) with cum <= 1 - p become -inf. Sequential
//      on purpose: a parallel sum would round differently from the CPU's loop.
//   5. e_v = exp(G_v - max) in parallel; thread 0 sums S in index order and walks the inclusive
//      prefix sum of e_v / S until it exceeds u = Philox4x32-10(seed; image_key[b], scale, l,
//      0) (core/philox.h, shared with the CPU); if rounding leaves u above the total, the last
//      index with a nonzero probability is taken.
//   exp is evaluated as fp32(exp(double(x))): the correctly rounded expf, which is what glibc's
//   expf returns for these arguments in practice.
// Cost: the sequential walks are O(V) on one thread (~10-20 us per row at V = 4096); rows run
// in parallel, and the default greedy decoding (top_k = 1) skips them entirely.
#include <climits>

#include "core/ops-check.h"
#include "core/philox.h"
#include "sample.cuh"

namespace {

constexpr int SMP_NT = 256;

__device__ __forceinline__ float exp_cr(float x) { return static_cast<float>(exp(static_cast<double>(x))); }

// (value, index) is better than (ov, oi): larger value, or equal value and lower index.
__device__ __forceinline__ bool better(float v, int i, float ov, int oi) { return v > ov || (v == ov && i < oi); }

// Dynamic smem: g [V] floats, then (when sorting) keys [Vp] floats and ids [Vp] ints.
__global__ void __launch_bounds__(SMP_NT)
    sample_kernel(const float* __restrict__ Z, const int32_t* __restrict__ image_key, int32_t* __restrict__ out,
                  int64_t B, int64_t L, int V, int Vp, bool cfg, float t, int top_k, float top_p, uint64_t seed,
                  int scale, bool do_sort) {
    extern __shared__ __align__(16) unsigned char smem[];
    float* g = reinterpret_cast<float*>(smem);
    float* keys = g + V;
    int* ids = reinterpret_cast<int*>(keys + Vp);
    __shared__ float red_v[32];
    __shared__ int red_i[32];

    const int64_t row = blockIdx.x;  // b*L + l
    const int64_t b = row / L, l = row % L;
    const float* zc = Z + (b * L + l) * V;
    const float a = 1.0f + t;
    if (cfg) {
        const float* zn = Z + ((B + b) * L + l) * V;
        for (int v = threadIdx.x; v < V; v += SMP_NT) g[v] = __fsub_rn(__fmul_rn(a, zc[v]), __fmul_rn(t, zn[v]));
    } else {
        for (int v = threadIdx.x; v < V; v += SMP_NT) g[v] = zc[v];
    }
    __syncthreads();

    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    // Block max with the lowest index; (-inf, INT_MAX) means "nothing above -inf".
    auto block_argmax = [&](float* out_v) -> int {
        float bv = -INFINITY;
        int bi = INT_MAX;
        for (int v = threadIdx.x; v < V; v += SMP_NT)
            if (g[v] > bv) {  // ascending v per thread: strict > keeps the first
                bv = g[v];
                bi = v;
            }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (better(ov, oi, bv, bi)) {
                bv = ov;
                bi = oi;
            }
        }
        __syncthreads();
        if (lane == 0) {
            red_v[warp] = bv;
            red_i[warp] = bi;
        }
        __syncthreads();
        bv = lane < SMP_NT / WARP_SIZE ? red_v[lane] : -INFINITY;
        bi = lane < SMP_NT / WARP_SIZE ? red_i[lane] : INT_MAX;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (better(ov, oi, bv, bi)) {
                bv = ov;
                bi = oi;
            }
        }
        *out_v = bv;
        return bi;
    };

    if (top_k == 1) {
        float mv;
        const int bi = block_argmax(&mv);
        if (threadIdx.x == 0) out[row] = (bi == INT_MAX) ? 0 : bi;
        return;
    }

    if (do_sort) {
        for (int j = threadIdx.x; j < Vp; j += SMP_NT) {
            keys[j] = j < V ? g[j] : INFINITY;
            ids[j] = j < V ? j : INT_MAX;
        }
        __syncthreads();
        for (int k = 2; k <= Vp; k <<= 1) {
            for (int j = k >> 1; j > 0; j >>= 1) {
                for (int i = threadIdx.x; i < Vp; i += SMP_NT) {
                    const int ixj = i ^ j;
                    if (ixj <= i) continue;
                    const bool up = (i & k) == 0;
                    const float x0 = keys[i], x1 = keys[ixj];
                    const int i0 = ids[i], i1 = ids[ixj];
                    const bool gt = x0 > x1 || (x0 == x1 && i0 > i1);
                    if (gt == up) {
                        keys[i] = x1;
                        keys[ixj] = x0;
                        ids[i] = i1;
                        ids[ixj] = i0;
                    }
                }
                __syncthreads();
            }
        }
    }

    if (top_k > 0 && top_k < V) {
        const float thr = keys[V - top_k];
        for (int v = threadIdx.x; v < V; v += SMP_NT)
            if (g[v] < thr) g[v] = -INFINITY;
        for (int j = threadIdx.x; j < V; j += SMP_NT)
            if (keys[j] < thr) keys[j] = -INFINITY;
        __syncthreads();
    }

    if (top_p > 0.0f && top_p < 1.0f) {
        const float m = keys[V - 1];
        if (m != -INFINITY && threadIdx.x == 0) {
            float S = 0.0f;
            for (int j = 0; j < V; ++j) {
                const float s = exp_cr(keys[j] - m);
                keys[j] = s;
                S += s;
            }
            const float limit = 1.0f - top_p;
            float cum = 0.0f;
            for (int j = 0; j + 1 < V; ++j) {  // j = V - 1, the max, always survives
                cum += keys[j] / S;
                if (cum <= limit) g[ids[j]] = -INFINITY;
            }
        }
        __syncthreads();
    }

    float m;
    block_argmax(&m);
    __syncthreads();
    if (m == -INFINITY) {
        if (threadIdx.x == 0) out[row] = 0;
        return;
    }
    for (int v = threadIdx.x; v < V; v += SMP_NT) g[v] = exp_cr(g[v] - m);
    __syncthreads();
    if (threadIdx.x == 0) {
        const float u = av_philox_uniform(seed, static_cast<uint32_t>(image_key[b]), static_cast<uint32_t>(scale),
                                          static_cast<uint32_t>(l), 0u);
        float S = 0.0f;
        for (int v = 0; v < V; ++v) S += g[v];
        float cum = 0.0f;
        int last_nz = 0, chosen = -1;
        for (int v = 0; v < V; ++v) {
            const float pv = g[v] / S;
            if (pv > 0.0f) last_nz = v;
            cum += pv;
            if (cum > u) {
                chosen = v;
                break;
            }
        }
        out[row] = chosen >= 0 ? chosen : last_nz;
    }
}

}  // namespace

av_status av_cuda_sample(const av_sample_params& p, const av_cuda_ctx& ctx) {
    // Stricter than the shared check: empty logits are not contiguous here (av_is_f32c).
    if (av_tensor_present(p.logits) && av_tensor_present(p.idx))
        AV_CHECK(av_is_f32c(p.logits), "sample: logits must be contiguous f32");
    AV_TRY(av_check_sample(p));
    // logits [R, L, V] with R = B or 2B (cfg); idx [B, L]
    const int64_t V = p.logits.ne[0], L = p.logits.ne[1];
    const int64_t B = p.idx.ne[1];
    AV_CHECK(V <= INT32_MAX / 2, "sample: vocabulary size out of range");
    const bool greedy = p.top_k == 1;
    if (B * L == 0) return av_status::success();
    AV_CHECK(B * L <= 2147483647LL, "sample: too many rows");
    const bool do_sort =
        !greedy && ((p.top_k > 0 && p.top_k < V) || (p.top_p > 0.0f && p.top_p < 1.0f));
    int64_t Vp = 1;
    while (Vp < V) Vp <<= 1;
    const size_t smem = sizeof(float) * static_cast<size_t>(V) + (do_sort ? 8 * static_cast<size_t>(Vp) : 0);
    const size_t static_smem = 32 * 8 + 16;
    AV_CHECK(smem + static_smem <= ctx.smem_optin,
             "sample: V = " + std::to_string(V) + " does not fit in shared memory (" + std::to_string(ctx.smem_optin) +
                 " bytes per block)");
    if (smem > 32 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    sample_kernel<<<static_cast<unsigned>(B * L), SMP_NT, smem, ctx.stream>>>(
        static_cast<const float*>(p.logits.data), greedy ? nullptr : static_cast<const int32_t*>(p.image_key.data),
        static_cast<int32_t*>(p.idx.data), B, L, static_cast<int>(V), static_cast<int>(Vp), p.cfg != 0, p.t, p.top_k,
        p.top_p, p.seed, p.scale, do_sort);
    CUDA_CHECK_LAUNCH("sample");
    return av_status::success();
}
