#include "workers.h"

const char* av_status_code_name(av_status_code c) {
    switch (c) {
        case AV_OK: return "AV_OK";
        case AV_ERR_INVALID: return "AV_ERR_INVALID";
        case AV_ERR_UNSUPPORTED: return "AV_ERR_UNSUPPORTED";
        case AV_ERR_OOM: return "AV_ERR_OOM";
        case AV_ERR_BACKEND: return "AV_ERR_BACKEND";
        case AV_ERR_CANCELLED: return "AV_ERR_CANCELLED";
    }
    return "AV_ERR";
}

Napi::Error av_napi_error(Napi::Env env, const av_status& s) {
    Napi::Error e = Napi::Error::New(env, s.message);
    e.Set("code", Napi::String::New(env, av_status_code_name(s.code)));
    return e;
}

av_task_worker::av_task_worker(Napi::Env env, const char* name, work_fn work, result_fn result,
                               const std::vector<Napi::Value>& keep)
    : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
      result_(std::move(result)) {
    keep_.reserve(keep.size());
    for (const auto& v : keep) keep_.push_back(Napi::Persistent(v));
}

av_task_worker::~av_task_worker() = default;

void av_task_worker::Execute() {
    av_status s;
    try {
        s = work_();
    } catch (const std::bad_alloc&) {
        s = av_status::error(AV_ERR_OOM, "out of host memory");
    } catch (const std::exception& e) {
        s = av_status::error(AV_ERR_BACKEND, e.what());
    }
    if (!s.ok()) {
        code_ = av_status_code_name(s.code);
        SetError(s.message);
    }
}

void av_task_worker::OnOK() {
    Napi::Env env = Env();
    deferred_.Resolve(result_ ? result_(env) : env.Undefined());
}

void av_task_worker::OnError(const Napi::Error& e) {
    Napi::Error err = Napi::Error::New(Env(), e.Message());
    if (!code_.empty()) err.Set("code", Napi::String::New(Env(), code_));
    deferred_.Reject(err.Value());
}

Napi::Promise av_task_worker::run(Napi::Env env, const char* name, work_fn work, result_fn result,
                                  const std::vector<Napi::Value>& keep) {
    auto* w = new av_task_worker(env, name, std::move(work), std::move(result), keep);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
}
