// Codebook gather (VQ lookup) and nearest-code search (spec 5.1, 7.3).
//
// vq_lookup: idx [B, T] -> rows of codebook [V, Cv], written channel-major [B, Cv, T] (a code
// map ready for bicubic_up) or token-major [B, T, Cv]. All indices are checked before anything
// is written; the first one outside [0, V) is named in the error. One task per token.
//
// vq_nearest: argmin_v ||z - E_v||^2, ties to the lowest index. The reference evaluates
// ||z||^2 + ||E_v||^2 - 2 z.E_v in fp32, whose cancellation turns exact ties (duplicate codes,
// a z equidistant from two codes) into rounding noise. Here the distance is summed directly,
// sum_c (z_c - E_vc)^2, in double, channels in order: the difference of two floats of
// similar magnitude is exact in double, so duplicate codes and mirror-image ties (z halfway
// between two codes) give bit-equal distances and the strict < keeps the lowest index. Where
// the reference's fp32 rounding decides a near-tie the two may differ; that is intended.
// Inputs are widened to double once (codebook [V, Cv], z token-major [B*T, Cv]); one task
// per token.
#include <new>
#include <string>
#include <vector>

#include "../core/ops-check.h"
#include "backend-cpu.h"

namespace {

av_status vq_lookup_impl(const av_vq_lookup_params& p) {
    AV_TRY(av_check_vq_lookup(p));
    const int64_t T = p.idx.ne[0], B = p.idx.ne[1];
    const int64_t Cv = p.codebook.ne[0], V = p.codebook.ne[1];
    const bool cm = p.channel_major != 0;
    const int32_t* idx = static_cast<const int32_t*>(p.idx.data);
    for (int64_t i = 0; i < B * T; ++i) {
        AV_CHECK(idx[i] >= 0 && idx[i] < V, "vq_lookup: idx[" + std::to_string(i / T) + ", " + std::to_string(i % T) +
                                                "] = " + std::to_string(idx[i]) + " is outside the codebook [0, " +
                                                std::to_string(V) + ")");
    }
    float* y = static_cast<float*>(p.y.data);
    av_cpu_parallel_for(B * T, 64, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            const int64_t b = i / T, t = i % T;
            const int64_t row = static_cast<int64_t>(idx[i]) * Cv;
            for (int64_t c = 0; c < Cv; ++c) {
                const float v = av_cpu_load(p.codebook.data, p.codebook.dtype, row + c);
                if (cm)
                    y[(b * Cv + c) * T + t] = v;  // [B, Cv, T]
                else
                    y[i * Cv + c] = v;  // [B, T, Cv]
            }
        }
    });
    return av_status::success();
}

av_status vq_nearest_impl(const av_vq_nearest_params& p) {
    AV_TRY(av_check_vq_nearest(p));
    const int64_t T = p.idx.ne[0], B = p.idx.ne[1];
    const int64_t Cv = p.codebook.ne[0], V = p.codebook.ne[1];
    const bool cm = p.channel_major != 0;

    std::vector<double> E(static_cast<size_t>(V * Cv));
    for (int64_t i = 0; i < V * Cv; ++i) E[i] = av_cpu_load(p.codebook.data, p.codebook.dtype, i);
    // z gathered token-major: zt[b*T + t][c]
    const float* z = static_cast<const float*>(p.z.data);
    std::vector<double> zt(static_cast<size_t>(B * T * Cv));
    for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t)
            for (int64_t c = 0; c < Cv; ++c)
                zt[(b * T + t) * Cv + c] = cm ? z[(b * Cv + c) * T + t] : z[(b * T + t) * Cv + c];

    int32_t* idx = static_cast<int32_t*>(p.idx.data);
    av_cpu_parallel_for(B * T, 4, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
            const double* zi = &zt[i * Cv];
            int32_t best = 0;
            double best_d = 0.0;
            for (int64_t v = 0; v < V; ++v) {
                const double* e = &E[v * Cv];
                double d = 0.0;
                for (int64_t c = 0; c < Cv; ++c) {
                    const double diff = zi[c] - e[c];
                    d += diff * diff;
                }
                // Strictly smaller: an equal distance keeps the lower index.
                if (v == 0 || d < best_d) {
                    best_d = d;
                    best = static_cast<int32_t>(v);
                }
            }
            idx[i] = best;
        }
    });
    return av_status::success();
}

}  // namespace

av_status av_cpu_vq_lookup(const av_vq_lookup_params& p) {
    try {
        return vq_lookup_impl(p);
    } catch (const std::bad_alloc&) {
        return av_status::error(AV_ERR_OOM, "vq_lookup: out of host memory");
    }
}

av_status av_cpu_vq_nearest(const av_vq_nearest_params& p) {
    try {
        return vq_nearest_impl(p);
    } catch (const std::bad_alloc&) {
        return av_status::error(AV_ERR_OOM, "vq_nearest: out of host memory for scratch buffers");
    }
}
