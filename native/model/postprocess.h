// Host-side output conversion (spec 2.2): decoder output -> clamp [-1, 1] -> [0, 1] -> uint8
// by rounding half up, then an optional colour fix against the upsampled LR: AdaIN (spec 2.2.3;
// per image and channel, statistics in float64 over all pixels, so results do not depend on batch
// size) or the wavelet fix (spec 2.2.4).
#pragma once

#include <cstdint>

// dec [3, S, S] (decoder output before the clamp) -> rgb [S, S, 3]. With src ([3, S, S] in
// [0, 1], the PIL-bicubic upsampled LR) the AdaIN colour fix is applied (unbiased variance,
// eps 1e-5, clamp to [0, 1], truncation to uint8, as torchvision ToPILImage); with `wavelet` set,
// the wavelet fix instead: the high bands of the output plus the lowest band of src (5 levels of a
// dilated [1 2 1]^2/16 blur, dilations 1..16, replicate padding), clamp, truncation.
void av_postprocess(const float* dec, const float* src, int64_t S, uint8_t* rgb, bool wavelet = false);
