// Host-side output conversion (spec 2.2): decoder output -> clamp [-1, 1] -> [0, 1] -> uint8
// by rounding half up, then the optional AdaIN colour fix against the upsampled LR. Per image and
// channel, statistics in float64 over all pixels, so results do not depend on batch size.
#pragma once

#include <cstdint>

// dec [3, S, S] (decoder output before the clamp) -> rgb [S, S, 3]. With src ([3, S, S] in
// [0, 1], the PIL-bicubic upsampled LR) the AdaIN colour fix is applied (unbiased variance,
// eps 1e-5, clamp to [0, 1], truncation to uint8, as torchvision ToPILImage).
void av_postprocess(const float* dec, const float* src, int64_t S, uint8_t* rgb);
