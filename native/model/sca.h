// SCA, spatial-consistent autoregression (spec 11): structural guidance maps computed on the
// host (11.1, small per-image code in float64 as the reference), the mask generator M_phi on
// the backend (11.2), and the per-key attention bias / token weights derived from its masks
// (11.3, 11.4). Reference: training/avtrain/sca.py (structural_map, structural_guidance,
// MaskGenerator.level_mask, key_bias, token_weights).
#pragma once

#include <cstdint>
#include <vector>

#include "core/backend.h"

// Normalised structure map Sn [h, w] (float64) of one native LR image, uint8 RGB [h, w, 3]
// (spec 11.1 steps 1-5).
void av_sg_structure_map(const uint8_t* rgb, int64_t h, int64_t w, std::vector<double>* sn);

// PyTorch 'area' (adaptive average pooling) of a float64 [h, w] plane to [n, n], summing each
// window in float64 then dividing by its height and width; the result is rounded to fp32.
void av_sg_area_down(const std::vector<double>& x, int64_t h, int64_t w, int64_t n, float* y);

struct av_sca_w {
    av_tensor mask0_w, mask0_b;  // Conv(3, 1+E -> 32, p1)
    av_tensor mask2_w, mask2_b;  // Conv(3, 32 -> 32, p2, dilation 2)
    av_tensor mask4_w, mask4_b;  // Conv(1, 33 -> 1)
    std::vector<float> level_embed;  // [K, E] host copy
    std::vector<float> gamma;        // [K] host copy
};

// Masks of one level for B images: sg [B, n, n] (host, fp32) -> m [B, n*n] written to `m_out`
// (backend memory, fp32). Scratch is allocated and freed inside.
av_status av_sca_level_masks(av_backend& be, const av_sca_w& w, int64_t level, const float* sg, int64_t B, int64_t n,
                             void* m_out);
