#include "cuda/nccl_ranks.cuh"

#include <cstdio>
#include <cstring>

#include "common/error.h"
#include "cuda/cuda_backend.h"

#ifdef GPT_HAVE_NCCL
#include <nccl.h>
#endif

namespace gpt::cuda {

#ifdef GPT_HAVE_NCCL

namespace {

void check(ncclResult_t r, const char* call) {
    if (r == ncclSuccess) return;
    const char* last = ncclGetLastError(nullptr);
    fail(std::string("NCCL: ") + call + " failed: " + ncclGetErrorString(r) +
         (last && *last ? std::string(" (") + last + ")" : std::string()) +
         ". Set NCCL_DEBUG=WARN for NCCL's own account");
}

}  // namespace

bool nccl_compiled_in() { return true; }

std::string nccl_unique_id_hex() {
    ncclUniqueId id;
    check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    std::string hex;
    hex.reserve(2 * sizeof(id.internal));
    char two[3];
    for (size_t i = 0; i < sizeof(id.internal); ++i) {
        std::snprintf(two, sizeof(two), "%02x", unsigned(static_cast<unsigned char>(id.internal[i])));
        hex += two;
    }
    return hex;
}

struct NcclRanks::Impl {
    ncclComm_t comm = nullptr;
};

NcclRanks::NcclRanks(int rank, int world, const std::string& id_hex)
    : impl_(std::make_unique<Impl>()), rank_(rank), world_(world) {
    ncclUniqueId id;
    if (id_hex.size() != 2 * sizeof(id.internal))
        fail("NCCL: the communicator id must be " + std::to_string(2 * sizeof(id.internal)) +
             " hex digits (made by the launcher), got " + std::to_string(id_hex.size()));
    for (size_t i = 0; i < sizeof(id.internal); ++i) {
        unsigned v = 0;
        if (std::sscanf(id_hex.c_str() + 2 * i, "%2x", &v) != 1)
            fail("NCCL: the communicator id is not hexadecimal at digit " + std::to_string(2 * i));
        id.internal[i] = static_cast<char>(v);
    }
    check(ncclCommInitRank(&impl_->comm, world, id, rank), "ncclCommInitRank");
}

NcclRanks::~NcclRanks() {
    if (impl_ && impl_->comm) ncclCommDestroy(impl_->comm);
}

void NcclRanks::allreduce_sum(float* x, size_t n, cudaStream_t s) {
    check(ncclAllReduce(x, x, n, ncclFloat32, ncclSum, impl_->comm, s), "ncclAllReduce (float)");
}

void NcclRanks::allreduce_sum(double* x, size_t n, cudaStream_t s) {
    check(ncclAllReduce(x, x, n, ncclFloat64, ncclSum, impl_->comm, s), "ncclAllReduce (double)");
}

void NcclRanks::broadcast(float* x, size_t n, int root, cudaStream_t s) {
    check(ncclBroadcast(x, x, n, ncclFloat32, root, impl_->comm, s), "ncclBroadcast");
}

#else  // no NCCL in this build

namespace {
[[noreturn]] void no_nccl() {
    fail("train.gpus: data-parallel training needs NCCL, which this build did not find (nccl.h and "
         "libnccl beside the CUDA toolkit or the pip wheel nvidia-nccl-cu13); install it and reconfigure, "
         "or set train.gpus to 1");
}
}  // namespace

bool nccl_compiled_in() { return false; }
std::string nccl_unique_id_hex() { no_nccl(); }

struct NcclRanks::Impl {};

NcclRanks::NcclRanks(int, int, const std::string&) { no_nccl(); }
NcclRanks::~NcclRanks() = default;
void NcclRanks::allreduce_sum(float*, size_t, cudaStream_t) { no_nccl(); }
void NcclRanks::allreduce_sum(double*, size_t, cudaStream_t) { no_nccl(); }
void NcclRanks::broadcast(float*, size_t, int, cudaStream_t) { no_nccl(); }

#endif

}  // namespace gpt::cuda

namespace gpt {

bool nccl_available() { return cuda::nccl_compiled_in(); }
std::string nccl_communicator_id() { return cuda::nccl_unique_id_hex(); }

}  // namespace gpt
