#pragma once
#include <napi.h>

// `_blasSgemm(params)`: OpenBLAS cblas_sgemm loaded with dlopen on first call, for the
// benchmark's side-by-side figures only (never used by the engine).
Napi::Value av_binding_test_blas_sgemm(const Napi::CallbackInfo& info);
