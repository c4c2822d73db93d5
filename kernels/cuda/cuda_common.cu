// The error path of GPT_CUDA (cuda_common.cuh), in its own object so that tools linking only the
// kernels do not pull in the whole backend.
#include <string>

#include "cuda/cuda_common.cuh"

namespace gpt::cuda {

void fail_cuda(cudaError_t err, const char* call, const char* file, int line) {
    fail(std::string("cuda-bf16: CUDA call failed: ") + call + " -> " + cudaGetErrorName(err) +
         ": " + cudaGetErrorString(err) + " (" + file + ":" + std::to_string(line) + ")");
}

}  // namespace gpt::cuda
