// The CUDA side of the step-pipeline hooks of Ops (model/ops.h, docs/kernels-cuda.md): batches
// staged in pinned host memory and copied on a second stream while the previous step computes,
// step scalars (losses, grad norm) kept on the device and read back once per step, and the
// captured step graph, updated in place from each step's capture.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace gpt::cuda {

class StepPipeline {
public:
    explicit StepPipeline(cudaStream_t compute);
    ~StepPipeline();
    StepPipeline(const StepPipeline&) = delete;
    StepPipeline& operator=(const StepPipeline&) = delete;

    int32_t* stage_host(int slot, size_t n);
    void stage_commit(int slot);
    void stage_take(int32_t* dst, int slot, size_t off, size_t n);
    void stage_release(int slot);

    void scalars_reserve(int n);
    double* scalar_ptr(int slot);                 // device address of one scalar
    void scalars_zero(int first, int n);
    void scalar_add_sum(int slot, const float* x, size_t n);   // deterministic (one fixed block)
    void scalar_set(int slot, const double* src);              // device-to-device, one double
    double scalar_read(int slot);
    void scalars_publish(int first, int n);
    void step_end(int tag);
    void scalars_fetch(int tag, int first, int n, double* out);

    bool graph_begin();
    bool graph_end(std::string* why);
    void graph_launch();
    void graph_abort();
    bool capturing() const { return capturing_; }

private:
    struct Slot {
        int32_t* host = nullptr;   // pinned
        int32_t* dev = nullptr;
        size_t cap = 0, n = 0;
        cudaEvent_t copied = nullptr;     // the host->device copy of the slot finished
        cudaEvent_t released = nullptr;   // the step that read the slot finished with it
        bool copy_queued = false;
    };
    void check_slot(int slot) const;
    void check_scalars(int first, int n, const char* what) const;

    cudaStream_t s_ = nullptr, copy_ = nullptr;
    Slot slot_[2];
    double* dscal_ = nullptr;   // device scalars
    double* hscal_ = nullptr;   // their pinned host mirror (scalars_publish)
    int nscal_ = 0;
    cudaEvent_t done_[2] = {nullptr, nullptr};
    cudaGraphExec_t exec_ = nullptr;
    bool capturing_ = false;
};

}  // namespace gpt::cuda
