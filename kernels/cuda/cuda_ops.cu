// class CudaOps: the bf16 tensor-core backend of model/ops.h. Owns one stream, the six planned
// buffers (plus the bf16 copy of Param), a staging buffer for fp32 <-> bf16 transfers, a scratch
// arena for kernels that need temporary memory, and the cuBLASLt state.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cuda/device_memory.cuh"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_kernels.cuh"
#include "cuda/attention_band_split.cuh"
#include "cuda/attention_cudnn.cuh"
#include "cuda/gemm.cuh"
#include "cuda/nccl_ranks.cuh"
#include "cuda/step_pipeline.cuh"
#include "cuda/variant_ops.cuh"
#include "model/device_fit.h"

namespace gpt {
namespace cuda {

namespace {

const char* space_name(Space s) {
    static const char* names[] = {"Param", "Grad", "Opt", "Act", "Stat", "Index"};
    return names[static_cast<int>(s)];
}

DType space_type(Space s) {
    switch (s) {
        case Space::Act: return DType::BF16;
        case Space::Index: return DType::I32;
        default: return DType::F32;
    }
}

std::string mib(size_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1f MiB", bytes / 1048576.0);
    return buf;
}

class CudaOps final : public Ops {
public:
    explicit CudaOps(int device) : device_(device) {
        GPT_CUDA(cudaSetDevice(device_));
        GPT_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        gemm_ = std::make_unique<Gemm>();
        GPT_CUDA(tracked_malloc(&ssq_, sizeof(double) * (kSumSquaresBlocks + 1)));
        pipe_ = std::make_unique<StepPipeline>(stream_);
    }
    // The process's device allocations (one backend per process in practice; tests may hold two).
    size_t memory_in_use() const override { return device_bytes_in_use(); }
    size_t memory_peak() const override { return device_bytes_peak(); }
    void reset_memory_peak() override { reset_device_bytes_peak(); }

    ~CudaOps() override {
        cudaStreamSynchronize(stream_);
        pipe_.reset();
        release();
        ranks_.reset();
        tracked_free(ssq_);
        tracked_free(value_dev_);
        tracked_free(staging_);
        tracked_free(scratch_);
        tracked_free(adamw_tensors_dev_);
        tracked_free(adamw_chunks_dev_);
        gemm_.reset();
        cudaStreamDestroy(stream_);
    }

    std::string name() const override { return "cuda-bf16"; }

    // --- memory ---------------------------------------------------------------------------------
    void allocate(const MemoryPlan& plan) override {
        GPT_CUDA(cudaStreamSynchronize(stream_));
        release();
        size_t bytes[kNumSpaces + 1];
        size_t total = 0;
        for (int s = 0; s < kNumSpaces; ++s) {
            bytes[s] = plan.elems[s] * dtype_bytes(space_type(Space(s)));
            total += bytes[s];
        }
        bytes[kNumSpaces] = plan.elems[0] * 2;   // bf16 copy of Param
        total += bytes[kNumSpaces];
        size_t free_b = 0, total_b = 0;
        GPT_CUDA(cudaMemGetInfo(&free_b, &total_b));
        // Refuse a plan that cannot fit before allocating any of it, with the numbers and the fix.
        DeviceFit fit;
        std::copy(bytes, bytes + kNumSpaces, fit.space_bytes);
        fit.copy_bytes = bytes[kNumSpaces];
        fit.workspace_bytes = workspace_estimate(plan);
        fit.free_bytes = free_b;
        fit.total_bytes = total_b;
        if (const std::string err = device_fit_error(fit); !err.empty()) fail(err);
        auto oom = [&](const std::string& what) {
            std::string msg = "cuda-bf16: out of device memory " + what + ": the plan needs " +
                              mib(total) + " (";
            for (int s = 0; s < kNumSpaces; ++s)
                msg += std::string(space_name(Space(s))) + " " + mib(bytes[s]) + ", ";
            msg += "Param bf16 copy " + mib(bytes[kNumSpaces]) + ") but the GPU has " + mib(free_b) +
                   " free of " + mib(total_b) +
                   ". Fix: lower train.batch_size and raise train.grad_accum (same tokens per step), set "
                   "train.recompute (gelu, layernorm or both), or lower train.seq_len, or use a smaller model.";
            fail(msg);
        };
        for (int s = 0; s <= kNumSpaces; ++s) {
            if (bytes[s] == 0) continue;
            void* p = nullptr;
            const cudaError_t err = tracked_malloc(&p, bytes[s]);
            if (err != cudaSuccess) {
                cudaGetLastError();   // clear the sticky-free error state
                release();
                oom(std::string("at cudaMalloc of ") + (s < kNumSpaces ? space_name(Space(s)) : "Param bf16"));
            }
            GPT_CUDA(cudaMemsetAsync(p, 0, bytes[s], stream_));
            if (s < kNumSpaces) buf_[s] = p;
            else param_bf16_ = static_cast<__nv_bfloat16*>(p);
        }
        plan_ = plan;
    }

    void upload(Ten dst, const float* src) override {
        check_range(dst, dst.n, "upload", "dst");
        GPT_CHECK(dst.space != Space::Index, "cuda-bf16 upload: Index space takes upload_index");
        if (dst.n == 0) return;
        if (space_type(dst.space) == DType::F32) {
            GPT_CUDA(cudaMemcpyAsync(f32(dst), src, dst.n * 4, cudaMemcpyHostToDevice, stream_));
        } else {
            float* stage = staging(dst.n);
            GPT_CUDA(cudaMemcpyAsync(stage, src, dst.n * 4, cudaMemcpyHostToDevice, stream_));
            convert(raw(dst), TView{stage, DType::F32}, dst.n, stream_);
        }
        param_touched(dst);
    }

    void upload_index(Ten dst, const int32_t* src) override {
        GPT_CHECK(dst.space == Space::Index, "cuda-bf16 upload_index: dst must be in Index space");
        check_range(dst, dst.n, "upload_index", "dst");
        if (dst.n == 0) return;
        GPT_CUDA(cudaMemcpyAsync(static_cast<int32_t*>(buf_[5]) + dst.off, src, dst.n * 4,
                                 cudaMemcpyHostToDevice, stream_));
    }

    void download(Ten src, float* dst) override {
        check_range(src, src.n, "download", "src");
        if (src.n == 0) return;
        if (space_type(src.space) == DType::F32) {
            GPT_CUDA(cudaMemcpyAsync(dst, f32(src), src.n * 4, cudaMemcpyDeviceToHost, stream_));
        } else {
            float* stage = staging(src.n);
            convert(TView{stage, DType::F32}, raw(src), src.n, stream_);
            GPT_CUDA(cudaMemcpyAsync(dst, stage, src.n * 4, cudaMemcpyDeviceToHost, stream_));
        }
        GPT_CUDA(cudaStreamSynchronize(stream_));
    }

    void zero(Ten t) override {
        check_range(t, t.n, "zero", "t");
        if (t.n == 0) return;
        GPT_CUDA(cudaMemsetAsync(raw(t).p, 0, t.n * dtype_bytes(space_type(t.space)), stream_));
        param_touched(t);
    }

    void copy(Ten dst, Ten src) override {   // src.n elements, as the CPU backend
        const size_t n = src.n;
        check_range(dst, n, "copy", "dst");
        check_range(src, n, "copy", "src");
        GPT_CHECK((dst.space == Space::Index) == (src.space == Space::Index),
                  "cuda-bf16 copy: Index views copy only to Index views");
        if (n == 0) return;
        if (space_type(dst.space) == space_type(src.space))
            GPT_CUDA(cudaMemcpyAsync(raw(dst).p, raw(src).p, n * dtype_bytes(space_type(dst.space)),
                                     cudaMemcpyDeviceToDevice, stream_));
        else
            convert(raw(dst), raw(src), n, stream_);
        param_touched(dst.sub(0, n));
    }

    void scale(Ten t, float s) override {
        check_range(t, t.n, "scale", "t");
        cuda::scale(raw(t), s, t.n, stream_);
        param_touched(t);
    }

    void params_changed() override {
        if (plan_[Space::Param] == 0) return;
        convert(TView{param_bf16_, DType::BF16}, TView{buf_[0], DType::F32}, plan_[Space::Param],
                stream_);
    }

    void synchronize() override { GPT_CUDA(cudaStreamSynchronize(stream_)); }

    // --- step pipeline (ops.h; staging, scalars and graphs live in cuda/step_pipeline.cu) -------
    int32_t* stage_host(int slot, size_t n) override { return pipe_->stage_host(slot, n); }
    void stage_commit(int slot) override { pipe_->stage_commit(slot); }
    void stage_take(Ten dst, int slot, size_t off) override {
        GPT_CHECK(dst.space == Space::Index, "cuda-bf16 stage_take: dst must be in Index space");
        check_range(dst, dst.n, "stage_take", "dst");
        pipe_->stage_take(static_cast<int32_t*>(buf_[5]) + dst.off, slot, off, dst.n);
    }
    void stage_release(int slot) override { pipe_->stage_release(slot); }
    void scalars_reserve(int n) override { pipe_->scalars_reserve(n); }
    void scalars_zero(int first, int n) override { pipe_->scalars_zero(first, n); }
    void scalar_add_sum(int slot, Ten t) override {
        pipe_->scalar_add_sum(slot, stat(t, t.n, "scalar_add_sum", "t"), t.n);
    }
    void scalar_sum_squares(int slot, Ten t) override {   // the value sum_squares returns, kept here
        check_range(t, t.n, "scalar_sum_squares", "t");
        if (t.n == 0) {
            pipe_->scalars_zero(slot, 1);
            return;
        }
        cuda::sum_squares(raw(t), t.n, ssq_, stream_);
        pipe_->scalar_set(slot, ssq_ + kSumSquaresBlocks);
    }
    double scalar_read(int slot) override { return pipe_->scalar_read(slot); }
    void scalars_publish(int first, int n) override { pipe_->scalars_publish(first, n); }
    void step_end(int tag) override { pipe_->step_end(tag); }
    void scalars_fetch(int tag, int first, int n, double* out) override { pipe_->scalars_fetch(tag, first, n, out); }
    void adamw_clipped(const std::vector<AdamWTensor>& ts, const AdamWHyper& h, int norm_sq_slot,
                       float clip) override {
        adamw_norm_sq_ = pipe_->scalar_ptr(norm_sq_slot);
        adamw_clip_ = clip;
        try {
            adamw(ts, h);
        } catch (...) {
            adamw_norm_sq_ = nullptr;
            throw;
        }
        adamw_norm_sq_ = nullptr;
    }
    bool graph_begin() override { return pipe_->graph_begin(); }
    bool graph_end(std::string* why) override { return pipe_->graph_end(why); }
    void graph_launch() override { pipe_->graph_launch(); }
    void graph_abort() override { pipe_->graph_abort(); }

    // --- data-parallel ranks (cuda/nccl_ranks.cuh) ----------------------------------------------
    void join_ranks(int rank, int world, const std::string& id) override {
        GPT_CHECK(!ranks_, "cuda-bf16 join_ranks: this backend already joined a communicator");
        GPT_CUDA(cudaSetDevice(device_));
        GPT_CUDA(cudaStreamSynchronize(stream_));
        ranks_ = std::make_unique<NcclRanks>(rank, world, id);
    }
    void allreduce_sum(Ten t) override {
        if (!ranks_ || t.n == 0) return;
        ranks_->allreduce_sum(fp32_view(t, "allreduce_sum"), t.n, stream_);
    }
    void scalars_allreduce(int first, int n) override {
        if (!ranks_ || n == 0) return;
        ranks_->allreduce_sum(pipe_->scalar_ptr(first), size_t(n), stream_);
    }
    void broadcast(Ten t, int root) override {
        if (!ranks_ || t.n == 0) return;
        ranks_->broadcast(fp32_view(t, "broadcast"), t.n, root, stream_);
    }
    double allreduce_value(double v) override {
        if (!ranks_) return v;
        if (!value_dev_) GPT_CUDA(tracked_malloc(&value_dev_, sizeof(double)));
        GPT_CUDA(cudaMemcpyAsync(value_dev_, &v, sizeof(double), cudaMemcpyHostToDevice, stream_));
        ranks_->allreduce_sum(value_dev_, 1, stream_);
        double out = 0;
        GPT_CUDA(cudaMemcpyAsync(&out, value_dev_, sizeof(double), cudaMemcpyDeviceToHost, stream_));
        GPT_CUDA(cudaStreamSynchronize(stream_));
        return out;
    }

    // --- layers ---------------------------------------------------------------------------------
    void embedding_fwd(Ten out, Ten tokens, Ten wte, Ten wpe, int B, int T, int E) override {
        const size_t N = size_t(B) * T;
        cuda::embedding_fwd(view(out, N * E, "embedding_fwd", "out"), index(tokens, N, "embedding_fwd"),
                            view(wte, wte.n, "embedding_fwd", "wte"),
                            view(wpe, size_t(T) * E, "embedding_fwd", "wpe"), B, T, E, stream_);
    }

    void embedding_bwd(Ten dwte, Ten dwpe, Ten dout, Ten tokens, int B, int T, int E) override {
        const int N = B * T;
        GPT_CHECK(E > 0 && dwte.n % E == 0, "cuda-bf16 embedding_bwd: dwte.n is not a multiple of E");
        const int V = static_cast<int>(dwte.n / E);
        void* s = scratch(embedding_bwd_scratch(N, V));
        cuda::embedding_bwd(view(dwte, dwte.n, "embedding_bwd", "dwte"),
                            view(dwpe, size_t(T) * E, "embedding_bwd", "dwpe"),
                            view(dout, size_t(N) * E, "embedding_bwd", "dout"),
                            index(tokens, N, "embedding_bwd"), B, T, E, V, s, stream_);
    }

    void layernorm_fwd(Ten out, Ten mean, Ten rstd, Ten in, Ten w, Ten b, int N, int C) override {
        const size_t NC = size_t(N) * C;
        cuda::layernorm_fwd(view(out, NC, "layernorm_fwd", "out"),
                            stat(mean, N, "layernorm_fwd", "mean"), stat(rstd, N, "layernorm_fwd", "rstd"),
                            view(in, NC, "layernorm_fwd", "in"), view(w, C, "layernorm_fwd", "w"),
                            view_opt(b, C, "layernorm_fwd", "b"), N, C, stream_);
    }

    void residual_layernorm_fwd(Ten out_sum, Ten out, Ten mean, Ten rstd, Ten a, Ten b, Ten w, Ten bias, int N,
                                int C, const ResidualDropout& drop) override {
        const size_t NC = size_t(N) * C;
        GPT_CHECK(drop.p >= 0.f && drop.p < 1.f,
                  "cuda-bf16 residual_layernorm_fwd: dropout p must be in [0, 1), got " + std::to_string(drop.p));
        cuda::residual_layernorm_fwd(
            view(out_sum, NC, "residual_layernorm_fwd", "out_sum"), view(out, NC, "residual_layernorm_fwd", "out"),
            stat(mean, N, "residual_layernorm_fwd", "mean"), stat(rstd, N, "residual_layernorm_fwd", "rstd"),
            view(a, NC, "residual_layernorm_fwd", "a"), view(b, NC, "residual_layernorm_fwd", "b"),
            view(w, C, "residual_layernorm_fwd", "w"), view_opt(bias, C, "residual_layernorm_fwd", "bias"), N, C,
            stream_, drop.p, drop.seed, keep_bits(drop, NC, "residual_layernorm_fwd"));
        param_touched(out_sum.sub(0, NC));   // as add: a Param sum refreshes its bf16 copy
    }

    void layernorm_bwd(Ten din, Ten dw, Ten db, Ten dout, Ten in, Ten w, Ten mean, Ten rstd, int N,
                       int C, Ten dsum, Ten branch, const ResidualDropout& drop) override {
        const size_t NC = size_t(N) * C;
        GPT_CHECK(drop.p >= 0.f && drop.p < 1.f,
                  "cuda-bf16 layernorm_bwd: dropout p must be in [0, 1), got " + std::to_string(drop.p));
        float* partial = static_cast<float*>(scratch(layernorm_bwd_scratch(N, C) * 4));
        cuda::layernorm_bwd(view_opt(din, NC, "layernorm_bwd", "din"),
                            view_opt(dw, C, "layernorm_bwd", "dw"), view_opt(db, C, "layernorm_bwd", "db"),
                            view(dout, NC, "layernorm_bwd", "dout"), view(in, NC, "layernorm_bwd", "in"),
                            view(w, C, "layernorm_bwd", "w"), stat(mean, N, "layernorm_bwd", "mean"),
                            stat(rstd, N, "layernorm_bwd", "rstd"), N, C, partial, stream_,
                            view_opt(dsum, C, "layernorm_bwd", "dsum"), view_opt(branch, NC, "layernorm_bwd", "branch"),
                            drop.p, drop.seed, branch.present() ? keep_bits(drop, NC, "layernorm_bwd") : nullptr);
    }
    // ResidualDropout::keep as bytes (eight decisions each), or nullptr when absent or p = 0.
    uint8_t* keep_bits(const ResidualDropout& d, size_t n, const char* op) const {
        if (!d.on() || !d.keep.present()) return nullptr;
        GPT_CHECK(d.keep.space == Space::Index, std::string("cuda-bf16 ") + op + ": the dropout's keep bits must be in Index space");
        check_range(d.keep, (n + 31) / 32, op, "keep");
        return static_cast<uint8_t*>(raw(d.keep).p);
    }

    void matmul_fwd(Ten out, Ten in, Ten w, Ten bias, int M, int K, int N, Ten gelu_out) override {
        const size_t MN = size_t(M) * N;
        TView o = view(out, MN, "matmul_fwd", "out");
        TView go = view_opt(gelu_out, MN, "matmul_fwd", "gelu_out");
        // w [N, K] row-major is column-major K x N: op = T gives N x K.
        GemmArgs g = gemm_args(true, false, N, M, K, K, K, N, operand(w, size_t(N) * K, "matmul_fwd", "w"),
                               operand(in, size_t(M) * K, "matmul_fwd", "in"), o, 0.f);
        const bool has_bias = bias.present();
        if (has_bias) {
            g.bias = bias_ptr(bias, N, o.t, "matmul_fwd");
            g.bias_type = o.t;
        }
        if (go.p) {
            GPT_CHECK(go.t == o.t, "cuda-bf16 matmul_fwd: out and gelu_out must be in spaces of the same type");
            g.d = go.p;
            g.aux = o.p;
            g.epilogue = has_bias ? Epilogue::GeluAuxBias : Epilogue::GeluAux;
            if (N % 8 == 0 && gemm_->run(g, stream_)) return;
            g.d = o.p;
            g.aux = nullptr;
        }
        g.epilogue = has_bias ? Epilogue::Bias : Epilogue::None;
        if (!gemm_->run(g, stream_)) {
            g.epilogue = Epilogue::None;
            run_gemm(g, "matmul_fwd", M, K, N);
            if (has_bias) add_bias(o, view(bias, N, "matmul_fwd", "bias"), M, N, stream_);
        }
        if (go.p) cuda::gelu_fwd(go, o, MN, stream_);
    }

    void matmul_fwd_add(Ten out, Ten in, Ten w, Ten residual, int M, int K, int N) override {
        const size_t MN = size_t(M) * N;
        const TView o = view(out, MN, "matmul_fwd_add", "out"), r = view(residual, MN, "matmul_fwd_add", "residual");
        GPT_CHECK(r.t == o.t, "cuda-bf16 matmul_fwd_add: out and residual must be in spaces of the same type");
        const size_t bytes = MN * dtype_bytes(o.t);
        const char *op = static_cast<const char*>(o.p), *rp = static_cast<const char*>(r.p);
        GPT_CHECK(op == rp || op + bytes <= rp || rp + bytes <= op,
                  "cuda-bf16 matmul_fwd_add: out must be residual itself or not overlap it");
        // out^T = w^T in^T + residual^T: beta = 1 with C = residual (cuBLASLt reads C, writes D).
        GemmArgs g = gemm_args(true, false, N, M, K, K, K, N, operand(w, size_t(N) * K, "matmul_fwd_add", "w"),
                               operand(in, size_t(M) * K, "matmul_fwd_add", "in"), o, 1.f);
        if (op != rp) g.c = r.p;
        run_gemm(g, "matmul_fwd_add", M, K, N);
    }

    // Bias gradients come from our column-sum kernels (16-byte loads, ~2.8 TB/s): 1.69 ms per GPT-2
    // step at B = 32 against 2.04 for cuBLASLt's BGRADB epilogue, which runs a separate reduction
    // kernel of its own plus our add (docs/performance.md, sixth session). GPT_BIAS_GRAD=cublas
    // selects BGRADB, for A/B runs.
    static bool bias_grad_by_gemm() {
        static const bool gemm = [] {
            const char* v = std::getenv("GPT_BIAS_GRAD");
            return v && std::string(v) == "cublas";
        }();
        return gemm;
    }

    void matmul_bwd(Ten din, Ten dw, Ten dbias, Ten dout, Ten in, Ten w, int M, int K,
                    int N) override {
        matmul_bwd_beta(din, dw, dbias, dout, in, w, M, K, N, 0.f);
    }
    void matmul_bwd_add(Ten din, Ten dw, Ten dbias, Ten dout, Ten in, Ten w, int M, int K,
                        int N) override {
        GPT_CHECK(din.present(), "cuda-bf16 matmul_bwd_add: din is required");
        matmul_bwd_beta(din, dw, dbias, dout, in, w, M, K, N, 1.f);
    }
    // din = dout . w + din_beta din (0: overwritten, 1: accumulated by the GEMM).
    void matmul_bwd_beta(Ten din, Ten dw, Ten dbias, Ten dout, Ten in, Ten w, int M, int K, int N, float din_beta) {
        const void* dout_p = operand(dout, size_t(M) * N, "matmul_bwd", "dout");
        if (din.present()) {   // din[M,K] = dout[M,N] . w[N,K]  ->  din^T = w^T dout^T
            GemmArgs g = gemm_args(false, false, K, M, N, K, N, K,
                                   operand(w, size_t(N) * K, "matmul_bwd", "w"), dout_p,
                                   view(din, size_t(M) * K, "matmul_bwd", "din"), din_beta);
            run_gemm(g, "matmul_bwd (din)", M, K, N);
        }
        bool bias_done = !dbias.present();
        TView db = view_opt(dbias, N, "matmul_bwd", "dbias");
        if (dw.present()) {   // dw[N,K] += dout^T in  ->  dw^T[K,N] += in^T[K,M] dout[M,N]
            const TView d = view(dw, size_t(N) * K, "matmul_bwd", "dw");
            GemmArgs g = gemm_args(false, true, K, N, M, K, N, K,
                                   operand(in, size_t(M) * K, "matmul_bwd", "in"), dout_p, d, 1.f);
            bool done = false;
            if (!bias_done && d.t == DType::F32 && bias_grad_by_gemm()) {   // BGRADB: colsum(dout) to a scratch vector
                float* tmp = static_cast<float*>(scratch(size_t(N) * 4));
                g.epilogue = Epilogue::BGradB;
                g.bias = tmp;
                g.bias_type = DType::F32;
                if (gemm_->run(g, stream_)) {
                    cuda::add(db, db, TView{tmp, DType::F32}, N, stream_);
                    done = bias_done = true;
                }
                g.epilogue = Epilogue::None;
                g.bias = nullptr;
            }
            if (!done) run_gemm(g, "matmul_bwd (dw)", M, K, N);
        }
        if (!bias_done) {
            float* partial = static_cast<float*>(scratch(colsum_scratch(M, N) * 4));
            colsum_add(db, view(dout, size_t(M) * N, "matmul_bwd", "dout"), M, N, partial, stream_);
        }
    }

    void matmul_bwd_gelu(Ten din, Ten dw, Ten dbias, Ten dout, Ten in, Ten w, Ten pre, int M, int K,
                         int N) override {
        GPT_CHECK(din.present(), "cuda-bf16 matmul_bwd_gelu: din is required");
        const size_t MK = size_t(M) * K;
        const TView d = view(din, MK, "matmul_bwd_gelu", "din"), pv = view(pre, MK, "matmul_bwd_gelu", "pre");
        // din^T = GELU'(pre^T) * (w^T dout^T): the DGELU epilogue reads pre as its aux matrix
        // (type of D, leading dimension K, which cuBLASLt wants divisible by 8).
        GemmArgs g = gemm_args(false, false, K, M, N, K, N, K, operand(w, size_t(N) * K, "matmul_bwd_gelu", "w"),
                               operand(dout, size_t(M) * N, "matmul_bwd_gelu", "dout"), d, 0.f);
        g.epilogue = Epilogue::DGelu;
        g.aux = pv.p;
        if (K % 8 == 0 && pv.t == d.t && gemm_->run(g, stream_)) {
            matmul_bwd({}, dw, dbias, dout, in, w, M, K, N);   // the weight and bias gradients
            return;
        }
        matmul_bwd(din, dw, dbias, dout, in, w, M, K, N);
        cuda::gelu_bwd(d, pv, d, MK, stream_);
    }
    void gelu_fwd(Ten out, Ten in, size_t n) override {
        cuda::gelu_fwd(view(out, n, "gelu_fwd", "out"), view(in, n, "gelu_fwd", "in"), n, stream_);
    }
    void gelu_bwd(Ten din, Ten in, Ten dout, size_t n) override {
        cuda::gelu_bwd(view(din, n, "gelu_bwd", "din"), view(in, n, "gelu_bwd", "in"),
                       view(dout, n, "gelu_bwd", "dout"), n, stream_);
    }
    void add(Ten out, Ten a, Ten b, size_t n) override {
        cuda::add(view(out, n, "add", "out"), view(a, n, "add", "a"), view(b, n, "add", "b"), n, stream_);
        param_touched(out.sub(0, n));
    }
    void add_inplace(Ten acc, Ten x, size_t n) override {
        TView a = view(acc, n, "add_inplace", "acc");
        cuda::add(a, a, view(x, n, "add_inplace", "x"), n, stream_);
        param_touched(acc.sub(0, n));
    }
    void dropout(Ten x, size_t n, float p, uint64_t seed) override {
        GPT_CHECK(p >= 0.f && p < 1.f, "cuda-bf16 dropout: p must be in [0, 1), got " + std::to_string(p));
        cuda::dropout(view(x, n, "dropout", "x"), n, p, seed, stream_);
    }

    void attention_fwd(Ten out, Ten lse, Ten q, Ten k, Ten v, const AttnDims& d) override {
        attention_check(d);
        if (cudnn_attention_wanted(d) && cudnn_attention_fwd(out, lse, q, k, v, d)) return;
        if (const BandSplit sp = band_split_of(d); sp.s > 0 && band_split_fwd(out, lse, q, k, v, d, sp)) return;
        const auto ext = extents(d);
        cuda::attention_fwd(act(out, ext.o, "attention_fwd", "out"), stat(lse, ext.l, "attention_fwd", "lse"),
                            act(q, ext.q, "attention_fwd", "q"), act(k, ext.k, "attention_fwd", "k"),
                            act(v, ext.v, "attention_fwd", "v"), d, stream_);
    }
    void attention_bwd(Ten dq, Ten dk, Ten dv, Ten dout, Ten out, Ten lse, Ten q, Ten k, Ten v,
                       const AttnDims& d, Ten delta_shift) override {
        attention_check(d);
        if (cudnn_attention_wanted(d) && cudnn_attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, d, delta_shift))
            return;
        if (const BandSplit sp = band_split_of(d);
            sp.s > 0 && band_split_bwd(dq, dk, dv, dout, out, lse, q, k, v, d, delta_shift, sp))
            return;
        const auto ext = extents(d);
        float* delta = static_cast<float*>(scratch(ext.l * 4));
        const float* shift = delta_shift.present() ? stat(delta_shift, ext.l, "attention_bwd", "delta_shift") : nullptr;
        cuda::attention_bwd(act(dq, ext.q, "attention_bwd", "dq"), act(dk, ext.k, "attention_bwd", "dk"),
                            act(dv, ext.v, "attention_bwd", "dv"), act(dout, ext.o, "attention_bwd", "dout"),
                            act(out, ext.o, "attention_bwd", "out"), stat(lse, ext.l, "attention_bwd", "lse"),
                            act(q, ext.q, "attention_bwd", "q"), act(k, ext.k, "attention_bwd", "k"),
                            act(v, ext.v, "attention_bwd", "v"), d, delta, shift, stream_);
    }

    // RA with the fold inside our attention kernels (no q̃, k̃ in memory; cuDNN cannot take it).
    void ra_attention_fwd(Ten out, Ten lse, Ten q, Ten k, Ten v, Ten g_std, Ten g_rec, const RaFoldDims& f,
                          const AttnDims& a) override {
        const char* op = "ra_attention_fwd";
        const AttnDims d = fused_fold_dims(f, a, op);
        const FusedFold fold = fused_fold(f, g_std, g_rec, {}, {}, op);
        const auto ext = extents(d);
        const size_t qk = fold_extent(f);
        cuda::attention_fwd(act(out, ext.o, op, "out"), stat(lse, ext.l, op, "lse"), act(q, qk, op, "q"),
                            act(k, qk, op, "k"), act(v, ext.v, op, "v"), d, stream_, 0, &fold);
    }
    void ra_attention_bwd(Ten dq, Ten dk, Ten dv, Ten dg_std, Ten dg_rec, Ten dout, Ten out, Ten lse, Ten q, Ten k,
                          Ten v, Ten g_std, Ten g_rec, const RaFoldDims& f, const AttnDims& a) override {
        const char* op = "ra_attention_bwd";
        const AttnDims d = fused_fold_dims(f, a, op);
        FusedFold fold = fused_fold(f, g_std, g_rec, dg_std, dg_rec, op);
        const auto ext = extents(d);
        const size_t qk = fold_extent(f), delta_bytes = (ext.l * 4 + 255) / 256 * 256;
        char* ws = static_cast<char*>(scratch(delta_bytes + fused_fold_scratch_floats(d) * 4));
        fold.scratch = reinterpret_cast<float*>(ws + delta_bytes);
        cuda::attention_bwd(act(dq, qk, op, "dq"), act(dk, qk, op, "dk"), act(dv, ext.v, op, "dv"),
                            act(dout, ext.o, op, "dout"), act(out, ext.o, op, "out"), stat(lse, ext.l, op, "lse"),
                            act(q, qk, op, "q"), act(k, qk, op, "k"), act(v, ext.v, op, "v"), d,
                            reinterpret_cast<float*>(ws), nullptr, stream_, 0, &fold);
    }
    // The attention's dims on the plain operands: q, k rows at the fold's stride (one for both).
    static AttnDims fused_fold_dims(const RaFoldDims& f, const AttnDims& a, const char* op) {
        GPT_CHECK(f.Hk == f.H && f.q_stride == f.k_stride && a.Hq == f.H && a.Hkv == f.H && a.Dqk == 2 * f.D &&
                      size_t(a.B) * a.T == size_t(f.N),
                  std::string("cuda-bf16 ") + op + ": the fold inside the kernel needs Hk = H, q and k rows at one "
                      "stride and attention dims on the fold (Hq = Hkv = H, Dqk = 2 D, B T = N)");
        AttnDims d = a;
        d.q_stride = d.k_stride = f.q_stride;
        attention_check(d);
        return d;
    }
    FusedFold fused_fold(const RaFoldDims& f, Ten g_std, Ten g_rec, Ten dg_std, Ten dg_rec, const char* op) const {
        GPT_CHECK(f.n_gates == 1 || f.n_gates == f.H,
                  std::string("cuda-bf16 ") + op + ": n_gates must be 1 or H");
        FusedFold fold;
        fold.D = f.D;
        fold.n_gates = f.n_gates;
        fold.g_std_fixed = f.g_std_fixed;
        fold.g_rec_fixed = f.g_rec_fixed;
        fold.g_std = g_std.present() ? stat(g_std, size_t(f.n_gates), op, "g_std") : nullptr;
        fold.g_rec = g_rec.present() ? stat(g_rec, size_t(f.n_gates), op, "g_rec") : nullptr;
        fold.dg_std = dg_std.present() ? stat(dg_std, size_t(f.n_gates), op, "dg_std") : nullptr;
        fold.dg_rec = dg_rec.present() ? stat(dg_rec, size_t(f.n_gates), op, "dg_rec") : nullptr;
        return fold;
    }
    static size_t fold_extent(const RaFoldDims& f) { return size_t(f.N - 1) * f.q_stride + size_t(f.H) * f.D; }

    void classifier(Ten losses, Ten logits, Ten targets, int N, int V, int Vp, float dloss) override {
        GPT_CHECK(V <= Vp, "cuda-bf16 classifier: V > Vp");
        cuda::classifier(stat(losses, N, "classifier", "losses"),
                         view(logits, size_t(N) * Vp, "classifier", "logits"),
                         index(targets, N, "classifier"), N, V, Vp, dloss, stream_);
    }

    // --- optimisation ---------------------------------------------------------------------------
    double sum_squares(Ten t) override {
        check_range(t, t.n, "sum_squares", "t");
        double result = 0.0;
        if (t.n == 0) return 0.0;
        cuda::sum_squares(raw(t), t.n, ssq_, stream_);
        GPT_CUDA(cudaMemcpyAsync(&result, ssq_ + kSumSquaresBlocks, sizeof(double),
                                 cudaMemcpyDeviceToHost, stream_));
        GPT_CUDA(cudaStreamSynchronize(stream_));
        return result;
    }

    void adamw(const std::vector<AdamWTensor>& ts, const AdamWHyper& h) override {
        std::vector<AdamWDevTensor> dev;
        std::vector<AdamWChunk> chunks;
        dev.reserve(ts.size());
        for (const AdamWTensor& t : ts) {
            GPT_CHECK(t.param.space == Space::Param, "cuda-bf16 adamw: a tensor's param is not in Param space");
            const size_t n = t.param.n;
            check_range(t.param, n, "adamw", "param");
            check_range(t.m, n, "adamw", "m");
            check_range(t.v, n, "adamw", "v");
            AdamWDevTensor d{};
            d.p = f32(t.param);
            d.g = f32(t.param.as(Space::Grad));
            check_range(t.param.as(Space::Grad), n, "adamw", "grad");
            d.m = f32(t.m);
            d.v = f32(t.v);
            if (h.amsgrad) {
                GPT_CHECK(t.vmax.present(), "cuda-bf16 adamw: amsgrad needs vmax for every tensor");
                check_range(t.vmax, n, "adamw", "vmax");
                d.vmax = f32(t.vmax);
            }
            d.p_bf16 = param_bf16_ + t.param.off;
            d.n = n;
            d.decay = t.decay ? 1 : 0;
            for (size_t s = 0; s < n; s += kAdamWChunk) chunks.push_back({int(dev.size()), s});
            dev.push_back(d);
        }
        if (chunks.empty()) return;
        // The tensor list is the same every step: upload it only when it changes.
        const bool same = dev.size() == adamw_tensors_.size() && chunks.size() == adamw_chunks_n_ &&
                          std::equal(dev.begin(), dev.end(), adamw_tensors_.begin(),
                                     [](const AdamWDevTensor& a, const AdamWDevTensor& b) {
                                         return std::memcmp(&a, &b, sizeof(a)) == 0;
                                     });
        if (!same) {
            GPT_CUDA(cudaStreamSynchronize(stream_));
            tracked_free(adamw_tensors_dev_);
            tracked_free(adamw_chunks_dev_);
            adamw_tensors_dev_ = nullptr;
            adamw_chunks_dev_ = nullptr;
            GPT_CUDA(tracked_malloc(&adamw_tensors_dev_, dev.size() * sizeof(AdamWDevTensor)));
            GPT_CUDA(tracked_malloc(&adamw_chunks_dev_, chunks.size() * sizeof(AdamWChunk)));
            GPT_CUDA(cudaMemcpy(adamw_tensors_dev_, dev.data(), dev.size() * sizeof(AdamWDevTensor),
                                cudaMemcpyHostToDevice));
            GPT_CUDA(cudaMemcpy(adamw_chunks_dev_, chunks.data(), chunks.size() * sizeof(AdamWChunk),
                                cudaMemcpyHostToDevice));
            adamw_tensors_ = dev;
            adamw_chunks_n_ = chunks.size();
        }
        cuda::adamw(adamw_tensors_dev_, adamw_chunks_dev_, int(chunks.size()), h, stream_, adamw_norm_sq_,
                    adamw_clip_);
    }

    void mul_inplace(Ten x, Ten mask, size_t n) override {
        cuda::mul_inplace(view(x, n, "mul_inplace", "x"), view(mask, n, "mul_inplace", "mask"), n, stream_);
        param_touched(x.sub(0, n));
    }

private:
    // cuDNN's fused attention (attention_cudnn.cuh) for calls whose AttnDims::impl selects it;
    // false when cuDNN builds no plan for the shape (reported once), and ours runs instead.
    CudnnAttention cudnn_attention_;
    bool cudnn_attention_fwd(Ten out, Ten lse, Ten q, Ten k, Ten v, const AttnDims& d) {
        if (!cudnn_attention_.prepare_fwd(d)) return false;
        // With dropout the backward must draw the same (cuDNN's) mask: take cuDNN only when its
        // backward plan builds too (our kernels' mask is another one).
        if (d.dropout > 0.f && !cudnn_attention_.prepare_bwd(d, d.impl != AttentionImpl::cudnn_nondeterministic))
            return false;
        const auto ext = extents(d);
        void* ws = scratch(std::max<size_t>(cudnn_attention_.fwd_workspace_bytes(d), 256));
        cudnn_attention_.fwd(act(out, ext.o, "attention_fwd", "out"), stat(lse, ext.l, "attention_fwd", "lse"),
                             act(q, ext.q, "attention_fwd", "q"), act(k, ext.k, "attention_fwd", "k"),
                             act(v, ext.v, "attention_fwd", "v"), d, ws, stream_);
        return true;
    }
    bool cudnn_attention_bwd(Ten dq, Ten dk, Ten dv, Ten dout, Ten out, Ten lse, Ten q, Ten k, Ten v,
                             const AttnDims& d, Ten delta_shift) {
        const bool det = d.impl != AttentionImpl::cudnn_nondeterministic;
        if (!cudnn_attention_.prepare_bwd(d, det)) {
            // Unreachable with dropout (the forward took cuDNN only with both plans built).
            GPT_CHECK(d.dropout == 0.f, "cuDNN attention: the backward plan failed after a dropout forward "
                                        "through cuDNN (its mask is not ours): " + cudnn_attention_.last_error());
            return false;
        }
        const auto ext = extents(d);
        const size_t ws_bytes = (cudnn_attention_.bwd_workspace_bytes(d, det) + 255) / 256 * 256;
        char* ws = static_cast<char*>(scratch(ws_bytes + (delta_shift.present() ? ext.o * 2 : 0)));
        const __nv_bfloat16* o = out_seen_by_cudnn(out, dout, delta_shift, d, ws + ws_bytes);
        cudnn_attention_.bwd(act(dq, ext.q, "attention_bwd", "dq"), act(dk, ext.k, "attention_bwd", "dk"),
                             act(dv, ext.v, "attention_bwd", "dv"), act(dout, ext.o, "attention_bwd", "dout"),
                             o, stat(lse, ext.l, "attention_bwd", "lse"),
                             act(q, ext.q, "attention_bwd", "q"), act(k, ext.k, "attention_bwd", "k"),
                             act(v, ext.v, "attention_bwd", "v"), d, det, ws, stream_);
        return true;
    }
    // cuDNN's backward forms D = rowsum(dO O) from the O it is given (attention_cudnn.cu): a delta
    // shift goes in as an adjusted copy of out, written at `spare` (ext.o bf16 of scratch).
    const __nv_bfloat16* out_seen_by_cudnn(Ten out, Ten dout, Ten delta_shift, const AttnDims& d, char* spare) {
        const auto ext = extents(d);
        const __nv_bfloat16* o = act(out, ext.o, "attention_bwd", "out");
        if (!delta_shift.present()) return o;
        auto* adj = reinterpret_cast<__nv_bfloat16*>(spare);
        cuda::attention_shift_out(adj, o, act(dout, ext.o, "attention_bwd", "dout"),
                                  stat(delta_shift, ext.l, "attention_bwd", "delta_shift"), d, stream_);
        return adj;
    }
    // The banded split (attention_band_split.cuh): cuDNN on the off-band windows, then our kernels
    // on the band, merging. Taken only when both cuDNN plans build (forward and backward must split
    // alike: with dropout each part's mask is its own); otherwise our kernels do the whole call.
    bool band_split_ready(const BandSplit& sp) {
        return cudnn_attention_.prepare_fwd(sp.off, sp.view) &&
               cudnn_attention_.prepare_bwd(sp.off, sp.off.impl != AttentionImpl::cudnn_nondeterministic, sp.view);
    }
    bool band_split_fwd(Ten out, Ten lse, Ten q, Ten k, Ten v, const AttnDims& d, const BandSplit& sp) {
        if (!band_split_ready(sp)) return false;
        const auto ext = extents(d);
        __nv_bfloat16* o = act(out, ext.o, "attention_fwd", "out");
        float* l = stat(lse, ext.l, "attention_fwd", "lse");
        const __nv_bfloat16 *qp = act(q, ext.q, "attention_fwd", "q"), *kp = act(k, ext.k, "attention_fwd", "k"),
                            *vp = act(v, ext.v, "attention_fwd", "v");
        void* ws = scratch(std::max<size_t>(cudnn_attention_.fwd_workspace_bytes(sp.off, sp.view), 256));
        cudnn_attention_.fwd(o + size_t(sp.s) * d.Hq * d.Dv, l + sp.s, qp + size_t(sp.s) * d.q_stride, kp, vp, sp.off,
                             ws, stream_, sp.view);
        cuda::attention_fwd(o, l, qp, kp, vp, d, stream_, sp.s);
        return true;
    }
    bool band_split_bwd(Ten dq, Ten dk, Ten dv, Ten dout, Ten out, Ten lse, Ten q, Ten k, Ten v, const AttnDims& d,
                        Ten delta_shift, const BandSplit& sp) {
        if (!band_split_ready(sp)) {
            GPT_CHECK(d.dropout == 0.f, "RA band split: the cuDNN plans failed between forward and backward: " +
                                            cudnn_attention_.last_error());
            return false;
        }
        const bool det = d.impl != AttentionImpl::cudnn_nondeterministic;
        const auto ext = extents(d);
        const size_t ws_bytes = (cudnn_attention_.bwd_workspace_bytes(sp.off, det, sp.view) + 255) / 256 * 256;
        const size_t adj_bytes = delta_shift.present() ? (ext.o * 2 + 255) / 256 * 256 : 0;
        char* ws = static_cast<char*>(scratch(ws_bytes + adj_bytes + ext.l * 4));
        float* delta = reinterpret_cast<float*>(ws + ws_bytes + adj_bytes);
        const __nv_bfloat16* o = act(out, ext.o, "attention_bwd", "out");
        const __nv_bfloat16* g = act(dout, ext.o, "attention_bwd", "dout");
        const float* l = stat(lse, ext.l, "attention_bwd", "lse");
        const float* shift = delta_shift.present() ? stat(delta_shift, ext.l, "attention_bwd", "delta_shift") : nullptr;
        const __nv_bfloat16* o_cudnn = out_seen_by_cudnn(out, dout, delta_shift, d, ws + ws_bytes);
        __nv_bfloat16 *dqp = act(dq, ext.q, "attention_bwd", "dq"), *dkp = act(dk, ext.k, "attention_bwd", "dk"),
                      *dvp = act(dv, ext.v, "attention_bwd", "dv");
        const __nv_bfloat16 *qp = act(q, ext.q, "attention_bwd", "q"), *kp = act(k, ext.k, "attention_bwd", "k"),
                            *vp = act(v, ext.v, "attention_bwd", "v");
        const size_t q_off = size_t(sp.s) * d.q_stride, o_off = size_t(sp.s) * d.Hq * d.Dv;
        cudnn_attention_.bwd(dqp + q_off, dkp, dvp, g + o_off, o_cudnn + o_off, l + sp.s, qp + q_off, kp, vp, sp.off,
                             det, ws, stream_, sp.view);
        cuda::attention_bwd(dqp, dkp, dvp, g, o, l, qp, kp, vp, d, delta, shift, stream_, sp.s);
        return true;
    }
    struct AttnExtents { size_t q, k, v, o, l; };
    static AttnExtents extents(const AttnDims& d) {
        const size_t rows = size_t(d.B) * d.T;
        AttnExtents e;
        e.q = (rows - 1) * d.q_stride + size_t(d.Hq) * d.Dqk;
        e.k = (rows - 1) * d.k_stride + size_t(d.Hkv) * d.Dqk;
        e.v = (rows - 1) * d.v_stride + size_t(d.Hkv) * d.Dv;
        e.o = rows * d.Hq * d.Dv;
        e.l = size_t(d.B) * d.Hq * d.T;
        return e;
    }

    // Column-major GEMM arguments: D[m, n] = op(A) op(B) + beta D, A and B bf16.
    static GemmArgs gemm_args(bool trans_a, bool trans_b, int m, int n, int k, int lda, int ldb,
                              int ldd, const void* a, const void* b, TView d, float beta) {
        GemmArgs g;
        g.trans_a = trans_a;
        g.trans_b = trans_b;
        g.m = m;
        g.n = n;
        g.k = k;
        g.lda = lda;
        g.ldb = ldb;
        g.ldd = ldd;
        g.a = a;
        g.b = b;
        g.d = d.p;
        g.d_type = d.t;
        g.beta = beta;
        return g;
    }
    void run_gemm(const GemmArgs& g, const char* what, int M, int K, int N) {
        GPT_CHECK(gemm_->run(g, stream_), std::string("cuda-bf16 ") + what +
                                              ": cuBLASLt has no algorithm for M=" + std::to_string(M) +
                                              " K=" + std::to_string(K) + " N=" + std::to_string(N));
    }

    void release() {
        for (auto& b : buf_) {
            if (b) tracked_free(b);
            b = nullptr;
        }
        if (param_bf16_) tracked_free(param_bf16_);
        param_bf16_ = nullptr;
        plan_ = MemoryPlan{};
    }

    void check_range(Ten t, size_t need, const char* op, const char* arg) const {
        if (need == 0) return;
        if (t.off + need > plan_[t.space])
            fail(std::string("cuda-bf16 ") + op + ": argument `" + arg + "` (" + space_name(t.space) +
                 " offset " + std::to_string(t.off) + ", " + std::to_string(need) +
                 " elements) runs past the " + space_name(t.space) + " buffer of " +
                 std::to_string(plan_[t.space]) + " elements: the memory plan and the call disagree");
    }

    TView raw(Ten t) const {
        const DType ty = space_type(t.space);
        return TView{static_cast<char*>(buf_[int(t.space)]) + t.off * dtype_bytes(ty), ty};
    }
    float* f32(Ten t) const { return static_cast<float*>(raw(t).p); }
    // An fp32 space's view for the collectives (Param, Grad, Opt, Stat).
    float* fp32_view(Ten t, const char* op) const {
        GPT_CHECK(space_type(t.space) == DType::F32,
                  std::string("cuda-bf16 ") + op + ": only fp32 spaces are summed or broadcast, not " +
                      space_name(t.space));
        check_range(t, t.n, op, "t");
        return f32(t);
    }

    TView view(Ten t, size_t need, const char* op, const char* arg) const {
        GPT_CHECK(t.present(), std::string("cuda-bf16 ") + op + ": argument `" + arg + "` is absent");
        GPT_CHECK(t.space != Space::Index, std::string("cuda-bf16 ") + op + ": argument `" + arg +
                                               "` must not be in Index space");
        check_range(t, need, op, arg);
        return raw(t);
    }
    TView view_opt(Ten t, size_t need, const char* op, const char* arg) const {
        return t.present() ? view(t, need, op, arg) : TView{};
    }
    float* stat(Ten t, size_t need, const char* op, const char* arg) const {
        GPT_CHECK(t.space == Space::Stat || t.space == Space::Grad || t.space == Space::Opt ||
                      t.space == Space::Param,
                  std::string("cuda-bf16 ") + op + ": argument `" + arg + "` must be in an fp32 space (Stat)");
        return static_cast<float*>(view(t, need, op, arg).p);
    }
    const int32_t* index(Ten t, size_t need, const char* op) const {
        GPT_CHECK(t.space == Space::Index, std::string("cuda-bf16 ") + op + ": tokens/targets must be in Index space");
        check_range(t, need, op, "index");
        return static_cast<const int32_t*>(raw(t).p);
    }
    __nv_bfloat16* act(Ten t, size_t need, const char* op, const char* arg) const {
        GPT_CHECK(t.space == Space::Act, std::string("cuda-bf16 ") + op + ": argument `" + arg +
                                             "` must be in Act space (bf16)");
        return static_cast<__nv_bfloat16*>(view(t, need, op, arg).p);
    }
    // GEMM operands are bf16: activations directly, parameters through their bf16 copy.
    const void* operand(Ten t, size_t need, const char* op, const char* arg) const {
        check_range(t, need, op, arg);
        if (t.space == Space::Act) return raw(t).p;
        if (t.space == Space::Param) return param_bf16_ + t.off;
        fail(std::string("cuda-bf16 ") + op + ": GEMM operand `" + arg + "` is in " +
             space_name(t.space) + " space; it must be in Act or Param (bf16 operands)");
    }
    const void* bias_ptr(Ten bias, int N, DType d_type, const char* op) const {
        check_range(bias, N, op, "bias");
        if (d_type == DType::BF16 && bias.space == Space::Param) return param_bf16_ + bias.off;
        const TView v = raw(bias);
        GPT_CHECK(v.t == d_type, std::string("cuda-bf16 ") + op + ": bias type does not match the output's");
        return v.p;
    }
    // Param writes also refresh the bf16 copy of the touched range.
    void param_touched(Ten t) {
        if (t.space != Space::Param || t.n == 0) return;
        convert(TView{param_bf16_ + t.off, DType::BF16}, TView{f32(t), DType::F32}, t.n, stream_);
    }

    // What the backend allocates after the plan, for the fit check: the scratch arena's largest
    // request in a training step (the embedding backward's sort buffers over the B*T tokens; Index
    // holds tokens and targets) plus a reserve for the rest (other kernels' scratch, lazily loaded
    // kernel modules, cuBLASLt): an estimate, not a bound.
    static size_t workspace_estimate(const MemoryPlan& plan) {
        constexpr size_t kReserve = size_t(256) << 20;
        const int tokens = int(std::min<size_t>(plan[Space::Index] / 2, size_t(1) << 30));
        return (tokens > 0 ? embedding_bwd_scratch(tokens, 1 << 17) : 0) + kReserve;
    }
    float* staging(size_t n) {
        if (n > staging_n_) {
            GPT_CUDA(cudaStreamSynchronize(stream_));
            tracked_free(staging_);
            staging_ = nullptr;
            GPT_CUDA(tracked_malloc(&staging_, n * 4));
            staging_n_ = n;
        }
        return staging_;
    }
    void* scratch(size_t bytes) {
        if (bytes > scratch_bytes_) {
            GPT_CUDA(cudaStreamSynchronize(stream_));
            tracked_free(scratch_);
            scratch_ = nullptr;
            GPT_CUDA(tracked_malloc(&scratch_, bytes));
            scratch_bytes_ = bytes;
        }
        return scratch_;
    }

    int device_;
    cudaStream_t stream_ = nullptr;
    std::unique_ptr<Gemm> gemm_;
    MemoryPlan plan_;
    void* buf_[kNumSpaces] = {};
    __nv_bfloat16* param_bf16_ = nullptr;
    float* staging_ = nullptr;
    size_t staging_n_ = 0;
    void* scratch_ = nullptr;
    size_t scratch_bytes_ = 0;
    double* ssq_ = nullptr;
    std::unique_ptr<NcclRanks> ranks_;   // data-parallel communicator (join_ranks), else null
    double* value_dev_ = nullptr;         // allreduce_value's device double
    std::vector<AdamWDevTensor> adamw_tensors_;
    size_t adamw_chunks_n_ = 0;
    AdamWDevTensor* adamw_tensors_dev_ = nullptr;
    AdamWChunk* adamw_chunks_dev_ = nullptr;
    const double* adamw_norm_sq_ = nullptr;   // set by adamw_clipped for the one call
    float adamw_clip_ = 0.f;
    std::unique_ptr<StepPipeline> pipe_;
    // --- variant operations (kernels/cuda/variant_*.cu) ---
    // Each forwards to the function of the same name in cuda/variant_ops.cuh (semantics: ops.h).
public:
    void ra_fold_fwd(Ten qt, Ten kt, Ten q, Ten k, Ten g_std, Ten g_rec, const RaFoldDims& d) override {
        variant::ra_fold_fwd(venv(), qt, kt, q, k, g_std, g_rec, d);
    }
    void ra_fold_bwd(Ten dq, Ten dk, Ten dg_std, Ten dg_rec, Ten dqt, Ten dkt, Ten q, Ten k, Ten g_std, Ten g_rec,
                     const RaFoldDims& d, Ten dbias, Ten dv) override {
        variant::ra_fold_bwd(venv(), dq, dk, dg_std, dg_rec, dqt, dkt, q, k, g_std, g_rec, d, dbias, dv);
    }
    void ra_lowrank_fwd(Ten qt, Ten kt, Ten q, Ten k, Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d) override {
        variant::ra_lowrank_fwd(venv(), qt, kt, q, k, W, g_std, g_rec, d);
    }
    void ra_lowrank_bwd(Ten dq, Ten dk, Ten dW, Ten dg_std, Ten dg_rec, Ten dqt, Ten dkt, Ten q, Ten k, Ten W,
                        Ten g_std, Ten g_rec, const RaLowRankDims& d) override {
        variant::ra_lowrank_bwd(venv(), dq, dk, dW, dg_std, dg_rec, dqt, dkt, q, k, W, g_std, g_rec, d);
    }
    void ra_lowrank_weights_fwd(Ten w_eff, Ten b_eff, Ten w, Ten b, Ten W, Ten g_std, Ten g_rec,
                                const RaLowRankDims& d) override {
        variant::ra_lowrank_weights_fwd(venv(), w_eff, b_eff, w, b, W, g_std, g_rec, d);
    }
    void ra_lowrank_weights_bwd(Ten dw, Ten db, Ten dW, Ten dg_std, Ten dg_rec, Ten dw_eff, Ten db_eff, Ten w,
                                Ten b, Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d) override {
        variant::ra_lowrank_weights_bwd(venv(), dw, db, dW, dg_std, dg_rec, dw_eff, db_eff, w, b, W, g_std, g_rec,
                                        d);
    }
    void head_map_fwd(Ten out, Ten in, Ten M, const HeadMapDims& d) override {
        variant::head_map_fwd(venv(), out, in, M, d);
    }
    void head_map_bwd(Ten din, Ten dM, Ten dout, Ten in, Ten M, const HeadMapDims& d) override {
        variant::head_map_bwd(venv(), din, dM, dout, in, M, d);
    }
    void ract_gate_fwd(Ten stat, Ten gate, Ten sel, Ten q, Ten k, Ten lse, Ten scale, Ten bias, const AttnDims& a,
                       const RactDims& d) override {
        variant::ract_gate_fwd(venv(), stat, gate, sel, q, k, lse, scale, bias, a, d);
    }
    void ract_gate_bwd(Ten dq, Ten dk, Ten dscale, Ten dbias, Ten dgate, Ten q, Ten k, Ten lse, Ten stat, Ten sel,
                       Ten gate, Ten scale, const AttnDims& a, const RactDims& d) override {
        variant::ract_gate_bwd(venv(), dq, dk, dscale, dbias, dgate, q, k, lse, stat, sel, gate, scale, a, d);
    }
    void ract_gate_coef(Ten alpha, Ten beta, Ten dscale, Ten dbias, Ten dgate, Ten q, Ten k, Ten lse, Ten stat,
                        Ten sel, Ten gate, Ten scale, const AttnDims& a, const RactDims& d) override {
        variant::ract_gate_coef(venv(), alpha, beta, dscale, dbias, dgate, q, k, lse, stat, sel, gate, scale, a, d);
    }
    void ract_select_bwd(Ten dq, Ten dk, Ten alpha, Ten sel, Ten q, Ten k, Ten lse, const AttnDims& a,
                         const RactDims& d) override {
        variant::ract_select_bwd(venv(), dq, dk, alpha, sel, q, k, lse, a, d);
    }
    void ract_entropy_fwd(Ten y, Ten stat, Ten gate, Ten out2, Ten q, Ten lse, Ten scale, Ten bias, float alpha,
                          const AttnDims& a) override {
        variant::ract_entropy_fwd(venv(), y, stat, gate, out2, q, lse, scale, bias, alpha, a);
    }
    void ract_entropy_bwd(Ten dout2, Ten dscale, Ten dbias, Ten dy, Ten out2, Ten q, Ten stat, Ten gate, Ten scale,
                          float alpha, bool detach, const AttnDims& a) override {
        variant::ract_entropy_bwd(venv(), dout2, dscale, dbias, dy, out2, q, stat, gate, scale, alpha, detach, a);
    }
    void copy_heads(Ten dst, Ten src, const HeadCopyDims& d) override { variant::copy_heads(venv(), dst, src, d); }
    void head_gate_fwd(Ten out, Ten ctx, Ten gate, Ten alpha, float alpha_fixed, int N, int H, int Dv) override {
        variant::head_gate_fwd(venv(), out, ctx, gate, alpha, alpha_fixed, N, H, Dv);
    }
    void head_gate_bwd(Ten dctx, Ten dgate, Ten dalpha, Ten dout, Ten ctx, Ten gate, Ten alpha, float alpha_fixed,
                       int N, int H, int Dv) override {
        variant::head_gate_bwd(venv(), dctx, dgate, dalpha, dout, ctx, gate, alpha, alpha_fixed, N, H, Dv);
    }
    void sigmoid_fwd(Ten out, Ten in, size_t n) override { variant::sigmoid_fwd(venv(), out, in, n); }
    void sigmoid_bwd(Ten din, Ten out, Ten dout, size_t n) override { variant::sigmoid_bwd(venv(), din, out, dout, n); }
    void topk_rows(Ten idx, Ten wts, Ten q, Ten k, Ten lse, const AttnDims& a, int topk) override {
        variant::topk_rows(venv(), idx, wts, q, k, lse, a, topk);
    }
    void sparse_mix_fwd(Ten agg, Ten z, Ten idx, Ten wts, int N, int r, int k) override {
        variant::sparse_mix_fwd(venv(), agg, z, idx, wts, N, r, k);
    }
    void sparse_mix_bwd(Ten dz, Ten dagg, Ten idx, Ten wts, int N, int r, int k) override {
        variant::sparse_mix_bwd(venv(), dz, dagg, idx, wts, N, r, k);
    }
    void add_scaled_fwd(Ten out, Ten a, Ten b, Ten alpha, size_t n) override {
        variant::add_scaled_fwd(venv(), out, a, b, alpha, n);
    }
    void add_scaled_bwd(Ten db, Ten dalpha, Ten dout, Ten b, Ten alpha, size_t n) override {
        variant::add_scaled_bwd(venv(), db, dalpha, dout, b, alpha, n);
    }
    void disc_channel_fwd(Ten qt_out, Ten kt_out, Ten qt, Ten kt, Ten k, Ten u, Ten g_disc,
                          const DiscChannelDims& d) override {
        variant::disc_channel_fwd(venv(), qt_out, kt_out, qt, kt, k, u, g_disc, d);
    }
    void disc_channel_bwd(Ten dqt, Ten dkt, Ten dk, Ten du, Ten dg_disc, Ten dqt_out, Ten dkt_out, Ten k, Ten u,
                          Ten g_disc, const DiscChannelDims& d) override {
        variant::disc_channel_bwd(venv(), dqt, dkt, dk, du, dg_disc, dqt_out, dkt_out, k, u, g_disc, d);
    }

private:
    VariantEnv venv() {
        VariantEnv e{buf_, &plan_, param_bf16_, gemm_.get(), stream_, [this](size_t b) { return scratch(b); }};
        e.batched = &batched_gemm_;
        return e;
    }
    BatchedGemm batched_gemm_;   // its cuBLAS handle is created on first use
    // --- end of variant operations ---
};

}  // namespace
}  // namespace cuda

bool cuda_device_available() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return n > 0;
}

std::unique_ptr<Ops> make_cuda_ops(int device) {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0)
        fail(std::string("cuda-bf16: no CUDA device available (") + cudaGetErrorString(err) +
             "). Fix: run on a machine with an NVIDIA GPU, or set train.device: cpu");
    if (device < 0 || device >= n)
        fail("cuda-bf16: device " + std::to_string(device) + " does not exist (" + std::to_string(n) +
             " visible). Fix: choose a device index below " + std::to_string(n));
    return std::make_unique<cuda::CudaOps>(device);
}

}  // namespace gpt
