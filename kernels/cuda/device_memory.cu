#include "cuda/device_memory.cuh"

#include <algorithm>
#include <mutex>
#include <unordered_map>

namespace gpt::cuda {
namespace {

struct Ledger {
    std::mutex mu;
    std::unordered_map<void*, size_t> sizes;
    size_t in_use = 0, peak = 0;
};

Ledger& ledger() {
    static Ledger l;
    return l;
}

}  // namespace

cudaError_t tracked_malloc_bytes(void** p, size_t bytes) {
    const cudaError_t err = cudaMalloc(p, bytes);
    if (err == cudaSuccess) {
        Ledger& l = ledger();
        std::lock_guard<std::mutex> lock(l.mu);
        l.sizes[*p] = bytes;
        l.in_use += bytes;
        l.peak = std::max(l.peak, l.in_use);
    }
    return err;
}

void tracked_free(void* p) {
    if (!p) return;
    Ledger& l = ledger();
    {
        std::lock_guard<std::mutex> lock(l.mu);
        auto it = l.sizes.find(p);
        if (it != l.sizes.end()) {
            l.in_use -= it->second;
            l.sizes.erase(it);
        }
    }
    cudaFree(p);
}

size_t device_bytes_in_use() {
    std::lock_guard<std::mutex> lock(ledger().mu);
    return ledger().in_use;
}

size_t device_bytes_peak() {
    std::lock_guard<std::mutex> lock(ledger().mu);
    return ledger().peak;
}

void reset_device_bytes_peak() {
    std::lock_guard<std::mutex> lock(ledger().mu);
    ledger().peak = ledger().in_use;
}

}  // namespace gpt::cuda
