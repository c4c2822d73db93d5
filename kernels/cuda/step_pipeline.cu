// StepPipeline (step_pipeline.cuh): staging, device scalars and the step graph.
#include "cuda/step_pipeline.cuh"

#include <cstring>

#include "cuda/cuda_common.cuh"
#include "cuda/device_memory.cuh"

namespace gpt::cuda {
namespace {

constexpr int kSumThreads = 1024;

// slot += sum(x[0, n)) in double: one block, so the order of the additions never changes.
__global__ void add_sum_kernel(const float* x, size_t n, double* slot) {
    __shared__ double warp_part[kSumThreads / 32];
    double s = 0.0;
    for (size_t i = threadIdx.x; i < n; i += kSumThreads) s += double(x[i]);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x % 32 == 0) warp_part[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double b = 0.0;
        for (int w = 0; w < kSumThreads / 32; ++w) b += warp_part[w];
        *slot += b;
    }
}

}  // namespace

StepPipeline::StepPipeline(cudaStream_t compute) : s_(compute) {
    GPT_CUDA(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
    for (auto& sl : slot_) {
        GPT_CUDA(cudaEventCreateWithFlags(&sl.copied, cudaEventDisableTiming));
        GPT_CUDA(cudaEventCreateWithFlags(&sl.released, cudaEventDisableTiming));
    }
    for (auto& e : done_) GPT_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
}

StepPipeline::~StepPipeline() {
    graph_abort();
    cudaStreamSynchronize(s_);
    cudaStreamSynchronize(copy_);
    if (exec_) cudaGraphExecDestroy(exec_);
    for (auto& sl : slot_) {
        if (sl.host) cudaFreeHost(sl.host);
        tracked_free(sl.dev);
        cudaEventDestroy(sl.copied);
        cudaEventDestroy(sl.released);
    }
    for (auto& e : done_) cudaEventDestroy(e);
    if (hscal_) cudaFreeHost(hscal_);
    tracked_free(dscal_);
    cudaStreamDestroy(copy_);
}

void StepPipeline::check_slot(int slot) const {
    GPT_CHECK(slot == 0 || slot == 1, "cuda-bf16 step pipeline: staging slot must be 0 or 1");
}

void StepPipeline::check_scalars(int first, int n, const char* what) const {
    GPT_CHECK(first >= 0 && n >= 0 && first + n <= nscal_,
              std::string("cuda-bf16 ") + what + ": past the reserved step scalars (scalars_reserve)");
}

// --- staging ------------------------------------------------------------------------------------
int32_t* StepPipeline::stage_host(int slot, size_t n) {
    check_slot(slot);
    GPT_CHECK(!capturing_, "cuda-bf16 stage_host: not while capturing a graph");
    Slot& sl = slot_[slot];
    if (n > sl.cap) {   // first use (shapes never change afterwards): nothing may still read them
        GPT_CUDA(cudaStreamSynchronize(s_));
        GPT_CUDA(cudaStreamSynchronize(copy_));
        if (sl.host) GPT_CUDA(cudaFreeHost(sl.host));
        tracked_free(sl.dev);
        sl.host = nullptr;
        sl.dev = nullptr;
        GPT_CUDA(cudaMallocHost(&sl.host, n * sizeof(int32_t)));
        GPT_CUDA(tracked_malloc(&sl.dev, n * sizeof(int32_t)));
        sl.cap = n;
        sl.copy_queued = false;
    }
    // The host is about to overwrite the pinned buffer: its last copy must have left it.
    if (sl.copy_queued) GPT_CUDA(cudaEventSynchronize(sl.copied));
    sl.copy_queued = false;
    sl.n = n;
    return sl.host;
}

void StepPipeline::stage_commit(int slot) {
    check_slot(slot);
    Slot& sl = slot_[slot];
    // The copy may only overwrite the device buffer once the step that read it is done (an event
    // never recorded counts as complete).
    GPT_CUDA(cudaStreamWaitEvent(copy_, sl.released, 0));
    GPT_CUDA(cudaMemcpyAsync(sl.dev, sl.host, sl.n * sizeof(int32_t), cudaMemcpyHostToDevice, copy_));
    GPT_CUDA(cudaEventRecord(sl.copied, copy_));
    sl.copy_queued = true;
    // Work queued on the compute stream from now on (the step that reads the batch) waits for the
    // copy; work queued before it (the previous step) runs alongside it.
    GPT_CUDA(cudaStreamWaitEvent(s_, sl.copied, 0));
}

void StepPipeline::stage_take(int32_t* dst, int slot, size_t off, size_t n) {
    check_slot(slot);
    GPT_CHECK(off + n <= slot_[slot].n, "cuda-bf16 stage_take: past the staged batch");
    if (n) GPT_CUDA(cudaMemcpyAsync(dst, slot_[slot].dev + off, n * sizeof(int32_t), cudaMemcpyDeviceToDevice, s_));
}

void StepPipeline::stage_release(int slot) {
    check_slot(slot);
    GPT_CUDA(cudaEventRecord(slot_[slot].released, s_));
}

// --- scalars --------------------------------------------------------------------------------------
void StepPipeline::scalars_reserve(int n) {
    GPT_CHECK(!capturing_, "cuda-bf16 scalars_reserve: not while capturing a graph");
    if (n > nscal_) {
        GPT_CUDA(cudaStreamSynchronize(s_));
        tracked_free(dscal_);
        dscal_ = nullptr;
        if (hscal_) GPT_CUDA(cudaFreeHost(hscal_));
        hscal_ = nullptr;
        GPT_CUDA(tracked_malloc(&dscal_, size_t(n) * sizeof(double)));
        GPT_CUDA(cudaMallocHost(&hscal_, size_t(n) * sizeof(double)));
        nscal_ = n;
    }
    GPT_CUDA(cudaMemsetAsync(dscal_, 0, size_t(nscal_) * sizeof(double), s_));
    std::memset(hscal_, 0, size_t(nscal_) * sizeof(double));
}

double* StepPipeline::scalar_ptr(int slot) {
    check_scalars(slot, 1, "step scalar");
    return dscal_ + slot;
}

void StepPipeline::scalars_zero(int first, int n) {
    check_scalars(first, n, "scalars_zero");
    if (n) GPT_CUDA(cudaMemsetAsync(dscal_ + first, 0, size_t(n) * sizeof(double), s_));
}

void StepPipeline::scalar_add_sum(int slot, const float* x, size_t n) {
    check_scalars(slot, 1, "scalar_add_sum");
    if (n == 0) return;
    add_sum_kernel<<<1, kSumThreads, 0, s_>>>(x, n, dscal_ + slot);
    GPT_CUDA_LAUNCHED("add_sum_kernel");
}

void StepPipeline::scalar_set(int slot, const double* src) {
    check_scalars(slot, 1, "scalar_set");
    GPT_CUDA(cudaMemcpyAsync(dscal_ + slot, src, sizeof(double), cudaMemcpyDeviceToDevice, s_));
}

double StepPipeline::scalar_read(int slot) {
    check_scalars(slot, 1, "scalar_read");
    double v = 0;
    GPT_CUDA(cudaMemcpyAsync(hscal_ + slot, dscal_ + slot, sizeof(double), cudaMemcpyDeviceToHost, s_));
    GPT_CUDA(cudaStreamSynchronize(s_));   // fails a capture on purpose: the caller falls back to eager
    v = hscal_[slot];
    return v;
}

void StepPipeline::scalars_publish(int first, int n) {
    check_scalars(first, n, "scalars_publish");
    if (n) GPT_CUDA(cudaMemcpyAsync(hscal_ + first, dscal_ + first, size_t(n) * sizeof(double),
                                    cudaMemcpyDeviceToHost, s_));
}

void StepPipeline::step_end(int tag) { GPT_CUDA(cudaEventRecord(done_[tag & 1], s_)); }

void StepPipeline::scalars_fetch(int tag, int first, int n, double* out) {
    check_scalars(first, n, "scalars_fetch");
    GPT_CUDA(cudaEventSynchronize(done_[tag & 1]));
    std::memcpy(out, hscal_ + first, size_t(n) * sizeof(double));
}

// --- the step graph -------------------------------------------------------------------------------
bool StepPipeline::graph_begin() {
    // Thread-local mode: an unsafe call from this thread (a synchronisation, an allocation)
    // invalidates the capture instead of running, so graph_end reports it and nothing ran.
    if (cudaStreamBeginCapture(s_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    capturing_ = true;
    return true;
}

bool StepPipeline::graph_end(std::string* why) {
    cudaGraph_t g = nullptr;
    cudaError_t err = cudaStreamEndCapture(s_, &g);
    capturing_ = false;
    if (err != cudaSuccess || g == nullptr) {
        (void)cudaGetLastError();
        if (g) cudaGraphDestroy(g);
        if (why) *why = std::string("capture failed: ") + cudaGetErrorString(err);
        return false;
    }
    if (exec_) {
        // Same topology as the last capture (the usual case): patch the kernel parameters and copy
        // addresses of the executable graph in place. It only affects later launches, so the
        // previous step may still be running.
        cudaGraphExecUpdateResultInfo info{};
        if (cudaGraphExecUpdate(exec_, g, &info) == cudaSuccess) {
            cudaGraphDestroy(g);
            return true;
        }
        (void)cudaGetLastError();
        GPT_CUDA(cudaStreamSynchronize(s_));
        cudaGraphExecDestroy(exec_);
        exec_ = nullptr;
    }
    err = cudaGraphInstantiate(&exec_, g, 0);
    cudaGraphDestroy(g);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        exec_ = nullptr;
        if (why) *why = std::string("graph instantiation failed: ") + cudaGetErrorString(err);
        return false;
    }
    return true;
}

void StepPipeline::graph_launch() {
    GPT_CHECK(exec_ != nullptr, "cuda-bf16 graph_launch: no graph was captured");
    GPT_CUDA(cudaGraphLaunch(exec_, s_));
}

void StepPipeline::graph_abort() {
    if (!capturing_) return;
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(s_, &g);
    if (g) cudaGraphDestroy(g);
    (void)cudaGetLastError();
    capturing_ = false;
}

}  // namespace gpt::cuda
