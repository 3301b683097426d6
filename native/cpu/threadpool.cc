// A fixed pool of worker threads shared by every CPU op. One parallel region runs at a time:
// concurrent callers (several AsyncWorkers) queue on a mutex, because each region already
// uses every core. Work is handed out in chunks through an atomic counter.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "backend-cpu.h"

namespace {

thread_local bool tl_in_region = false;

class av_pool {
public:
    av_pool() {
        int n = static_cast<int>(std::thread::hardware_concurrency());
        if (const char* env = std::getenv("AV_NUM_THREADS")) {
            int v = std::atoi(env);
            if (v > 0) n = v;
        }
        n_threads_ = std::max(1, n);
        for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
    }

    ~av_pool() {
        {
            std::lock_guard<std::mutex> lk(m_);
            stop_ = true;
        }
        cv_.notify_all();
        for (auto& t : workers_) t.join();
    }

    int size() const { return n_threads_; }

    void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
        if (n <= 0) return;
        grain = std::max<int64_t>(1, grain);
        int64_t n_chunks = (n + grain - 1) / grain;
        if (tl_in_region || n_threads_ == 1 || n_chunks == 1) {
            fn(0, n);
            return;
        }
        // Aim at ~4 chunks per thread for balance, never below grain.
        int64_t chunk = std::max(grain, (n + 4 * n_threads_ - 1) / (4 * n_threads_));
        std::lock_guard<std::mutex> region(region_m_);
        {
            std::lock_guard<std::mutex> lk(m_);
            fn_ = &fn;
            n_ = n;
            chunk_ = chunk;
            next_.store(0);
            active_ = static_cast<int>(workers_.size());
            ++generation_;
        }
        cv_.notify_all();
        tl_in_region = true;
        work();
        tl_in_region = false;
        std::unique_lock<std::mutex> lk(m_);
        done_cv_.wait(lk, [this] { return active_ == 0; });
        fn_ = nullptr;
    }

private:
    void work() {
        for (;;) {
            int64_t b = next_.fetch_add(chunk_);
            if (b >= n_) break;
            (*fn_)(b, std::min(n_, b + chunk_));
        }
    }

    void worker_loop() {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lk(m_);
                cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
            }
            tl_in_region = true;
            work();
            tl_in_region = false;
            std::lock_guard<std::mutex> lk(m_);
            if (--active_ == 0) done_cv_.notify_one();
        }
    }

    int n_threads_ = 1;
    std::vector<std::thread> workers_;
    std::mutex m_, region_m_;
    std::condition_variable cv_, done_cv_;
    bool stop_ = false;
    uint64_t generation_ = 0;
    const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
    int64_t n_ = 0, chunk_ = 1;
    std::atomic<int64_t> next_{0};
    int active_ = 0;
};

av_pool& pool() {
    static av_pool p;
    return p;
}

}  // namespace

void av_cpu_parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    pool().run(n, grain, fn);
}

int av_cpu_num_threads() { return pool().size(); }

av_cpu_simd av_cpu_simd_level() {
    static const av_cpu_simd level = [] {
        av_cpu_simd s = AV_SIMD_SCALAR;
#if defined(__x86_64__) || defined(_M_X64)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) s = AV_SIMD_AVX2;
        if (s == AV_SIMD_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl"))
            s = AV_SIMD_AVX512;
#endif
        if (const char* env = std::getenv("AV_SIMD")) {
            av_cpu_simd cap = s;
            if (std::strcmp(env, "scalar") == 0) cap = AV_SIMD_SCALAR;
            if (std::strcmp(env, "avx2") == 0) cap = AV_SIMD_AVX2;
            if (std::strcmp(env, "avx512") == 0) cap = AV_SIMD_AVX512;
            s = std::min(s, cap);
        }
        return s;
    }();
    return level;
}

const char* av_cpu_simd_name(av_cpu_simd s) {
    switch (s) {
        case AV_SIMD_SCALAR: return "scalar";
        case AV_SIMD_AVX2: return "avx2";
        case AV_SIMD_AVX512: return "avx512";
    }
    return "?";
}
