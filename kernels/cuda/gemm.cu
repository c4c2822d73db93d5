// cuBLASLt wrapper: see gemm.cuh.
#include <string>

#include "cuda/device_memory.cuh"
#include "cuda/gemm.cuh"

namespace gpt::cuda {
namespace {

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
        default: return CUBLASLT_EPILOGUE_DEFAULT;
    }
}

template <class T>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& v,
              const char* what) {
    check_cublas(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(v)), what);
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

Gemm::Plan& Gemm::plan_for(const GemmArgs& g) {
    const Key key{g.trans_a, g.trans_b, g.m, g.n, g.k, g.lda, g.ldb, g.ldd, int(g.d_type),
                  int(g.epilogue), int(g.bias_type),
                  alignment(g.a), alignment(g.b),
                  std::min(alignment(g.d), g.aux ? alignment(g.aux) : 256)};
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    Plan& p = plans_[key];
    GPT_CUBLAS(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    set_desc(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, ta, "set TRANSA");
    set_desc(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, tb, "set TRANSB");
    set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, lt_epilogue(g.epilogue), "set EPILOGUE");
    if (g.epilogue != Epilogue::None && g.epilogue != Epilogue::GeluAux) {
        const cudaDataType_t bt = cuda_type(g.bias_type);
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, bt, "set BIAS_DATA_TYPE");
    }
    if (g.epilogue == Epilogue::GeluAux || g.epilogue == Epilogue::GeluAuxBias) {
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
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.d, p.d,
                                                             pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && found == 0)) {
        p.ok = false;   // the caller falls back
        return p;
    }
    check_cublas(st, "cublasLtMatmulAlgoGetHeuristic");
    p.algo = result.algo;
    p.ok = true;
    return p;
}

bool Gemm::run(const GemmArgs& g, cudaStream_t s) {
    Plan& p = plan_for(g);
    if (!p.ok) return false;
    if (g.epilogue != Epilogue::None && g.epilogue != Epilogue::GeluAux)
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias, "set BIAS_POINTER");
    if (g.epilogue == Epilogue::GeluAux || g.epilogue == Epilogue::GeluAuxBias)
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.aux, "set EPILOGUE_AUX_POINTER");
    const float alpha = 1.f, beta = g.beta;
    GPT_CUBLAS(cublasLtMatmul(handle_, p.desc, &alpha, g.a, p.a, g.b, p.b, &beta, g.d, p.d, g.d,
                              p.d, &p.algo, workspace_, workspace_bytes_, s));
    return true;
}

}  // namespace gpt::cuda
