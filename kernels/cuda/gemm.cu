// cuBLASLt wrapper: see gemm.cuh.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "cuda/device_memory.cuh"
#include "cuda/gemm.cuh"
#include "cuda/gemm_tune.cuh"

namespace gpt::cuda {
namespace {

// How many of the heuristic's algorithms are timed on a shape's first call. On the GPT-2 shapes
// the heuristic's first choice is not always the fastest (docs/performance.md, "GEMMs").
constexpr int kCandidates = 8;

void check_cublas(cublasStatus_t st, const char* call) {
    if (st != CUBLAS_STATUS_SUCCESS)
        fail(std::string("cuda-bf16: cuBLASLt call failed: ") + call + ": " +
             cublasLtGetStatusString(st) + " (status " + std::to_string(int(st)) + ")");
}
#define GPT_CUBLAS(call) check_cublas((call), #call)

cudaDataType_t cuda_type(DType t) { return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// The largest power of two (<= 256) dividing the address: cuBLASLt picks kernels by alignment.
int alignment(const void* p) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    int al = 256;
    while (al > 1 && (a % al) != 0) al /= 2;
    return al;
}

cublasLtEpilogue_t lt_epilogue(Epilogue e) {
    switch (e) {
        case Epilogue::Bias: return CUBLASLT_EPILOGUE_BIAS;
        case Epilogue::GeluAux: return CUBLASLT_EPILOGUE_GELU_AUX;
        case Epilogue::GeluAuxBias: return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
        case Epilogue::BGradB: return CUBLASLT_EPILOGUE_BGRADB;
        case Epilogue::DGelu: return CUBLASLT_EPILOGUE_DGELU;
        default: return CUBLASLT_EPILOGUE_DEFAULT;
    }
}
bool has_bias(Epilogue e) { return e == Epilogue::Bias || e == Epilogue::GeluAuxBias || e == Epilogue::BGradB; }
bool has_aux(Epilogue e) { return e == Epilogue::GeluAux || e == Epilogue::GeluAuxBias || e == Epilogue::DGelu; }

// GPT_GEMM_DGELU=0 switches the fused GELU backward off (the caller's fallback runs instead):
// the before/after toggle of the measurements in docs/performance.md.
bool dgelu_enabled() {
    static const bool on = [] {
        const char* e = std::getenv("GPT_GEMM_DGELU");
        return !(e && std::string(e) == "0");
    }();
    return on;
}

template <class T>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& v,
              const char* what) {
    check_cublas(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(v)), what);
}

std::string key_text(const std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int, int>& k,
                     size_t workspace) {
    std::string s = gemm_tune::device_tag() + "/ws" + std::to_string(workspace);
    std::apply([&](auto... v) { ((s += "/" + std::to_string(v)), ...); }, k);
    return s;
}

}  // namespace

Gemm::Gemm() {
    GPT_CUBLAS(cublasLtCreate(&handle_));
    GPT_CUDA(tracked_malloc(&workspace_, workspace_bytes_));
}

Gemm::~Gemm() {
    for (auto& [key, p] : plans_) {
        if (p.desc) cublasLtMatmulDescDestroy(p.desc);
        if (p.a) cublasLtMatrixLayoutDestroy(p.a);
        if (p.b) cublasLtMatrixLayoutDestroy(p.b);
        if (p.d) cublasLtMatrixLayoutDestroy(p.d);
    }
    if (workspace_) tracked_free(workspace_);
    if (handle_) cublasLtDestroy(handle_);
}

Gemm::Plan& Gemm::plan_for(const Key& key, const GemmArgs& g) {
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    Plan& p = plans_[key];
    GPT_CUBLAS(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    set_desc(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, ta, "set TRANSA");
    set_desc(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, tb, "set TRANSB");
    set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, lt_epilogue(g.epilogue), "set EPILOGUE");
    if (has_bias(g.epilogue)) {
        const cudaDataType_t bt = cuda_type(g.bias_type);
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, bt, "set BIAS_DATA_TYPE");
    }
    if (has_aux(g.epilogue)) {
        const int64_t ld = g.ldd;
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, ld, "set EPILOGUE_AUX_LD");
    }
    // Layouts describe the stored matrices (before op()).
    const int a_rows = g.trans_a ? g.k : g.m, a_cols = g.trans_a ? g.m : g.k;
    const int b_rows = g.trans_b ? g.n : g.k, b_cols = g.trans_b ? g.k : g.n;
    GPT_CUBLAS(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, a_rows, a_cols, g.lda));
    GPT_CUBLAS(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, b_rows, b_cols, g.ldb));
    GPT_CUBLAS(cublasLtMatrixLayoutCreate(&p.d, cuda_type(g.d_type), g.m, g.n, g.ldd));

    cublasLtMatmulPreference_t pref;
    GPT_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
    auto set_pref = [&](cublasLtMatmulPreferenceAttributes_t attr, uint64_t v, const char* what) {
        check_cublas(cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof(v)), what);
    };
    auto set_pref32 = [&](cublasLtMatmulPreferenceAttributes_t attr, uint32_t v, const char* what) {
        check_cublas(cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof(v)), what);
    };
    set_pref(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, workspace_bytes_, "set MAX_WORKSPACE_BYTES");
    set_pref32(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment(g.a), "set MIN_ALIGNMENT_A");
    set_pref32(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment(g.b), "set MIN_ALIGNMENT_B");
    set_pref32(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, std::get<13>(key), "set MIN_ALIGNMENT_C");
    set_pref32(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, std::get<13>(key), "set MIN_ALIGNMENT_D");
    cublasLtMatmulHeuristicResult_t results[kCandidates]{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.d, p.d, pref,
                                                             kCandidates, results, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && found == 0)) {
        p.ok = false;   // the caller falls back
        return p;
    }
    check_cublas(st, "cublasLtMatmulAlgoGetHeuristic");
    // Every candidate is deterministic: cuBLASLt's split-K reductions are ordered (INPLACE keeps
    // "counters to guarantee the sequentiality"; the other schemes reduce in a separate pass),
    // and no atomics-based mode is requested. Bit-identical reruns are tested (test_cuda_ops).
    for (int i = 0; i < found; ++i)
        if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= workspace_bytes_)
            p.candidates.push_back(results[i].algo);
    p.ok = !p.candidates.empty();
    return p;
}

cublasStatus_t Gemm::matmul(Plan& p, const cublasLtMatmulAlgo_t& algo, const GemmArgs& g, cudaStream_t s) {
    const float alpha = 1.f, beta = g.beta;
    const void* c = g.c ? g.c : g.d;
    return cublasLtMatmul(handle_, p.desc, &alpha, g.a, p.a, g.b, p.b, &beta, c, p.d, g.d, p.d, &algo,
                          workspace_, workspace_bytes_, s);
}

// The best of 3 rounds of 3 calls, after one warm-up call (the minimum is the least noisy).
float Gemm::time_algo(Plan& p, const cublasLtMatmulAlgo_t& algo, const GemmArgs& g, cudaStream_t s) {
    if (matmul(p, algo, g, s) != CUBLAS_STATUS_SUCCESS) {
        (void)cudaGetLastError();
        return INFINITY;   // a candidate that cannot launch here is simply not chosen
    }
    cudaEvent_t e0, e1;
    GPT_CUDA(cudaEventCreate(&e0));
    GPT_CUDA(cudaEventCreate(&e1));
    float best = INFINITY;
    for (int round = 0; round < 3; ++round) {
        GPT_CUDA(cudaEventRecord(e0, s));
        for (int i = 0; i < 3; ++i) GPT_CUBLAS(matmul(p, algo, g, s));
        GPT_CUDA(cudaEventRecord(e1, s));
        GPT_CUDA(cudaEventSynchronize(e1));
        float ms = 0;
        GPT_CUDA(cudaEventElapsedTime(&ms, e0, e1));
        best = std::min(best, ms);
    }
    GPT_CUDA(cudaEventDestroy(e0));
    GPT_CUDA(cudaEventDestroy(e1));
    return best;
}

// Picks the plan's algorithm: the one recorded for this key (this process or an earlier run),
// else the fastest candidate, timed here on the real operands. The trials write D (and aux / the
// bias gradient), which the real call then overwrites; with beta != 0 D is also read, so it is
// saved first and restored after the trials.
void Gemm::choose(Plan& p, const Key& key, const GemmArgs& g, cudaStream_t s) {
    p.chosen = true;
    p.algo = p.candidates[0];
    if (!gemm_tune::enabled()) return;   // the heuristic's choice, nothing recorded
    const std::string text = key_text(key, workspace_bytes_);
    cublasLtMatmulAlgo_t known{};
    if (gemm_tune::lookup(text, &known)) {
        cublasLtMatmulHeuristicResult_t check{};
        if (cublasLtMatmulAlgoCheck(handle_, p.desc, p.a, p.b, p.d, p.d, &known, &check) ==
                CUBLAS_STATUS_SUCCESS &&
            check.workspaceSize <= workspace_bytes_) {
            p.algo = known;
            return;
        }
    }
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    GPT_CUDA(cudaStreamIsCapturing(s, &capture));
    if (capture != cudaStreamCaptureStatusNone) return;   // no timing inside a graph capture
    if (p.candidates.size() > 1) {
        void* saved = nullptr;
        const size_t d_bytes = (size_t(g.ldd) * (g.n - 1) + g.m) * dtype_bytes(g.d_type);
        if (g.beta != 0.f && (!g.c || g.c == g.d)) {   // D is read: keep it from the trials
            GPT_CUDA(tracked_malloc(&saved, d_bytes));
            GPT_CUDA(cudaMemcpyAsync(saved, g.d, d_bytes, cudaMemcpyDeviceToDevice, s));
        }
        float best = INFINITY;
        for (const auto& algo : p.candidates) {
            const float ms = time_algo(p, algo, g, s);
            if (ms < best) {
                best = ms;
                p.algo = algo;
            }
        }
        if (saved) {
            GPT_CUDA(cudaMemcpyAsync(g.d, saved, d_bytes, cudaMemcpyDeviceToDevice, s));
            GPT_CUDA(cudaStreamSynchronize(s));
            tracked_free(saved);
        }
    }
    gemm_tune::record(text, p.algo);
}

bool Gemm::run(const GemmArgs& g, cudaStream_t s) {
    if (g.epilogue == Epilogue::DGelu && !dgelu_enabled()) return false;
    const Key key{g.trans_a, g.trans_b, g.m, g.n, g.k, g.lda, g.ldb, g.ldd, int(g.d_type),
                  int(g.epilogue), int(g.bias_type),
                  alignment(g.a), alignment(g.b),
                  std::min({alignment(g.d), g.aux ? alignment(g.aux) : 256, g.c ? alignment(g.c) : 256})};
    Plan& p = plan_for(key, g);
    if (!p.ok) return false;
    if (has_bias(g.epilogue))
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias, "set BIAS_POINTER");
    if (has_aux(g.epilogue))
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.aux, "set EPILOGUE_AUX_POINTER");
    if (!p.chosen) choose(p, key, g, s);
    GPT_CUBLAS(matmul(p, p.algo, g, s));
    return true;
}

}  // namespace gpt::cuda
