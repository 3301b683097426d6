// AsyncWorkers: parse on the main thread, run Execute() on a libuv thread with zero N-API
// calls, settle a Promise in OnOK/OnError. Native errors carry the av_status message.
#pragma once

#include <napi.h>

#include <functional>
#include <string>
#include <vector>

#include "core/status.h"

// Runs `work` off the main thread and resolves with `result(env)` (undefined when empty).
// `keep` holds JS values (typed arrays, the owning session) alive until the promise settles.
class av_task_worker : public Napi::AsyncWorker {
public:
    using work_fn = std::function<av_status()>;
    using result_fn = std::function<Napi::Value(Napi::Env)>;

    av_task_worker(Napi::Env env, const char* name, work_fn work, result_fn result,
                   const std::vector<Napi::Value>& keep);
    ~av_task_worker() override;

    Napi::Promise promise() { return deferred_.Promise(); }

    void Execute() override;
    void OnOK() override;
    void OnError(const Napi::Error& e) override;

    // Queues the worker and returns its promise.
    static Napi::Promise run(Napi::Env env, const char* name, work_fn work, result_fn result,
                             const std::vector<Napi::Value>& keep);

private:
    Napi::Promise::Deferred deferred_;
    work_fn work_;
    result_fn result_;
    std::vector<Napi::Reference<Napi::Value>> keep_;
    std::string code_;
};

// A JS Error with a `code` property ("AV_ERR_INVALID", ...).
Napi::Error av_napi_error(Napi::Env env, const av_status& s);
const char* av_status_code_name(av_status_code c);
