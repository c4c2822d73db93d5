// Which cuBLASLt algorithm each GEMM uses, once chosen: process-wide (every Gemm, every CudaOps
// in the process agrees) and kept in a small text file, so a rerun or a resumed run on the same
// GPU and cuBLASLt version executes the same kernels and gets the same bits.
//
//   GPT_GEMM_AUTOTUNE=0        no timing: the heuristic's first algorithm, nothing recorded
//   GPT_GEMM_TUNE_FILE=path    the file (default $XDG_CACHE_HOME or ~/.cache, gpt2ra/gemm_algos.txt);
//                              empty or "none": process-wide only
#pragma once
#include <cublasLt.h>

#include <string>

namespace gpt::cuda::gemm_tune {

bool enabled();
// "GPU name, SM count, cuBLASLt version": the part of every key that makes a file from another
// machine or library version miss instead of applying there.
const std::string& device_tag();
bool lookup(const std::string& key, cublasLtMatmulAlgo_t* algo);
void record(const std::string& key, const cublasLtMatmulAlgo_t& algo);

}  // namespace gpt::cuda::gemm_tune
