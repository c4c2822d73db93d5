#include "model/backend.h"

#include <omp.h>

#include <cmath>

#include <fmt/format.h>

#include "common/error.h"
#include "cpu/cpu_ops.h"
#ifdef GPT_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace gpt {

bool cuda_compiled_in() {
#ifdef GPT_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

static bool gpu_present() {
#ifdef GPT_HAVE_CUDA
    return cuda_device_available();
#else
    return false;
#endif
}

int cuda_devices_visible() {
#ifdef GPT_HAVE_CUDA
    return cuda_device_count();
#else
    return 0;
#endif
}

bool backend_uses_cuda(const std::string& device) { return device == "cuda" || (device == "auto" && gpu_present()); }

Backend make_backend(const std::string& device, int threads, int cuda_device) {
    Backend b;
    const bool want_cuda = backend_uses_cuda(device);
    if (device != "auto" && device != "cpu" && device != "cuda")
        fail("train.device: '" + device + "' is not allowed; use auto, cpu or cuda");
    if (want_cuda) {
#ifdef GPT_HAVE_CUDA
        if (!cuda_device_available())
            fail("train.device: cuda was requested but no CUDA GPU is visible; use device=auto or cpu");
        if (cuda_device < 0 || cuda_device >= cuda_device_count())
            fail("train.device: CUDA device " + std::to_string(cuda_device) + " is not visible (" +
                 std::to_string(cuda_device_count()) + " visible); check CUDA_VISIBLE_DEVICES and train.gpus");
        b.ops = make_cuda_ops(cuda_device);
        b.is_cuda = true;
        b.peak_flops = 989.4e12;   // H100/H200 SXM dense bf16
        b.bytes.bytes[static_cast<int>(Space::Act)] = 2;   // bf16 activations
        b.description = b.ops->name();
        return b;
#else
        fail("train.device: cuda was requested but this build has no CUDA backend "
             "(nvcc was not found at configure time); use device=auto or cpu");
#endif
    }
    b.ops = make_cpu_ops(threads);
    b.peak_flops = std::nan("");
    int n = threads > 0 ? threads : omp_get_max_threads();
    b.description = fmt::format("{} ({} threads)", b.ops->name(), n);
    return b;
}

}  // namespace gpt
