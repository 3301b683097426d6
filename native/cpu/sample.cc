// Token sampling (spec 5.2 classifier-free guidance, 5.3 top-k / top-p / RNG).
//
// Per output row (image b, position l), all in fp32:
//   1. G = (1+t) Z[b] - t Z[B+b] with cfg (rows [0,B) conditional, [B,2B) negative), else Z[b].
//   2. top_k == 1: argmax of G, lowest index among ties, no random number. Done.
//   3. top-k (0 < k < V): thr = k-th largest value (nth_element); G < thr -> -inf, ties survive.
//   4. top-p (0 < p < 1): indices sorted ascending by (G, index), softmax of the sorted values
//      (max subtracted), running sum in ascending order; entries with cumulative <= 1-p become
//      -inf except the last (the max). Among equal logits the lower index sorts first, so it is
//      removed first; the reference's sort leaves that order unspecified.
//   5. e_v = expf(G_v - max), S = sum of e_v over v = 0..V-1 in order, prob_v = e_v / S;
//      u = Philox4x32-10(key = seed, counter = (image_key[b], scale, l, 0)) -> [0,1) (core/
//      philox.h); pick the smallest v whose inclusive prefix sum of prob (v ascending, fp32)
//      exceeds u. If rounding leaves u >= the total, the last v with prob_v > 0 is taken.
//      A row whose logits are all -inf has no distribution; it yields the argmax rule's 0.
// The CUDA kernel must keep these orders (and no FMA contraction in step 1) to agree exactly.
// The draw depends only on (seed, image_key, scale, l), never on the batch layout or threads.
//
// Threads: one task per row (B*L rows, V <= a few thousand); scratch is per chunk.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <new>
#include <string>

#include "../core/ops-check.h"
#include "../core/philox.h"
#include "backend-cpu.h"

namespace {

// Lowest index of the maximum (NaN never wins; index 0 when every entry is -inf or NaN).
int32_t argmax_lowest(const float* g, int64_t V) {
    int32_t best = 0;
    float bv = -std::numeric_limits<float>::infinity();
    for (int64_t v = 0; v < V; ++v) {
        if (g[v] > bv) {
            bv = g[v];
            best = static_cast<int32_t>(v);
        }
    }
    return best;
}

// Steps 3-5 for one row; g (V floats) is consumed. s and order are V-long scratch.
int32_t sample_row(float* g, float* s, int32_t* order, int64_t V, int32_t top_k, float top_p, float u) {
    const float ninf = -std::numeric_limits<float>::infinity();
    if (top_k > 0 && top_k < V) {
        std::copy(g, g + V, s);
        std::nth_element(s, s + (top_k - 1), s + V, std::greater<float>());
        const float thr = s[top_k - 1];
        for (int64_t v = 0; v < V; ++v)
            if (g[v] < thr) g[v] = ninf;
    }
    if (top_p > 0.0f && top_p < 1.0f) {
        for (int64_t v = 0; v < V; ++v) order[v] = static_cast<int32_t>(v);
        std::sort(order, order + V, [g](int32_t a, int32_t b) { return g[a] < g[b] || (g[a] == g[b] && a < b); });
        const float m = g[order[V - 1]];
        if (m != ninf) {
            float S = 0.0f;
            for (int64_t j = 0; j < V; ++j) {
                s[j] = std::exp(g[order[j]] - m);
                S += s[j];
            }
            const float limit = 1.0f - top_p;
            float cum = 0.0f;
            for (int64_t j = 0; j + 1 < V; ++j) {  // j = V-1, the max, always survives
                cum += s[j] / S;
                if (cum <= limit) g[order[j]] = ninf;
            }
        }
    }
    float m = ninf;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, g[v]);
    if (m == ninf) return 0;
    float S = 0.0f;
    for (int64_t v = 0; v < V; ++v) {
        g[v] = std::exp(g[v] - m);
        S += g[v];
    }
    float cum = 0.0f;
    int32_t last_nz = 0;
    for (int64_t v = 0; v < V; ++v) {
        const float pv = g[v] / S;
        if (pv > 0.0f) last_nz = static_cast<int32_t>(v);
        cum += pv;
        if (cum > u) return static_cast<int32_t>(v);
    }
    return last_nz;
}

av_status sample_impl(const av_sample_params& p) {
    AV_TRY(av_check_sample(p));
    // logits [R, L, V] with R = B or 2B (cfg); idx [B, L]
    const int64_t V = p.logits.ne[0], L = p.logits.ne[1];
    const int64_t B = p.idx.ne[1];
    const bool greedy = p.top_k == 1;
    const int32_t* keys = nullptr;
    if (!greedy) keys = static_cast<const int32_t*>(p.image_key.data);

    const float* Z = static_cast<const float*>(p.logits.data);
    int32_t* out = static_cast<int32_t*>(p.idx.data);
    const float a = 1.0f + p.t, t = p.t;
    std::atomic<bool> oom{false};
    av_cpu_parallel_for(B * L, 4, [&](int64_t r0, int64_t r1) {
        std::unique_ptr<float[]> g(new (std::nothrow) float[2 * V]);
        std::unique_ptr<int32_t[]> order(greedy ? nullptr : new (std::nothrow) int32_t[V]);
        if (!g || (!greedy && !order)) {
            oom = true;
            return;
        }
        float* s = g.get() + V;
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t b = r / L, l = r % L;
            const float* zc = Z + (b * L + l) * V;  // conditional (or only) row
            float* gr = g.get();
            if (p.cfg) {
                const float* zn = Z + ((B + b) * L + l) * V;  // negative half
                for (int64_t v = 0; v < V; ++v) {
                    const float pos = a * zc[v];
                    const float neg = t * zn[v];
                    gr[v] = pos - neg;
                }
            } else {
                std::copy(zc, zc + V, gr);
            }
            if (greedy) {
                out[r] = argmax_lowest(gr, V);
                continue;
            }
            const float u = av_philox_uniform(p.seed, static_cast<uint32_t>(keys[b]), static_cast<uint32_t>(p.scale),
                                              static_cast<uint32_t>(l), 0u);
            out[r] = sample_row(gr, s, order.get(), V, p.top_k, p.top_p, u);
        }
    });
    if (oom) return av_status::error(AV_ERR_OOM, "sample: out of host memory for row scratch");
    return av_status::success();
}

}  // namespace

av_status av_cpu_sample(const av_sample_params& p) { return sample_impl(p); }
