// Shared plumbing of the variant operations: view resolution with range checks (same rules as
// CudaOps), the deterministic reductions their parameter gradients go through.
#include <string>

#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda::variant {
namespace {

const char* space_name(Space s) {
    static const char* names[] = {"Param", "Grad", "Opt", "Act", "Stat", "Index"};
    return names[static_cast<int>(s)];
}

size_t elem_bytes(Space s) { return s == Space::Act ? 2 : 4; }

void* resolve(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg) {
    GPT_CHECK(t.present(), std::string("cuda-bf16 ") + op + ": argument `" + arg + "` is absent");
    const size_t have = (*e.plan)[t.space];
    if (t.off + need > have)
        fail(std::string("cuda-bf16 ") + op + ": argument `" + arg + "` (" + space_name(t.space) + " offset " +
             std::to_string(t.off) + ", " + std::to_string(need) + " elements) runs past the " +
             space_name(t.space) + " buffer of " + std::to_string(have) +
             " elements: the memory plan and the call disagree");
    return static_cast<char*>(e.buf[int(t.space)]) + t.off * elem_bytes(t.space);
}

void require_space(bool ok, const char* op, const char* arg, const char* what) {
    GPT_CHECK(ok, std::string("cuda-bf16 ") + op + ": argument `" + arg + "` must be in " + what +
                      " (see the method's comment in model/ops.h)");
}

}  // namespace

bf16* act(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg) {
    require_space(t.space == Space::Act || !t.present(), op, arg, "Act space (bf16)");
    return static_cast<bf16*>(resolve(e, t, need, op, arg));
}
bf16* act_opt(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg) {
    return t.present() ? act(e, t, need, op, arg) : nullptr;
}
float* f32(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg) {
    require_space(t.space != Space::Act && t.space != Space::Index, op, arg,
                  "an fp32 space (Param, Grad, Opt or Stat)");
    return static_cast<float*>(resolve(e, t, need, op, arg));
}
float* f32_opt(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg) {
    return t.present() ? f32(e, t, need, op, arg) : nullptr;
}
int32_t* index(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg) {
    require_space(t.space == Space::Index, op, arg, "Index space (int32)");
    return static_cast<int32_t*>(resolve(e, t, need, op, arg));
}
const bf16* operand(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg) {
    if (t.space == Space::Param) {
        resolve(e, t, need, op, arg);   // range check
        return e.param_bf16 + t.off;
    }
    return act(e, t, need, op, arg);
}

void check_positive(const char* op, std::initializer_list<long long> dims) {
    for (long long x : dims)
        GPT_CHECK(x > 0, std::string("cuda-bf16 ") + op + ": every dimension must be positive, got " +
                             std::to_string(x) + "; fix the shapes the model passes");
}

void check_gate_count(int n_gates, int H, const char* op) {
    GPT_CHECK(n_gates == 1 || n_gates == H, std::string("cuda-bf16 ") + op + ": n_gates = " +
                                                std::to_string(n_gates) + " must be 1 (per layer) or H = " +
                                                std::to_string(H) + " (per head)");
}

void rows_sum_add(float* out, const float* x, int M, int N, float* partial, cudaStream_t s) {
    colsum_add(TView{out, DType::F32}, TView{const_cast<float*>(x), DType::F32}, M, N, partial, s);
}


}  // namespace gpt::cuda::variant
