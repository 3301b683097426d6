#pragma once
#include <napi.h>

// backendInfo(): compiled backends, devices, and why CUDA is unavailable.
Napi::Value av_binding_backend_info(const Napi::CallbackInfo& info);

// setCudaLibrary(path): where to look first for libav_cuda.so; returns false once it was looked for.
Napi::Value av_binding_set_cuda_library(const Napi::CallbackInfo& info);
