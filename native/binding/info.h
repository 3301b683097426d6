#pragma once
#include <napi.h>

// backendInfo(): compiled backends, devices, and why CUDA is unavailable.
Napi::Value av_binding_backend_info(const Napi::CallbackInfo& info);
