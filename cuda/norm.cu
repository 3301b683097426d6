// LayerNorm (+ affine + AdaLN modulation) and GroupNorm (+ affine + SiLU), spec 0 and 7.
//
// layernorm: one block per row of [M, C]. Two-pass statistics in fp32 (mean, then the mean
//   of squared deviations: biased variance, no catastrophic cancellation), the row re-read
//   from L1/L2 for each pass; then y = ((x - mean) * rstd * weight + bias) * (1 + scale[g]) +
//   shift[g] with g = m / rows_per_group. The row stays in the cache between passes, so DRAM
//   traffic is one read and one write. In place is safe: each element is read by the thread
//   that writes it, after the block's reductions.
// groupnorm: x [B, C, S] (3-D, S = H*W) in groups of C/G consecutive channels, i.e. each (image, group) is one
//   contiguous run of (C/G)*S floats. A decoder GroupNorm at 512x512 has only B*32 groups of
//   1.3 M elements each, so the statistics run in three launches for parallelism without
//   atomics (deterministic):
//   1. partial_stats: grid (chunks, B*G); each block reduces one chunk of GN_CHUNK elements
//      to (count, mean, M2) with a two-pass block reduction.
//   2. merge_stats: one block per group combines the partials in double (Chan et al.:
//      M2 = sum M2_i + n_i (mean_i - mean)^2) into mean and rstd = 1/sqrt(M2/N + eps).
//   3. apply: elementwise y = (x - mean) * rstd * weight[c] + bias[c], then SiLU if asked.
//   Scratch: B*G*chunks*2 + B*G*2 floats.
//
// Reference: native/cpu/norm.cc; PyTorch F.layer_norm / F.group_norm semantics.
#include "core/ops-check.h"
#include "norm.cuh"

namespace {

constexpr int64_t GN_CHUNK = 16384;

// ---- layernorm -------------------------------------------------------------------------------

__global__ void layernorm_kernel(const float* x, const float* __restrict__ weight, const float* __restrict__ bias,
                                 const float* __restrict__ scale, const float* __restrict__ shift, float* y,
                                 int64_t C, int64_t G, int64_t rpg, float eps) {
    __shared__ float red[32];
    const int64_t row = blockIdx.x;
    const float* xr = x + row * C;
    float* yr = y + row * C;
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += xr[c];
    const float mean = block_reduce_sum(s, red) / static_cast<float>(C);
    float v = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        const float d = xr[c] - mean;
        v += d * d;
    }
    const float var = block_reduce_sum(v, red) / static_cast<float>(C);
    const float rstd = rsqrtf(var + eps);
    int64_t g = row / rpg;
    if (g >= G) g = G - 1;
    const float* sc = scale ? scale + g * C : nullptr;
    const float* sh = shift ? shift + g * C : nullptr;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        float h = (xr[c] - mean) * rstd;
        if (weight) h *= weight[c];
        if (bias) h += bias[c];
        if (sc) h *= 1.0f + sc[c];
        if (sh) h += sh[c];
        yr[c] = h;
    }
}

av_status launch_layernorm(const float* x, const float* w, const float* b, const float* scale, const float* shift,
                           float* y, int64_t M, int64_t C, int64_t G, int64_t rpg, float eps, cudaStream_t stream) {
    AV_CHECK(M <= 2147483647LL, "layernorm: more than 2^31 rows");
    const int threads = C >= 1024 ? 256 : (C >= 256 ? 128 : 32);
    layernorm_kernel<<<static_cast<unsigned>(M), threads, 0, stream>>>(x, w, b, scale, shift, y, C, G, rpg, eps);
    CUDA_CHECK_LAUNCH("layernorm");
    return av_status::success();
}

// ---- groupnorm -------------------------------------------------------------------------------

// grid (chunks, groups_total): partial (mean, M2) of elements [chunk*GN_CHUNK, ...) of group gi.
__global__ void gn_partial_kernel(const float* __restrict__ x, float* partial, int64_t group_len, int chunks) {
    __shared__ float red[32];
    const int64_t gi = blockIdx.y;
    const int64_t begin = blockIdx.x * GN_CHUNK;
    const int64_t end = begin + GN_CHUNK < group_len ? begin + GN_CHUNK : group_len;
    const float* xg = x + gi * group_len;
    const float n = static_cast<float>(end - begin);
    float s = 0.0f;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) s += xg[i];
    const float mean = block_reduce_sum(s, red) / n;
    float v = 0.0f;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float d = xg[i] - mean;
        v += d * d;
    }
    const float m2 = block_reduce_sum(v, red);
    if (threadIdx.x == 0) {
        float* out = partial + (gi * chunks + blockIdx.x) * 2;
        out[0] = mean;
        out[1] = m2;
    }
}

// One block per group: combine the chunk partials into (mean, rstd).
__global__ void gn_merge_kernel(const float* __restrict__ partial, float* stats, int64_t group_len, int chunks,
                                float eps) {
    __shared__ double red[32];
    const int64_t gi = blockIdx.x;
    const float* pg = partial + gi * chunks * 2;
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE, nwarps = blockDim.x / WARP_SIZE;
    auto chunk_n = [&](int c) -> double {
        const int64_t b = static_cast<int64_t>(c) * GN_CHUNK;
        return static_cast<double>((b + GN_CHUNK < group_len ? b + GN_CHUNK : group_len) - b);
    };
    auto block_sum = [&](double v) -> double {
        v = warp_reduce_sum(v);
        __syncthreads();
        if (lane == 0) red[warp] = v;
        __syncthreads();
        v = lane < nwarps ? red[lane] : 0.0;
        return warp_reduce_sum(v);
    };
    double s = 0.0;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) s += chunk_n(c) * static_cast<double>(pg[2 * c]);
    const double mean = block_sum(s) / static_cast<double>(group_len);
    double m2 = 0.0;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
        const double d = static_cast<double>(pg[2 * c]) - mean;
        m2 += static_cast<double>(pg[2 * c + 1]) + chunk_n(c) * d * d;
    }
    m2 = block_sum(m2);
    if (threadIdx.x == 0) {
        stats[2 * gi] = static_cast<float>(mean);
        stats[2 * gi + 1] = static_cast<float>(1.0 / sqrt(m2 / static_cast<double>(group_len) + static_cast<double>(eps)));
    }
}

template <bool SILU>
__global__ void gn_apply_kernel(const float* x, const float* __restrict__ stats, const float* __restrict__ weight,
                                const float* __restrict__ bias, float* y, int64_t n, int64_t S, int64_t C,
                                int64_t group_len) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t gi = i / group_len;  // (image, group): groups are contiguous runs
        const int64_t c = (i / S) % C;
        float h = (x[i] - stats[2 * gi]) * stats[2 * gi + 1];
        if (weight) h *= weight[c];
        if (bias) h += bias[c];
        if constexpr (SILU) h = h / (1.0f + expf(-h));
        y[i] = h;
    }
}

av_status launch_groupnorm(const float* x, const float* w, const float* b, float* y, int64_t B, int64_t C, int64_t S,
                           int64_t G, float eps, bool silu, const av_cuda_ctx& ctx) {
    const int64_t group_len = (C / G) * S;
    const int64_t groups_total = B * G;
    const int chunks = static_cast<int>(ceil_div<int64_t>(group_len, GN_CHUNK));
    AV_CHECK(groups_total <= 65535, "groupnorm: more than 65535 (image, group) pairs");
    void* scratch = nullptr;
    AV_TRY(ctx.scratch(sizeof(float) * static_cast<size_t>(groups_total * (chunks + 1) * 2), &scratch));
    float* partial = static_cast<float*>(scratch);
    float* stats = partial + groups_total * chunks * 2;
    const int threads = group_len >= 4096 ? 512 : 128;
    gn_partial_kernel<<<dim3(chunks, static_cast<unsigned>(groups_total)), threads, 0, ctx.stream>>>(x, partial,
                                                                                                       group_len, chunks);
    CUDA_CHECK_LAUNCH("groupnorm (partial statistics)");
    gn_merge_kernel<<<static_cast<unsigned>(groups_total), 128, 0, ctx.stream>>>(partial, stats, group_len, chunks,
                                                                                 eps);
    CUDA_CHECK_LAUNCH("groupnorm (merge)");
    const int64_t n = B * C * S;
    BOOL_SWITCH(silu, SILU, [&] {
        gn_apply_kernel<SILU><<<av_grid_1d(n, 256), 256, 0, ctx.stream>>>(x, stats, w, b, y, n, S, C, group_len);
    });
    CUDA_CHECK_LAUNCH("groupnorm (apply)");
    return av_status::success();
}

}  // namespace

av_status av_cuda_layernorm(const av_layernorm_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_layernorm(p));
    const int64_t C = p.x.ne[0];
    const int64_t M = av_tensor_nelements(p.x) / C;
    const bool mod = av_tensor_present(p.scale) || av_tensor_present(p.shift);
    int64_t G = 1, rpg = M > 0 ? M : 1;
    if (mod) {
        G = (M + p.rows_per_group - 1) / p.rows_per_group;
        rpg = p.rows_per_group;
    }
    if (M * C == 0) return av_status::success();
    auto f = [](const av_tensor& t) { return av_tensor_present(t) ? static_cast<const float*>(t.data) : nullptr; };
    return launch_layernorm(static_cast<const float*>(p.x.data), f(p.weight), f(p.bias), mod ? f(p.scale) : nullptr,
                            mod ? f(p.shift) : nullptr, static_cast<float*>(p.y.data), M, C, G, rpg, p.eps,
                            ctx.stream);
}

av_status av_cuda_groupnorm(const av_groupnorm_params& p, const av_cuda_ctx& ctx) {
    AV_TRY(av_check_groupnorm(p));
    const int64_t S = p.x.ne[0], C = p.x.ne[1], B = p.x.ne[2];
    const int64_t G = p.groups;
    if (B * C * S == 0) return av_status::success();
    auto f = [](const av_tensor& t) { return av_tensor_present(t) ? static_cast<const float*>(t.data) : nullptr; };
    return launch_groupnorm(static_cast<const float*>(p.x.data), f(p.weight), f(p.bias), static_cast<float*>(p.y.data),
                            B, C, S, G, p.eps, p.silu != 0, ctx);
}
