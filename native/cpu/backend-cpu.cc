// The CPU backend: host memory, synchronous compute, dispatch to one function per op.
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "backend-cpu.h"

namespace {

class av_backend_cpu final : public av_backend {
public:
    const char* name() const override { return "cpu"; }

    av_status alloc(size_t bytes, void** out) override {
        size_t n = (bytes + 63) / 64 * 64;
        void* p = std::aligned_alloc(64, n == 0 ? 64 : n);
        if (p == nullptr)
            return av_status::error(AV_ERR_OOM, "cpu: out of memory allocating " + std::to_string(bytes) + " bytes");
        *out = p;
        return av_status::success();
    }
    void free(void* ptr) override { std::free(ptr); }
    av_status upload(void* dst, const void* src, size_t bytes) override { return copy(dst, src, bytes); }
    av_status download(void* dst, const void* src, size_t bytes) override { return copy(dst, src, bytes); }
    av_status copy(void* dst, const void* src, size_t bytes) override {
        if (bytes) std::memmove(dst, src, bytes);
        return av_status::success();
    }
    av_status memset_zero(void* dst, size_t bytes) override {
        if (bytes) std::memset(dst, 0, bytes);
        return av_status::success();
    }
    av_status synchronize() override { return av_status::success(); }

    bool supports_op(av_op op, av_dtype wtype) const override {
        if (op >= AV_OP_COUNT) return false;
        return wtype == AV_F32 || wtype == AV_F16 || wtype == AV_BF16;
    }

    av_status compute(av_op op, const void* params) override {
        switch (op) {
            case AV_OP_LINEAR: return av_cpu_linear(*static_cast<const av_linear_params*>(params));
            case AV_OP_LAYERNORM: return av_cpu_layernorm(*static_cast<const av_layernorm_params*>(params));
            case AV_OP_MODULATE: return av_cpu_modulate(*static_cast<const av_modulate_params*>(params));
            case AV_OP_BINARY: return av_cpu_binary(*static_cast<const av_binary_params*>(params));
            case AV_OP_UNARY: return av_cpu_unary(*static_cast<const av_unary_params*>(params));
            case AV_OP_SOFTMAX: return av_cpu_softmax(*static_cast<const av_softmax_params*>(params));
            case AV_OP_GROUPNORM: return av_cpu_groupnorm(*static_cast<const av_groupnorm_params*>(params));
            case AV_OP_QKV_PREP: return av_cpu_qkv_prep(*static_cast<const av_qkv_prep_params*>(params));
            case AV_OP_ATTN: return av_cpu_attn(*static_cast<const av_attn_params*>(params));
            case AV_OP_CONV2D: return av_cpu_conv2d(*static_cast<const av_conv2d_params*>(params));
            case AV_OP_RESAMPLE: return av_cpu_resample(*static_cast<const av_resample_params*>(params));
            case AV_OP_VQ_LOOKUP: return av_cpu_vq_lookup(*static_cast<const av_vq_lookup_params*>(params));
            case AV_OP_VQ_NEAREST: return av_cpu_vq_nearest(*static_cast<const av_vq_nearest_params*>(params));
            case AV_OP_UPSAMPLE_ACCUM:
                return av_cpu_upsample_accum(*static_cast<const av_upsample_accum_params*>(params));
            case AV_OP_SAMPLE: return av_cpu_sample(*static_cast<const av_sample_params*>(params));
            case AV_OP_COPY: return av_cpu_copy(*static_cast<const av_copy_params*>(params));
            case AV_OP_DIFFUSION_STEP:
                return av_cpu_diffusion_step(*static_cast<const av_diffusion_step_params*>(params));
            case AV_OP_COUNT: break;
        }
        return av_status::error(AV_ERR_UNSUPPORTED, "cpu: unknown op " + std::to_string(static_cast<int>(op)));
    }
};

}  // namespace

av_backend* av_cpu_backend_new() { return new (std::nothrow) av_backend_cpu(); }
