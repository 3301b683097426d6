// av_backend: what a compute backend implements. CPU is always built in; CUDA is a library
// loaded at run time and used when available (backend-reg.cc). All memory handed to
// compute() must come from the same backend's alloc() (or, for CPU, any host memory).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "ops.h"
#include "status.h"

struct av_device_info {
    std::string name;
    size_t total_memory = 0;
    int compute_major = 0;
    int compute_minor = 0;
};

class av_backend {
public:
    virtual ~av_backend() = default;
    virtual const char* name() const = 0;

    virtual av_status alloc(size_t bytes, void** out) = 0;
    virtual void free(void* ptr) = 0;
    virtual av_status upload(void* dst, const void* src, size_t bytes) = 0;
    virtual av_status download(void* dst, const void* src, size_t bytes) = 0;
    virtual av_status copy(void* dst, const void* src, size_t bytes) = 0;  // within the backend
    virtual av_status memset_zero(void* dst, size_t bytes) = 0;
    virtual av_status synchronize() = 0;

    // Whether compute(op, ...) is implemented for weights of dtype wtype.
    virtual bool supports_op(av_op op, av_dtype wtype) const = 0;
    // params points to the av_<op>_params struct matching op.
    virtual av_status compute(av_op op, const void* params) = 0;
};

struct av_backend_availability {
    std::string name;      // "cpu" | "cuda"
    bool compiled = false;
    bool available = false;
    std::string reason;    // why it is not available (empty when available)
    std::vector<av_device_info> devices;
    std::string detail;    // e.g. SIMD level for CPU
};

// Every backend this build knows, with why it can or cannot be used here.
std::vector<av_backend_availability> av_backend_list();

// Where to look first for the CUDA backend library (libav_cuda.so); before that, only next to
// the addon. Returns false (and changes nothing) once the library has been looked for.
bool av_backend_set_cuda_library(const std::string& path);

// Creates a backend by name ("cpu" or "cuda"); device index for CUDA.
av_status av_backend_create(const std::string& name, int device, std::unique_ptr<av_backend>* out);

// Typed helper so call sites read av_compute(be, AV_OP_LINEAR, p).
template <typename P>
inline av_status av_compute(av_backend& be, av_op op, const P& params) {
    return be.compute(op, &params);
}
