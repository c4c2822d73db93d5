// The GEMM algorithm registry: see gemm_tune.cuh.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "cuda/gemm_tune.cuh"

namespace gpt::cuda::gemm_tune {
namespace {

std::mutex mu;
std::map<std::string, cublasLtMatmulAlgo_t> chosen;   // guarded by mu
bool loaded = false;                                  // guarded by mu

std::string file_path() {
    if (const char* f = std::getenv("GPT_GEMM_TUNE_FILE")) {
        const std::string s = f;
        return s == "none" ? std::string() : s;
    }
    std::filesystem::path dir;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) dir = x;
    else if (const char* h = std::getenv("HOME"); h && *h) dir = std::filesystem::path(h) / ".cache";
    else return {};
    return (dir / "gpt2ra" / "gemm_algos.txt").string();
}

// One line per choice: the key (no blanks), then the algorithm's 8 words in hex. cuBLASLt
// documents cublasLtMatmulAlgo_t as trivially serialisable for the same library version.
void load_locked() {
    loaded = true;
    const std::string path = file_path();
    if (path.empty()) return;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream ls(line);
        std::string key;
        cublasLtMatmulAlgo_t a{};
        ls >> key;
        for (auto& w : a.data) ls >> std::hex >> w;
        if (ls && !key.empty()) chosen.emplace(key, a);   // first line of a key wins
    }
}

}  // namespace

bool enabled() {
    const char* e = std::getenv("GPT_GEMM_AUTOTUNE");
    return !(e && std::string(e) == "0");
}

const std::string& device_tag() {
    static const std::string tag = [] {
        int dev = 0;
        cudaDeviceProp prop{};
        if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess)
            return std::string("unknown-gpu");
        std::string name = prop.name;
        for (char& c : name)
            if (c == ' ' || c == '\t') c = '_';
        return name + "/sm" + std::to_string(prop.multiProcessorCount) + "/lt" +
               std::to_string(cublasLtGetVersion());
    }();
    return tag;
}

bool lookup(const std::string& key, cublasLtMatmulAlgo_t* algo) {
    std::lock_guard<std::mutex> lock(mu);
    if (!loaded) load_locked();
    const auto it = chosen.find(key);
    if (it == chosen.end()) return false;
    *algo = it->second;
    return true;
}

void record(const std::string& key, const cublasLtMatmulAlgo_t& algo) {
    std::lock_guard<std::mutex> lock(mu);
    if (!loaded) load_locked();
    if (!chosen.emplace(key, algo).second) return;
    const std::string path = file_path();
    if (path.empty()) return;
    // Best effort: a cache directory that cannot be written only costs the next run a retune.
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    const bool fresh = !std::filesystem::exists(path, ec);
    FILE* f = std::fopen(path.c_str(), "a");
    if (!f) return;
    std::string line = fresh ? "# gpt2ra: cuBLASLt algorithm per GEMM (kernels/cuda/gemm_tune.cu); "
                               "delete the file to retune\n"
                             : "";
    char word[24];
    line += key;
    for (auto w : algo.data) {
        std::snprintf(word, sizeof(word), " %llx", static_cast<unsigned long long>(w));
        line += word;
    }
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), f);   // one write: concurrent appenders keep whole lines
    std::fclose(f);
}

}  // namespace gpt::cuda::gemm_tune
