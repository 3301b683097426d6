// The entry point of the CUDA backend library (libav_cuda.so, built from cuda/), which
// backend-reg.cc loads with dlopen at run time so the addon itself carries no CUDA code.
// Both sides are built from the same sources with the same compiler (the C++ types of
// backend.h cross the boundary); `version` guards against pairing two releases, whose op
// params structs (core/ops.h) may differ. The library is never unloaded.
#pragma once

#include <memory>

#include "backend.h"

// Bumped when this struct changes.
#define AV_CUDA_PLUGIN_ABI 1
#define AV_CUDA_PLUGIN_SYMBOL "av_cuda_plugin_get"
#define AV_CUDA_LIBRARY_NAME "libav_cuda.so"

struct av_cuda_plugin {
    int abi;               // AV_CUDA_PLUGIN_ABI of the library
    const char* version;   // package version the library was built from (AV_VERSION)
    void (*probe)(av_backend_availability* out);
    av_status (*backend_create)(int device, std::unique_ptr<av_backend>* out);
};

extern "C" const av_cuda_plugin* av_cuda_plugin_get();
