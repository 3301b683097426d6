// Philox4x32-10 counter-based RNG (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as
// easy as 1, 2, 3", SC'11; the Random123 library). Header-only and usable from host C++ and
// CUDA device code, so both backends draw bit-identical numbers for the same (key, counter).
//
// One call maps a 128-bit counter and a 64-bit key to 128 random bits. Sampling (spec 5.3) keys
// it with the user seed and uses counter = (image_key, scale, position, 0), so every draw is a
// pure function of what it samples and never of batch composition or thread schedule.
// Checked against the Random123 known-answer vectors (kat_vectors) in test/parity/sample.test.ts.
#pragma once

#include <cstdint>

#include "hd.h"

struct av_philox4x32 {
    uint32_t v[4];
};

// Round multipliers and Weyl key increments of Philox4x32 (Random123 philox.h).
constexpr uint32_t AV_PHILOX_M0 = 0xD2511F53u;
constexpr uint32_t AV_PHILOX_M1 = 0xCD9E8D57u;
constexpr uint32_t AV_PHILOX_W0 = 0x9E3779B9u;
constexpr uint32_t AV_PHILOX_W1 = 0xBB67AE85u;

// 32x32 -> 64-bit product split into its high and low words.
AV_HD inline uint32_t av_philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
    uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
    *hi = static_cast<uint32_t>(p >> 32);
    return static_cast<uint32_t>(p);
}

// One Philox round: two multiplications, the words permuted and xored with the key.
AV_HD inline av_philox4x32 av_philox_round(av_philox4x32 c, uint32_t k0, uint32_t k1) {
    uint32_t hi0, hi1;
    uint32_t lo0 = av_philox_mulhilo(AV_PHILOX_M0, c.v[0], &hi0);
    uint32_t lo1 = av_philox_mulhilo(AV_PHILOX_M1, c.v[2], &hi1);
    av_philox4x32 r;
    r.v[0] = hi1 ^ c.v[1] ^ k0;
    r.v[1] = lo1;
    r.v[2] = hi0 ^ c.v[3] ^ k1;
    r.v[3] = lo0;
    return r;
}

// Philox4x32-10: 10 rounds, the key bumped by (W0, W1) between consecutive rounds.
AV_HD inline av_philox4x32 av_philox4x32_10(av_philox4x32 ctr, uint32_t k0, uint32_t k1) {
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += AV_PHILOX_W0;
            k1 += AV_PHILOX_W1;
        }
        ctr = av_philox_round(ctr, k0, k1);
    }
    return ctr;
}

// u ~ U[0, 1) from the first output word of Philox4x32-10 keyed by `seed` (key word 0 = low
// 32 bits, key word 1 = high 32 bits) at counter (c0, c1, c2, c3). The top 24 bits make a float
// exactly: (x >> 8) * 2^-24, so u < 1 always and every value is representable.
AV_HD inline float av_philox_uniform(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
    av_philox4x32 ctr;
    ctr.v[0] = c0;
    ctr.v[1] = c1;
    ctr.v[2] = c2;
    ctr.v[3] = c3;
    av_philox4x32 out = av_philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    return static_cast<float>(out.v[0] >> 8) * (1.0f / 16777216.0f);
}
