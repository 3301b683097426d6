// av_tensor: a non-owning view of backend memory (host memory for the CPU backend, device
// memory for CUDA). Shapes follow ggml's convention: ne[0] is the innermost (contiguous)
// dimension, ne[3] the outermost; nb[i] is the stride of dimension i in BYTES. Shape
// comments elsewhere are written row-major, so `// [B, L, C]` means ne = {C, L, B, 1}.
#pragma once

#include <cstddef>
#include <cstdint>

enum av_dtype {
    AV_F32 = 0,
    AV_F16 = 1,
    AV_BF16 = 2,
    AV_I32 = 3,
    AV_U8 = 4,
};

inline size_t av_dtype_size(av_dtype t) {
    switch (t) {
        case AV_F32: return 4;
        case AV_F16: return 2;
        case AV_BF16: return 2;
        case AV_I32: return 4;
        case AV_U8: return 1;
    }
    return 0;
}

inline const char* av_dtype_name(av_dtype t) {
    switch (t) {
        case AV_F32: return "f32";
        case AV_F16: return "f16";
        case AV_BF16: return "bf16";
        case AV_I32: return "i32";
        case AV_U8: return "u8";
    }
    return "?";
}

struct av_tensor {
    av_dtype dtype = AV_F32;
    int64_t ne[4] = {1, 1, 1, 1};
    int64_t nb[4] = {0, 0, 0, 0};
    void* data = nullptr;  // nullptr = "absent" for optional operands
};

inline bool av_tensor_present(const av_tensor& t) { return t.data != nullptr; }

inline int64_t av_tensor_nelements(const av_tensor& t) { return t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]; }

inline size_t av_tensor_nbytes(const av_tensor& t) {
    return static_cast<size_t>(av_tensor_nelements(t)) * av_dtype_size(t.dtype);
}

// Contiguous view of `data` with the given shape (ne[0] innermost).
inline av_tensor av_tensor_make(void* data, av_dtype dtype, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1,
                                int64_t ne3 = 1) {
    av_tensor t;
    t.dtype = dtype;
    t.data = data;
    t.ne[0] = ne0;
    t.ne[1] = ne1;
    t.ne[2] = ne2;
    t.ne[3] = ne3;
    t.nb[0] = static_cast<int64_t>(av_dtype_size(dtype));
    for (int i = 1; i < 4; ++i) t.nb[i] = t.nb[i - 1] * t.ne[i - 1];
    return t;
}

inline bool av_tensor_is_contiguous(const av_tensor& t) {
    int64_t s = static_cast<int64_t>(av_dtype_size(t.dtype));
    for (int i = 0; i < 4; ++i) {
        if (t.ne[i] != 1 && t.nb[i] != s) return false;
        s *= t.ne[i];
    }
    return true;
}

// fp16 / bf16 <-> fp32 conversions (round-to-nearest-even), usable by both backends' host code.
inline float av_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = static_cast<uint32_t>(h) << 16;
    return v.f;
}

inline uint16_t av_f32_to_bf16(float f) {
    union { float f; uint32_t u; } v;
    v.f = f;
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((v.u >> 16) | 0x40u);  // quiet NaN
    uint32_t rounding = 0x7fffu + ((v.u >> 16) & 1u);
    return static_cast<uint16_t>((v.u + rounding) >> 16);
}

inline float av_f16_to_f32(uint16_t h) {
    uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: renormalise
            exp = 127 - 15 + 1;
            while ((man & 0x400u) == 0) {
                man <<= 1;
                --exp;
            }
            man &= 0x3ffu;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    union { uint32_t u; float f; } v;
    v.u = bits;
    return v.f;
}

inline uint16_t av_f32_to_f16(float f) {
    union { float f; uint32_t u; } v;
    v.f = f;
    uint32_t sign = (v.u >> 16) & 0x8000u;
    uint32_t a = v.u & 0x7fffffffu;
    if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
    if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
    if (a < 0x38800000u) {  // subnormal or zero in f16
        if (a < 0x33000000u) return static_cast<uint16_t>(sign);
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;  // 113 + 13 = 126
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) ++half;
        return static_cast<uint16_t>(sign | half);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u;  // rebias 127 -> 15 with RNE
    return static_cast<uint16_t>(sign | (r >> 13));
}
