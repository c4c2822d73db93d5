// Every device allocation of the CUDA backend goes through here, so the backend can report the
// bytes it holds and the most it held at once (Ops::memory_in_use / memory_peak): the figure to
// set beside PyTorch's torch.cuda.max_memory_allocated.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace gpt::cuda {

cudaError_t tracked_malloc_bytes(void** p, size_t bytes);
void tracked_free(void* p);   // nullptr is fine
size_t device_bytes_in_use();
size_t device_bytes_peak();
void reset_device_bytes_peak();   // peak := bytes in use now

template <class T>
cudaError_t tracked_malloc(T** p, size_t bytes) {
    return tracked_malloc_bytes(reinterpret_cast<void**>(p), bytes);
}

}  // namespace gpt::cuda
