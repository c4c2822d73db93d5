// One process's NCCL communicator for data-parallel training (train.gpus > 1, docs/architecture.md
// "Data-parallel training"): every rank holds the whole model; after each step's backward the fp32
// gradients are summed over the ranks in place, so every rank applies the same update. Plain C++
// (no NCCL types leak); the library builds without NCCL, and then joining fails with the reason.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <string>

namespace gpt::cuda {

// True when this build found nccl.h and libnccl.
bool nccl_compiled_in();

// A fresh ncclUniqueId as 256 hex digits: the launcher makes it once and hands it to every rank.
std::string nccl_unique_id_hex();

class NcclRanks {
public:
    // Joins the communicator `id_hex` (nccl_unique_id_hex) as `rank` of `world` on the current
    // device; blocks until every rank has joined. Throws gpt::Error naming the NCCL call and
    // status.
    NcclRanks(int rank, int world, const std::string& id_hex);
    ~NcclRanks();
    NcclRanks(const NcclRanks&) = delete;
    NcclRanks& operator=(const NcclRanks&) = delete;

    int rank() const { return rank_; }
    int world() const { return world_; }

    // In stream order (capturable in a CUDA graph): sum over the ranks, in place.
    void allreduce_sum(float* x, size_t n, cudaStream_t s);
    void allreduce_sum(double* x, size_t n, cudaStream_t s);
    // x from `root` to every rank, in place.
    void broadcast(float* x, size_t n, int root, cudaStream_t s);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    int rank_ = 0, world_ = 1;
};

}  // namespace gpt::cuda
