// The CUDA backend: one device, one stream, a caching allocator, and the dispatch of every op
// of core/ops.h to its av_cuda_<op>() entry point (one file per op family).
//
// - Probe (av_cuda_probe): linked against the static CUDA runtime, nothing touches libcuda
//   before cudaGetDeviceCount, which fails cleanly on a machine without a driver
//   (cudaErrorInsufficientDriver / cudaErrorNoDevice); the reason is recorded in one line.
//   Devices below compute capability 8.0 are listed but rejected (the kernels use cp.async,
//   ldmatrix and bf16 mma.sync, all sm_80+).
// - Memory: cudaMallocAsync from the device's default pool with an unlimited release
//   threshold, so freed blocks stay cached in the pool (the caching allocator). Devices
//   without memory pools fall back to cudaMalloc/cudaFree. Failures return AV_ERR_OOM naming
//   the size asked for and the free/total memory.
// - Ordering: every copy and kernel runs on the backend's stream; upload/download use
//   cudaMemcpyAsync from pageable host memory, which the runtime stages, so the host buffer
//   may be reused when upload returns; download results are valid after synchronize().
// - Threads: the backend may be called from several libuv threads; one mutex serialises every
//   call that touches the stream (compute, copies, synchronize) and the scratch buffer. Each
//   call first makes the backend's device current on the calling thread.
// - Device-side invariants (e.g. a codebook index read from device memory) are recorded in a
//   device error record (common.cuh av_cuda_err_rec) that synchronize() reports and clears.
#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "attn.cuh"
#include "common.cuh"
#include "conv.cuh"
#include "diffusion.cuh"
#include "core/backend.h"
#include "core/cuda-plugin.h"
#include "elementwise.cuh"
#include "gemm.cuh"
#include "norm.cuh"
#include "rvq.cuh"
#include "sample.cuh"
#include "upsample.cuh"

namespace {

// A kernel with nothing to do: backend creation asks for its attributes, which fails with
// cudaErrorNoKernelImageForDevice when this build has no code the device can run.
__global__ void av_cuda_probe_kernel() {}

std::string err_str(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

std::string mib(size_t bytes) { return std::to_string((bytes + (1u << 19)) >> 20) + " MiB"; }

class av_backend_cuda final : public av_backend {
public:
    ~av_backend_cuda() override {
        cudaSetDevice(device_);
        if (stream_ != nullptr) cudaStreamSynchronize(stream_);
        if (scratch_ != nullptr) release(scratch_);
        if (err_ != nullptr) release(err_);
        if (stream_ != nullptr) cudaStreamDestroy(stream_);
    }

    av_status init(int device) {
        device_ = device;
        CUDA_CHECK(cudaSetDevice(device));
        cudaDeviceProp prop;
        CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
        ctx_.device = device;
        ctx_.sm_count = prop.multiProcessorCount;
        ctx_.cc_major = prop.major;
        ctx_.cc_minor = prop.minor;
        ctx_.smem_optin = prop.sharedMemPerBlockOptin;
        if (prop.major < 8)
            return av_status::error(AV_ERR_UNSUPPORTED, std::string("cuda: device ") + std::to_string(device) + " (" +
                                                            prop.name + ") has compute capability " +
                                                            std::to_string(prop.major) + "." +
                                                            std::to_string(prop.minor) + "; 8.0 or newer is needed");
        cudaFuncAttributes fa;
        cudaError_t e = cudaFuncGetAttributes(&fa, av_cuda_probe_kernel);
        if (e != cudaSuccess)
            return av_status::error(AV_ERR_UNSUPPORTED, std::string("cuda: this build has no kernels for ") +
                                                            prop.name + " (sm_" + std::to_string(prop.major) +
                                                            std::to_string(prop.minor) + "): " + err_str(e));
        int pools = 0;
        cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device);
        use_pool_ = pools != 0;
        if (use_pool_) {
            cudaMemPool_t pool;
            CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
            uint64_t threshold = UINT64_MAX;  // keep freed memory cached in the pool
            CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
        }
        CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        ctx_.stream = stream_;
        void* rec = nullptr;
        AV_TRY(raw_alloc(sizeof(av_cuda_err_rec), &rec));
        err_ = static_cast<av_cuda_err_rec*>(rec);
        CUDA_CHECK(cudaMemcpyAsync(err_, &err_clear_, sizeof(av_cuda_err_rec), cudaMemcpyHostToDevice, stream_));
        ctx_.err = err_;
        ctx_.get_scratch = &av_backend_cuda::scratch_thunk;
        ctx_.self = this;
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        return av_status::success();
    }

    const char* name() const override { return "cuda"; }

    av_status alloc(size_t bytes, void** out) override {
        std::lock_guard<std::mutex> lk(m_);
        CUDA_CHECK(cudaSetDevice(device_));
        return raw_alloc(bytes, out);
    }

    void free(void* ptr) override {
        if (ptr == nullptr) return;
        std::lock_guard<std::mutex> lk(m_);
        cudaSetDevice(device_);
        release(ptr);
    }

    av_status upload(void* dst, const void* src, size_t bytes) override {
        if (bytes == 0) return av_status::success();
        std::lock_guard<std::mutex> lk(m_);
        CUDA_CHECK(cudaSetDevice(device_));
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
        return av_status::success();
    }

    av_status download(void* dst, const void* src, size_t bytes) override {
        if (bytes == 0) return av_status::success();
        std::lock_guard<std::mutex> lk(m_);
        CUDA_CHECK(cudaSetDevice(device_));
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
        return av_status::success();
    }

    av_status copy(void* dst, const void* src, size_t bytes) override {
        if (bytes == 0) return av_status::success();
        std::lock_guard<std::mutex> lk(m_);
        CUDA_CHECK(cudaSetDevice(device_));
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
        return av_status::success();
    }

    av_status memset_zero(void* dst, size_t bytes) override {
        if (bytes == 0) return av_status::success();
        std::lock_guard<std::mutex> lk(m_);
        CUDA_CHECK(cudaSetDevice(device_));
        CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream_));
        return av_status::success();
    }

    av_status synchronize() override {
        std::lock_guard<std::mutex> lk(m_);
        CUDA_CHECK(cudaSetDevice(device_));
        av_cuda_err_rec rec;
        CUDA_CHECK(cudaMemcpyAsync(&rec, err_, sizeof(rec), cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        if (rec.flags == 0) return av_status::success();
        CUDA_CHECK(cudaMemcpyAsync(err_, &err_clear_, sizeof(av_cuda_err_rec), cudaMemcpyHostToDevice, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        std::string what;
        if (rec.flags & AV_CUDA_ERR_VQ_INDEX) {
            const long long tok = static_cast<long long>(rec.vq_first >> 32);
            const int32_t v = static_cast<int32_t>(static_cast<uint32_t>(rec.vq_first & 0xffffffffu));
            const long long T = rec.vq_T > 0 ? rec.vq_T : 1;
            what = "vq_lookup: idx[" + std::to_string(tok / T) + ", " + std::to_string(tok % T) + "] = " +
                   std::to_string(v) + " is outside the codebook [0, " + std::to_string(rec.vq_V) +
                   ") (found on the device; its outputs were written as 0)";
        }
        return av_status::error(AV_ERR_INVALID, "cuda: " + what);
    }

    bool supports_op(av_op op, av_dtype wtype) const override {
        if (op >= AV_OP_COUNT) return false;
        return wtype == AV_F32 || wtype == AV_F16 || wtype == AV_BF16;
    }

    av_status compute(av_op op, const void* params) override {
        std::lock_guard<std::mutex> lk(m_);
        CUDA_CHECK(cudaSetDevice(device_));
        switch (op) {
            case AV_OP_LINEAR: return av_cuda_linear(*static_cast<const av_linear_params*>(params), ctx_);
            case AV_OP_LAYERNORM: return av_cuda_layernorm(*static_cast<const av_layernorm_params*>(params), ctx_);
            case AV_OP_MODULATE: return av_cuda_modulate(*static_cast<const av_modulate_params*>(params), ctx_);
            case AV_OP_BINARY: return av_cuda_binary(*static_cast<const av_binary_params*>(params), ctx_);
            case AV_OP_UNARY: return av_cuda_unary(*static_cast<const av_unary_params*>(params), ctx_);
            case AV_OP_SOFTMAX: return av_cuda_softmax(*static_cast<const av_softmax_params*>(params), ctx_);
            case AV_OP_GROUPNORM: return av_cuda_groupnorm(*static_cast<const av_groupnorm_params*>(params), ctx_);
            case AV_OP_QKV_PREP: return av_cuda_qkv_prep(*static_cast<const av_qkv_prep_params*>(params), ctx_);
            case AV_OP_ATTN: return av_cuda_attn(*static_cast<const av_attn_params*>(params), ctx_);
            case AV_OP_CONV2D: return av_cuda_conv2d(*static_cast<const av_conv2d_params*>(params), ctx_);
            case AV_OP_RESAMPLE: return av_cuda_resample(*static_cast<const av_resample_params*>(params), ctx_);
            case AV_OP_VQ_LOOKUP: return av_cuda_vq_lookup(*static_cast<const av_vq_lookup_params*>(params), ctx_);
            case AV_OP_VQ_NEAREST:
                return av_cuda_vq_nearest(*static_cast<const av_vq_nearest_params*>(params), ctx_);
            case AV_OP_UPSAMPLE_ACCUM:
                return av_cuda_upsample_accum(*static_cast<const av_upsample_accum_params*>(params), ctx_);
            case AV_OP_SAMPLE: return av_cuda_sample(*static_cast<const av_sample_params*>(params), ctx_);
            case AV_OP_COPY: return av_cuda_copy(*static_cast<const av_copy_params*>(params), ctx_);
            case AV_OP_DIFFUSION_STEP:
                return av_cuda_diffusion_step(*static_cast<const av_diffusion_step_params*>(params), ctx_);
            case AV_OP_COUNT: break;
        }
        return av_status::error(AV_ERR_UNSUPPORTED, "cuda: unknown op " + std::to_string(static_cast<int>(op)));
    }

private:
    av_status raw_alloc(size_t bytes, void** out) {
        size_t n = bytes == 0 ? 256 : bytes;
        cudaError_t e = use_pool_ ? cudaMallocAsync(out, n, stream_ != nullptr ? stream_ : cudaStreamPerThread)
                                  : cudaMalloc(out, n);
        if (e != cudaSuccess) {
            cudaGetLastError();  // allocation errors are not sticky; clear them
            size_t free_b = 0, total_b = 0;
            cudaMemGetInfo(&free_b, &total_b);
            return av_status::error(AV_ERR_OOM, "cuda: out of device memory allocating " + std::to_string(bytes) +
                                                    " bytes (" + mib(bytes) + "; " + mib(free_b) + " free of " +
                                                    mib(total_b) + "): " + err_str(e));
        }
        return av_status::success();
    }

    void release(void* ptr) {
        if (use_pool_)
            cudaFreeAsync(ptr, stream_);
        else
            cudaFree(ptr);
    }

    // Grow-only scratch buffer shared by the ops of this backend (called under m_).
    static av_status scratch_thunk(void* self, size_t bytes, void** out) {
        auto* be = static_cast<av_backend_cuda*>(self);
        if (bytes > be->scratch_bytes_) {
            if (be->scratch_ != nullptr) be->release(be->scratch_);
            be->scratch_ = nullptr;
            be->scratch_bytes_ = 0;
            size_t want = bytes + bytes / 4;  // headroom so slowly growing requests do not churn
            AV_TRY(be->raw_alloc(want, &be->scratch_));
            be->scratch_bytes_ = want;
        }
        *out = be->scratch_;
        return av_status::success();
    }

    int device_ = 0;
    bool use_pool_ = false;
    cudaStream_t stream_ = nullptr;
    av_cuda_err_rec* err_ = nullptr;
    const av_cuda_err_rec err_clear_{};  // the cleared record, copied over err_ after a report
    void* scratch_ = nullptr;
    size_t scratch_bytes_ = 0;
    av_cuda_ctx ctx_;
    std::mutex m_;
};

// The probe's result does not change while the process runs; compute it once.
std::once_flag g_probe_once;
av_backend_availability g_probe;

void probe_once() {
    av_backend_availability& out = g_probe;
    out.name = "cuda";
    out.compiled = true;
    out.available = false;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (e == cudaErrorInsufficientDriver)
            out.reason = "no usable NVIDIA driver (cudaGetDeviceCount: " + err_str(e) +
                         "); install or update the NVIDIA driver to use the GPU";
        else if (e == cudaErrorNoDevice)
            out.reason = "no CUDA device found (cudaGetDeviceCount: " + err_str(e) + ")";
        else
            out.reason = "the CUDA runtime could not start (cudaGetDeviceCount: " + err_str(e) + ")";
        return;
    }
    if (n == 0) {
        out.reason = "no CUDA device found";
        return;
    }
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    out.detail = "driver " + std::to_string(driver / 1000) + "." + std::to_string(driver % 1000 / 10) + ", runtime " +
                 std::to_string(runtime / 1000) + "." + std::to_string(runtime % 1000 / 10);
    bool any = false;
    std::string too_old;
    for (int d = 0; d < n; ++d) {
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) {
            cudaGetLastError();
            continue;
        }
        av_device_info info;
        info.name = prop.name;
        info.total_memory = prop.totalGlobalMem;
        info.compute_major = prop.major;
        info.compute_minor = prop.minor;
        out.devices.push_back(info);
        if (prop.major >= 8)
            any = true;
        else if (too_old.empty())
            too_old = std::string(prop.name) + " has compute capability " + std::to_string(prop.major) + "." +
                      std::to_string(prop.minor);
    }
    if (!any) {
        // The reason names the device; `devices` lists usable backends' devices only.
        out.reason = too_old.empty() ? "no CUDA device could be queried"
                                     : too_old + "; the CUDA backend needs compute capability 8.0 or newer";
        out.devices.clear();
        return;
    }
    out.available = true;
    out.reason.clear();
}

}  // namespace

static void av_cuda_probe(av_backend_availability* out) {
    std::call_once(g_probe_once, probe_once);
    *out = g_probe;
}

static av_status av_cuda_backend_create(int device, std::unique_ptr<av_backend>* out) {
    av_backend_availability a;
    av_cuda_probe(&a);
    if (!a.available) return av_status::error(AV_ERR_UNSUPPORTED, "cuda: unavailable: " + a.reason);
    if (device < 0 || device >= static_cast<int>(a.devices.size()))
        return av_status::error(AV_ERR_INVALID, "cuda: device " + std::to_string(device) + " does not exist (" +
                                                    std::to_string(a.devices.size()) + " found)");
    std::unique_ptr<av_backend_cuda> be(new (std::nothrow) av_backend_cuda());
    if (!be) return av_status::error(AV_ERR_OOM, "cuda: could not create backend");
    AV_TRY(be->init(device));
    *out = std::move(be);
    return av_status::success();
}

// The library's only exported symbol (cuda/av-cuda.map); backend-reg.cc checks abi and version.
extern "C" const av_cuda_plugin* av_cuda_plugin_get() {
    static const av_cuda_plugin plugin = {AV_CUDA_PLUGIN_ABI, AV_VERSION, av_cuda_probe, av_cuda_backend_create};
    return &plugin;
}
