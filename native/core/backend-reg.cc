// Backend registry: the CPU backend is always built in; the CUDA backend is compiled in when
// nvcc was found at build time (AV_HAVE_CUDA) and probed at run time. Linked against the
// static CUDA runtime, nothing touches libcuda before the probe, which fails cleanly on a
// machine without a driver; the reason is recorded for backendInfo().
#include <cstring>
#include <string>

#include "../cpu/backend-cpu.h"
#include "backend.h"

av_backend* av_cpu_backend_new();

#ifdef AV_HAVE_CUDA
// Implemented in cuda/backend-cuda.cu; plain C++ signatures so native/ needs no CUDA header.
void av_cuda_probe(av_backend_availability* out);
av_status av_cuda_backend_create(int device, std::unique_ptr<av_backend>* out);
#endif  // AV_HAVE_CUDA

static const char* const k_op_names[AV_OP_COUNT] = {
    "linear", "layernorm", "modulate", "binary",   "unary",          "softmax", "groupnorm", "qkv_prep",
    "attn",   "conv2d",    "resample", "vq_lookup", "vq_nearest", "upsample_accum", "sample", "copy",
};

const char* av_op_name(av_op op) { return op < AV_OP_COUNT ? k_op_names[op] : "?"; }

av_op av_op_from_name(const char* name) {
    for (int i = 0; i < AV_OP_COUNT; ++i)
        if (std::strcmp(k_op_names[i], name) == 0) return static_cast<av_op>(i);
    return AV_OP_COUNT;
}

std::vector<av_backend_availability> av_backend_list() {
    std::vector<av_backend_availability> out;
    av_backend_availability cpu;
    cpu.name = "cpu";
    cpu.compiled = true;
    cpu.available = true;
    cpu.detail = std::string("simd=") + av_cpu_simd_name(av_cpu_simd_level()) +
                 " threads=" + std::to_string(av_cpu_num_threads());
    out.push_back(cpu);

    av_backend_availability cuda;
    cuda.name = "cuda";
#ifdef AV_HAVE_CUDA
    cuda.compiled = true;
    av_cuda_probe(&cuda);
#else
    cuda.compiled = false;
    cuda.available = false;
    cuda.reason = "this build has no CUDA backend (nvcc was not found when the addon was built)";
#endif  // AV_HAVE_CUDA
    out.push_back(cuda);
    return out;
}

av_status av_backend_create(const std::string& name, int device, std::unique_ptr<av_backend>* out) {
    if (name == "cpu") {
        av_backend* be = av_cpu_backend_new();
        if (be == nullptr) return av_status::error(AV_ERR_OOM, "cpu: could not create backend");
        out->reset(be);
        return av_status::success();
    }
    if (name == "cuda") {
#ifdef AV_HAVE_CUDA
        return av_cuda_backend_create(device, out);
#else
        (void)device;
        return av_status::error(AV_ERR_UNSUPPORTED,
                                "cuda: this build has no CUDA backend (nvcc was not found when the addon was built)");
#endif  // AV_HAVE_CUDA
    }
    return av_status::error(AV_ERR_INVALID, "unknown backend '" + name + "'");
}
