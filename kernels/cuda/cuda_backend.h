// The CUDA backend's entry points, as plain C++: host code compiled by g++ includes this header
// without seeing any CUDA type. The implementation (class CudaOps) lives in kernels/cuda/*.cu.
#pragma once
#include <memory>
#include <string>

#include "model/ops.h"

namespace gpt {

// True when the CUDA runtime finds at least one usable device (false, never an exception, on a
// machine without a GPU or driver).
bool cuda_device_available();

// The number of visible CUDA devices (0 without a GPU or driver; never throws).
int cuda_device_count();

// The bf16 tensor-core backend on `device`. Throws gpt::Error when the device cannot be used.
std::unique_ptr<Ops> make_cuda_ops(int device = 0);

// Data-parallel training (train/data_parallel.h): whether this build has NCCL, and a fresh
// communicator id (hex) for the launcher to hand to every rank (Error without NCCL).
bool nccl_available();
std::string nccl_communicator_id();

}  // namespace gpt
