// Whether a memory plan fits in a device's free memory, checked before anything is allocated so
// that a run too large fails at once with the numbers and what to change, instead of mid-step or
// as a bare cudaErrorMemoryAllocation. The CUDA backend fills DeviceFit from the plan and
// cudaMemGetInfo (CudaOps::allocate); the CPU tests check the message.
// Header-only on purpose: the CUDA library (gptcuda) cannot link back into gptcore, and nvcc
// compiles this file, so it uses snprintf rather than fmt.
#pragma once
#include <cstddef>
#include <cstdio>
#include <string>

#include "model/ops.h"

namespace gpt {

struct DeviceFit {
    std::string backend = "cuda-bf16";
    size_t space_bytes[kNumSpaces] = {0, 0, 0, 0, 0, 0};   // the plan, bytes per space
    size_t copy_bytes = 0;        // backend copies beside the plan (CUDA: the bf16 copy of Param)
    size_t workspace_bytes = 0;   // estimate of what the backend allocates later (scratch arena, ...)
    size_t free_bytes = 0, total_bytes = 0;   // device memory now (cudaMemGetInfo)

    size_t at(Space s) const { return space_bytes[static_cast<int>(s)]; }
    size_t needed() const {
        size_t n = copy_bytes + workspace_bytes;
        for (size_t b : space_bytes) n += b;
        return n;
    }
    // Activations and their gradients scale with the micro-batch (B*T); the rest does not.
    size_t activation_bytes() const { return at(Space::Act) + at(Space::Stat) + at(Space::Index); }
};

namespace detail {
inline double fit_gib(size_t bytes) { return double(bytes) / (1024.0 * 1024.0 * 1024.0); }
template <class... A>
std::string fit_fmt(const char* f, A... a) {
    char buf[2048];
    std::snprintf(buf, sizeof(buf), f, a...);
    return buf;
}
}  // namespace detail

// Empty when f.needed() <= f.free_bytes. Otherwise the error: planned bytes by space, free and
// total device memory, and what to change: the factor the activations must shrink by, as a
// train.batch_size divisor with the matching train.grad_accum multiplier (same tokens per step),
// train.recompute, train.seq_len or the model.
inline std::string device_fit_error(const DeviceFit& f) {
    using detail::fit_fmt;
    using detail::fit_gib;
    const size_t need = f.needed();
    if (need <= f.free_bytes) return "";
    const size_t acts = f.activation_bytes(), fixed = need - acts;
    std::string msg = fit_fmt(
        "%s: the memory plan does not fit on the GPU: it needs %.2f GiB (Param %.2f, Grad %.2f, Opt %.2f, "
        "Act %.2f, Stat %.2f, Index %.2f, Param bf16 copy %.2f, workspace/scratch estimate %.2f GiB) but the "
        "device has %.2f GiB free of %.2f GiB.",
        f.backend.c_str(), fit_gib(need), fit_gib(f.at(Space::Param)), fit_gib(f.at(Space::Grad)),
        fit_gib(f.at(Space::Opt)), fit_gib(f.at(Space::Act)), fit_gib(f.at(Space::Stat)),
        fit_gib(f.at(Space::Index)), fit_gib(f.copy_bytes), fit_gib(f.workspace_bytes), fit_gib(f.free_bytes),
        fit_gib(f.total_bytes));
    if (f.total_bytes > f.free_bytes && double(f.total_bytes - f.free_bytes) > 0.1 * double(f.total_bytes))
        msg += fit_fmt(" %.2f GiB of it is already in use (other processes, or this one).",
                       fit_gib(f.total_bytes - f.free_bytes));
    if (fixed >= f.free_bytes)
        return msg + fit_fmt(" The parameters, gradients, optimizer state and workspace alone need %.2f GiB: use "
                             "a smaller model (model.n_layer, model.n_embd, model.mlp_hidden) or a GPU with more "
                             "free memory.",
                             fit_gib(fixed));
    const double shrink = double(acts) / double(f.free_bytes - fixed);
    long divide = 1;
    while (double(divide) < shrink) divide *= 2;
    return msg + fit_fmt(
        " The activations (Act + Stat + Index, %.2f GiB) grow with train.batch_size x train.seq_len and must "
        "shrink %.2fx to fit. Fix: divide train.batch_size by %ld and multiply train.grad_accum by %ld (the same "
        "tokens per step), or set train.recompute to gelu, layernorm or both (backward "
        "recomputes the MLP hidden and/or the LayerNorm outputs instead of keeping them; `gpt2 info` prints "
        "the plan with it), or lower train.seq_len, or use a smaller model.",
        fit_gib(acts), shrink, divide, divide);
}

}  // namespace gpt
