#include "test-blas.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

#include "args.h"
#include "workers.h"

namespace {

// cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
using sgemm_fn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                          int);
using set_threads_fn = void (*)(int);

std::once_flag g_once;
sgemm_fn g_sgemm = nullptr;
std::string g_err;

void load_openblas() {
    const char* names[] = {"libopenblas.so.0", "libopenblas.so", "libblas.so.3"};
    for (const char* n : names) {
        void* h = dlopen(n, RTLD_NOW | RTLD_LOCAL);
        if (h == nullptr) continue;
        g_sgemm = reinterpret_cast<sgemm_fn>(dlsym(h, "cblas_sgemm"));
        if (g_sgemm != nullptr) return;
    }
    g_err = "OpenBLAS not found (apt-get install libopenblas-dev)";
}

}  // namespace

// _blasSgemm({a: Float32Array [M,K], b: Float32Array [N,K], c: Float32Array [M,N], M, N, K, repeat})
// computes c = a b^T (the layout of av_linear: weights [N, K]).
Napi::Value av_binding_test_blas_sgemm(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
        Napi::TypeError::New(env, "_blasSgemm(params)").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    Napi::Object o = info[0].As<Napi::Object>();
    av_args args(env);
    Napi::Value ha, hb, hc;
    av_tensor a = args.tensor(o, "a", &ha);
    av_tensor b = args.tensor(o, "b", &hb);
    av_tensor c = args.tensor(o, "c", &hc);
    int M = static_cast<int>(args.int64(o, "M", 0));
    int N = static_cast<int>(args.int64(o, "N", 0));
    int K = static_cast<int>(args.int64(o, "K", 0));
    int repeat = static_cast<int>(args.int64(o, "repeat", 1));
    if (!args.ok() || a.data == nullptr || b.data == nullptr || c.data == nullptr) {
        Napi::TypeError::New(env, "_blasSgemm: " + (args.ok() ? std::string("a, b and c are required") : args.err))
            .ThrowAsJavaScriptException();
        return env.Undefined();
    }
    if (av_tensor_nelements(a) != int64_t(M) * K || av_tensor_nelements(b) != int64_t(N) * K ||
        av_tensor_nelements(c) != int64_t(M) * N) {
        Napi::TypeError::New(env, "_blasSgemm: sizes do not match M, N, K").ThrowAsJavaScriptException();
        return env.Undefined();
    }
    const float* pa = static_cast<const float*>(a.data);
    const float* pb = static_cast<const float*>(b.data);
    float* pc = static_cast<float*>(c.data);
    return av_task_worker::run(
        env, "alignvar:_blasSgemm",
        [=]() -> av_status {
            std::call_once(g_once, load_openblas);
            if (g_sgemm == nullptr) return av_status::error(AV_ERR_UNSUPPORTED, g_err);
            const int row_major = 101, no_trans = 111, trans = 112;
            for (int r = 0; r < repeat; ++r) g_sgemm(row_major, no_trans, trans, M, N, K, 1.0f, pa, K, pb, K, 0.0f, pc, N);
            return av_status::success();
        },
        nullptr, {ha, hb, hc});
}
