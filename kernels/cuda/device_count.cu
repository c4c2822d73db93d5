// How many CUDA devices this process sees (the ablation runner spreads steps over them).
#include <cuda_runtime.h>

#include "cuda/cuda_backend.h"

namespace gpt {

int cuda_device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();   // clear the sticky "no device" error
        return 0;
    }
    return n;
}

}  // namespace gpt
