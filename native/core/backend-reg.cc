// Backend registry: the CPU backend is always built in; the CUDA backend is a separate library
// (libav_cuda.so, core/cuda-plugin.h) loaded with dlopen on first use, so the addon carries no
// CUDA code. Where it is looked for, in order: the path set by av_backend_set_cuda_library()
// (the JS loader passes $ALIGNVAR_CUDA_LIBRARY or the @alignvar/linux-x64-cuda package), then
// next to the addon itself (a source build with AV_CUDA=ON puts it there). The library links
// the static CUDA runtime, so it loads without a driver and its probe fails cleanly; every
// reason (not found, dlopen error, other release, no driver) is recorded for backendInfo().
#include <dlfcn.h>
#include <sys/stat.h>

#include <cstring>
#include <mutex>
#include <string>

#include "../cpu/backend-cpu.h"
#include "backend.h"
#include "cuda-plugin.h"

av_backend* av_cpu_backend_new();

namespace {

std::mutex g_cuda_mutex;
std::string g_cuda_path;                  // set by av_backend_set_cuda_library()
bool g_cuda_tried = false;                // the search ran (it runs once)
const av_cuda_plugin* g_cuda = nullptr;   // the loaded library, or null
std::string g_cuda_reason;                // why g_cuda is null

bool file_exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The folder holding the addon (.node) this code is linked into.
std::string addon_dir() {
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&av_backend_list), &info) == 0 || info.dli_fname == nullptr) return "";
    std::string f = info.dli_fname;
    size_t slash = f.rfind('/');
    return slash == std::string::npos ? "." : f.substr(0, slash);
}

// Tries one candidate; on failure appends why to *why and returns null.
const av_cuda_plugin* try_load(const std::string& path, std::string* why) {
    if (!file_exists(path)) {
        *why += "; " + path + ": not found";
        return nullptr;
    }
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
        const char* e = dlerror();
        *why += "; " + path + ": " + (e ? e : "dlopen failed");
        return nullptr;
    }
    using get_fn = const av_cuda_plugin* (*)();
    auto get = reinterpret_cast<get_fn>(dlsym(h, AV_CUDA_PLUGIN_SYMBOL));
    const av_cuda_plugin* p = get ? get() : nullptr;
    if (p == nullptr) {
        *why += "; " + path + ": not an alignvar CUDA library (no " AV_CUDA_PLUGIN_SYMBOL ")";
    } else if (p->abi != AV_CUDA_PLUGIN_ABI || p->version == nullptr || std::strcmp(p->version, AV_VERSION) != 0) {
        *why += "; " + path + ": built for alignvar " + (p->version ? p->version : "?") + ", this addon is " +
                AV_VERSION + " (install the matching @alignvar/linux-x64-cuda@" AV_VERSION ")";
        p = nullptr;
    }
    // A library that does not fit stays loaded (unloading a CUDA runtime is not safe); it is
    // never called.
    return p;
}

// The loaded CUDA library or null with g_cuda_reason set; searches once.
const av_cuda_plugin* cuda_plugin() {
    std::lock_guard<std::mutex> lock(g_cuda_mutex);
    if (g_cuda_tried) return g_cuda;
    g_cuda_tried = true;
    std::string why;
    if (!g_cuda_path.empty()) g_cuda = try_load(g_cuda_path, &why);
    std::string dir = addon_dir();
    if (g_cuda == nullptr && !dir.empty()) g_cuda = try_load(dir + "/" AV_CUDA_LIBRARY_NAME, &why);
    if (g_cuda == nullptr)
        g_cuda_reason = "the CUDA backend library " AV_CUDA_LIBRARY_NAME " could not be loaded (" + why.substr(2) +
                        "); install @alignvar/linux-x64-cuda or build from source with AV_CUDA=ON";
    return g_cuda;
}

}  // namespace

bool av_backend_set_cuda_library(const std::string& path) {
    std::lock_guard<std::mutex> lock(g_cuda_mutex);
    if (g_cuda_tried) return false;
    g_cuda_path = path;
    return true;
}

static const char* const k_op_names[AV_OP_COUNT] = {
    "linear", "layernorm", "modulate", "binary",   "unary",          "softmax", "groupnorm", "qkv_prep",
    "attn",   "conv2d",    "resample", "vq_lookup", "vq_nearest", "upsample_accum", "sample", "copy",
    "diffusion_step",
};

const char* av_op_name(av_op op) { return op < AV_OP_COUNT ? k_op_names[op] : "?"; }

av_op av_op_from_name(const char* name) {
    for (int i = 0; i < AV_OP_COUNT; ++i)
        if (std::strcmp(k_op_names[i], name) == 0) return static_cast<av_op>(i);
    return AV_OP_COUNT;
}

std::vector<av_backend_availability> av_backend_list() {
    std::vector<av_backend_availability> out;
    av_backend_availability cpu;
    cpu.name = "cpu";
    cpu.compiled = true;
    cpu.available = true;
    cpu.detail = std::string("simd=") + av_cpu_simd_name(av_cpu_simd_level()) +
                 " threads=" + std::to_string(av_cpu_num_threads());
    out.push_back(cpu);

    av_backend_availability cuda;
    const av_cuda_plugin* plugin = cuda_plugin();
    if (plugin != nullptr) {
        plugin->probe(&cuda);
        cuda.compiled = true;
    } else {
        cuda.compiled = false;
        cuda.available = false;
        cuda.reason = g_cuda_reason;
    }
    cuda.name = "cuda";
    out.push_back(cuda);
    return out;
}

av_status av_backend_create(const std::string& name, int device, std::unique_ptr<av_backend>* out) {
    if (name == "cpu") {
        av_backend* be = av_cpu_backend_new();
        if (be == nullptr) return av_status::error(AV_ERR_OOM, "cpu: could not create backend");
        out->reset(be);
        return av_status::success();
    }
    if (name == "cuda") {
        const av_cuda_plugin* plugin = cuda_plugin();
        if (plugin == nullptr) return av_status::error(AV_ERR_UNSUPPORTED, "cuda: " + g_cuda_reason);
        return plugin->backend_create(device, out);
    }
    return av_status::error(AV_ERR_INVALID, "unknown backend '" + name + "'");
}
