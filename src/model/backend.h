// Choosing the backend that runs the model: "cpu", "cuda", or "auto" (CUDA when this build has
// it and a GPU is present, else the CPU).
#pragma once
#include <memory>
#include <string>

#include "model/memory_plan.h"
#include "model/ops.h"

namespace gpt {

struct Backend {
    std::unique_ptr<Ops> ops;
    bool is_cuda = false;
    SpaceBytes bytes;            // element sizes per space, for the memory report
    std::string description;     // e.g. "cpu-fp32 (2 threads)" or "cuda-bf16 on NVIDIA H100"
    double peak_flops = 0;       // dense rate for MFU (bf16 tensor cores on CUDA); NaN when unknown
};

// device: auto | cpu | cuda; threads: CPU threads (0 = all cores); cuda_device: the CUDA ordinal
// (a data-parallel rank's GPU). Error when cuda is asked for and unavailable, saying why.
Backend make_backend(const std::string& device, int threads, int cuda_device = 0);
bool cuda_compiled_in();
// Whether a run with train.device = `device` (auto | cpu | cuda) runs on CUDA: what make_backend
// decides, for callers that plan around it without building a backend (the ablation runner).
bool backend_uses_cuda(const std::string& device);
// Visible CUDA devices (0 on a CPU-only build or machine).
int cuda_devices_visible();

}  // namespace gpt
