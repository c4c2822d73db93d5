// CpuOps: the memory of the six spaces, checks on every view, and dispatch to the kernels.
#include "cpu/cpu_ops.h"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "cpu/cpu_kernels.h"

extern "C" void openblas_set_num_threads(int num_threads);   // OpenBLAS extension to CBLAS

namespace gpt {
namespace {

const char* space_name(Space s) {
    static const char* names[kNumSpaces] = {"Param", "Grad", "Opt", "Act", "Stat", "Index"};
    return names[static_cast<int>(s)];
}

std::string describe(Ten t) {
    return fmt::format("{} view at offset {} with {} elements", space_name(t.space), t.off, t.n);
}

void check_positive(const char* what, std::initializer_list<long long> dims) {
    for (long long x : dims)
        GPT_CHECK(x > 0, fmt::format("cpu backend: {}: every dimension must be positive, got {}; "
                                     "fix the shapes the model passes",
                                     what, x));
}

}  // namespace

CpuOps::CpuOps(int threads) {
    GPT_CHECK(threads >= 0, fmt::format("cpu backend: threads = {} is negative; use 0 for all "
                                        "cores or a positive count",
                                        threads));
    if (threads > 0) omp_set_num_threads(threads);
    // OpenMP is the only thread pool: matmul.cpp splits each GEMM over the OpenMP threads and
    // every block is a single-threaded BLAS call.
    openblas_set_num_threads(1);
}

std::unique_ptr<Ops> make_cpu_ops(int threads) { return std::make_unique<CpuOps>(threads); }

// --- views ---------------------------------------------------------------------------------------

float* CpuOps::f32_extent(Ten t, size_t extent, const char* what) {
    GPT_CHECK(t.space != Space::Index,
              fmt::format("cpu backend: {}: got an Index (int32) view where a float tensor is "
                          "expected; pass a Param/Grad/Opt/Act/Stat view",
                          what));
    std::vector<float>& mem = spaces_[static_cast<int>(t.space)];
    GPT_CHECK(t.off <= mem.size() && extent <= mem.size() - t.off,
              fmt::format("cpu backend: {}: {} reaches element {} but the {} space holds {}; "
                          "enlarge the MemoryPlan or fix the view",
                          what, describe(t), t.off + extent, space_name(t.space), mem.size()));
    return mem.data() + t.off;
}

float* CpuOps::f32(Ten t, size_t need, const char* what) {
    GPT_CHECK(t.present(), fmt::format("cpu backend: {}: the tensor is absent (n = 0) but this "
                                       "operation needs it; pass a view",
                                       what));
    GPT_CHECK(need <= t.n, fmt::format("cpu backend: {}: {} is too small, the operation needs {} "
                                       "elements; fix the view or the dimensions",
                                       what, describe(t), need));
    return f32_extent(t, need, what);
}

float* CpuOps::f32_optional(Ten t, size_t need, const char* what) {
    return t.present() ? f32(t, need, what) : nullptr;
}

int32_t* CpuOps::i32(Ten t, size_t need, const char* what) {
    GPT_CHECK(t.space == Space::Index,
              fmt::format("cpu backend: {}: expected an Index (int32) view, got {}; token ids "
                          "live in the Index space",
                          what, describe(t)));
    GPT_CHECK(need <= t.n && t.off <= index_.size() && need <= index_.size() - t.off,
              fmt::format("cpu backend: {}: {} needs {} elements but the Index space holds {}; "
                          "fix the view or the MemoryPlan",
                          what, describe(t), need, index_.size()));
    return index_.data() + t.off;
}

// --- memory --------------------------------------------------------------------------------------

void CpuOps::allocate(const MemoryPlan& plan) {
    for (int s = 0; s < kNumSpaces; ++s) {
        if (static_cast<Space>(s) == Space::Index) continue;
        spaces_[s].assign(plan.elems[s], 0.f);
    }
    index_.assign(plan[Space::Index], 0);
    peak_bytes_ = std::max(peak_bytes_, memory_in_use());
}

size_t CpuOps::memory_in_use() const {
    size_t bytes = index_.size() * sizeof(int32_t);
    for (const auto& space : spaces_) bytes += space.size() * sizeof(float);
    return bytes;
}

void CpuOps::upload(Ten dst, const float* src) {
    std::copy_n(src, dst.n, f32(dst, dst.n, "upload"));
}

void CpuOps::upload_index(Ten dst, const int32_t* src) {
    std::copy_n(src, dst.n, i32(dst, dst.n, "upload_index"));
}

void CpuOps::download(Ten src, float* dst) {
    if (src.space == Space::Index) {   // int32 as float, like the CUDA backend (exact below 2^24)
        const int32_t* p = i32(src, src.n, "download");
        std::transform(p, p + src.n, dst, [](int32_t x) { return float(x); });
        return;
    }
    std::copy_n(f32(src, src.n, "download"), src.n, dst);
}

void CpuOps::zero(Ten t) {
    if (t.space == Space::Index)
        std::fill_n(i32(t, t.n, "zero"), t.n, 0);
    else
        std::fill_n(f32(t, t.n, "zero"), t.n, 0.f);
}

void CpuOps::copy(Ten dst, Ten src) {
    GPT_CHECK((dst.space == Space::Index) == (src.space == Space::Index),
              fmt::format("cpu backend: copy: {} and {} are of different kinds (int32 vs float); "
                          "copy between Index views or between float views",
                          describe(dst), describe(src)));
    // memmove: a copy inside one space may overlap.
    if (dst.space == Space::Index)
        std::memmove(i32(dst, src.n, "copy dst"), i32(src, src.n, "copy src"), src.n * 4);
    else
        std::memmove(f32(dst, src.n, "copy dst"), f32(src, src.n, "copy src"), src.n * 4);
}

void CpuOps::scale(Ten t, float s) { cpu::scale(f32(t, t.n, "scale"), s, t.n); }

// --- layers --------------------------------------------------------------------------------------

namespace {

// Every token must index a row of the embedding table (wte.n / E rows).
void check_tokens(const int32_t* tok, size_t n, size_t rows, const char* what) {
    for (size_t i = 0; i < n; ++i)
        GPT_CHECK(tok[i] >= 0 && size_t(tok[i]) < rows,
                  fmt::format("cpu backend: {}: token {} at position {} is outside the embedding "
                              "table of {} rows; check the data's vocabulary",
                              what, tok[i], i, rows));
}

}  // namespace

void CpuOps::embedding_fwd(Ten out, Ten tokens, Ten wte, Ten wpe, int B, int T, int E) {
    check_positive("embedding_fwd", {B, T, E});
    const size_t bt = size_t(B) * T, rows = wte.n / E;
    const int32_t* tok = i32(tokens, bt, "embedding_fwd tokens");
    check_tokens(tok, bt, rows, "embedding_fwd");
    cpu::embedding_fwd(f32(out, bt * E, "embedding_fwd out"), tok, f32(wte, rows * E, "wte"),
                       f32(wpe, size_t(T) * E, "embedding_fwd wpe"), B, T, E);
}

void CpuOps::embedding_bwd(Ten dwte, Ten dwpe, Ten dout, Ten tokens, int B, int T, int E) {
    check_positive("embedding_bwd", {B, T, E});
    const size_t bt = size_t(B) * T, rows = dwte.n / E;
    const int32_t* tok = i32(tokens, bt, "embedding_bwd tokens");
    check_tokens(tok, bt, rows, "embedding_bwd");
    cpu::embedding_bwd(f32(dwte, rows * E, "embedding_bwd dwte"),
                       f32(dwpe, size_t(T) * E, "embedding_bwd dwpe"),
                       f32(dout, bt * E, "embedding_bwd dout"), tok, B, T, E);
}

void CpuOps::layernorm_fwd(Ten out, Ten mean, Ten rstd, Ten in, Ten w, Ten b, int N, int C) {
    check_positive("layernorm_fwd", {N, C});
    const size_t nc = size_t(N) * C;
    cpu::layernorm_fwd(f32(out, nc, "layernorm_fwd out"), f32(mean, N, "layernorm_fwd mean"),
                       f32(rstd, N, "layernorm_fwd rstd"), f32(in, nc, "layernorm_fwd in"),
                       f32(w, C, "layernorm_fwd w"), f32_optional(b, C, "layernorm_fwd b"), N, C);
}

void CpuOps::residual_layernorm_fwd(Ten out_sum, Ten out, Ten mean, Ten rstd, Ten a, Ten b, Ten w, Ten bias,
                                    int N, int C, const ResidualDropout& drop) {
    check_positive("residual_layernorm_fwd", {N, C});
    const size_t nc = size_t(N) * C;
    if (drop.on()) dropout(b, nc, drop.p, drop.seed);   // b is the branch's scratch output (ops.h)
    cpu::residual_layernorm_fwd(
        f32(out_sum, nc, "residual_layernorm_fwd out_sum"), f32(out, nc, "residual_layernorm_fwd out"),
        f32(mean, N, "residual_layernorm_fwd mean"), f32(rstd, N, "residual_layernorm_fwd rstd"),
        f32(a, nc, "residual_layernorm_fwd a"), f32(b, nc, "residual_layernorm_fwd b"),
        f32(w, C, "residual_layernorm_fwd w"), f32_optional(bias, C, "residual_layernorm_fwd bias"), N, C);
}

void CpuOps::layernorm_bwd(Ten din, Ten dw, Ten db, Ten dout, Ten in, Ten w, Ten mean, Ten rstd,
                           int N, int C, Ten dsum, Ten branch, const ResidualDropout& drop) {
    check_positive("layernorm_bwd", {N, C});
    const size_t nc = size_t(N) * C;
    const bool to_branch = branch.present();
    GPT_CHECK(!to_branch || din.present(), "cpu backend: layernorm_bwd: branch is din through dropout, so din is required");
    float* const sum = f32_optional(dsum, C, "layernorm_bwd dsum");
    cpu::layernorm_bwd(f32(din, nc, "layernorm_bwd din"), f32(dw, C, "layernorm_bwd dw"),
                       f32_optional(db, C, "layernorm_bwd db"), f32(dout, nc, "layernorm_bwd dout"),
                       f32(in, nc, "layernorm_bwd in"), f32(w, C, "layernorm_bwd w"),
                       f32(mean, N, "layernorm_bwd mean"), f32(rstd, N, "layernorm_bwd rstd"), N,
                       C, to_branch ? nullptr : sum);
    if (!to_branch) return;
    // The branch's gradient: copy + dropout (ops.h), then its column sums into dsum.
    copy(branch.sub(0, nc), din.sub(0, nc));
    if (drop.on()) dropout(branch, nc, drop.p, drop.seed);
    if (!sum) return;
    const float* g = f32(branch, nc, "layernorm_bwd branch");
    for (int r = 0; r < N; ++r)   // row order, as cpu::layernorm_bwd adds din's columns
        for (int c = 0; c < C; ++c) sum[c] += g[size_t(r) * C + c];
}

void CpuOps::matmul_fwd(Ten out, Ten in, Ten w, Ten bias, int M, int K, int N, Ten gelu_out) {
    check_positive("matmul_fwd", {M, K, N});
    const size_t mn = size_t(M) * N;
    cpu::matmul_fwd(f32(out, mn, "matmul_fwd out"), f32(in, size_t(M) * K, "matmul_fwd in"),
                    f32(w, size_t(N) * K, "matmul_fwd w"), f32_optional(bias, N, "matmul_fwd bias"),
                    M, K, N, f32_optional(gelu_out, mn, "matmul_fwd gelu_out"));
}

void CpuOps::matmul_bwd(Ten din, Ten dw, Ten dbias, Ten dout, Ten in, Ten w, int M, int K, int N) {
    check_positive("matmul_bwd", {M, K, N});
    cpu::matmul_bwd(
        f32_optional(din, size_t(M) * K, "matmul_bwd din"),
        f32_optional(dw, size_t(N) * K, "matmul_bwd dw"),
        f32_optional(dbias, N, "matmul_bwd dbias"), f32(dout, size_t(M) * N, "matmul_bwd dout"),
        f32(in, size_t(M) * K, "matmul_bwd in"), f32(w, size_t(N) * K, "matmul_bwd w"), M, K, N);
}

void CpuOps::matmul_bwd_add(Ten din, Ten dw, Ten dbias, Ten dout, Ten in, Ten w, int M, int K, int N) {
    check_positive("matmul_bwd_add", {M, K, N});
    cpu::matmul_bwd(f32(din, size_t(M) * K, "matmul_bwd_add din"), f32_optional(dw, size_t(N) * K, "matmul_bwd_add dw"),
                    f32_optional(dbias, N, "matmul_bwd_add dbias"), f32(dout, size_t(M) * N, "matmul_bwd_add dout"),
                    f32(in, size_t(M) * K, "matmul_bwd_add in"), f32(w, size_t(N) * K, "matmul_bwd_add w"), M, K,
                    N, /*din_add=*/true);
}

void CpuOps::matmul_fwd_add(Ten out, Ten in, Ten w, Ten residual, int M, int K, int N) {
    check_positive("matmul_fwd_add", {M, K, N});
    const size_t mn = size_t(M) * N;
    float* o = f32(out, mn, "matmul_fwd_add out");
    const float* r = f32(residual, mn, "matmul_fwd_add residual");
    GPT_CHECK(o == r || o + mn <= r || r + mn <= o,
              "cpu backend: matmul_fwd_add: out must be residual itself or not overlap it");
    if (o != r) std::copy(r, r + mn, o);
    cpu::matmul_fwd_add(o, f32(in, size_t(M) * K, "matmul_fwd_add in"), f32(w, size_t(N) * K, "matmul_fwd_add w"),
                        M, K, N);
}

void CpuOps::gelu_fwd(Ten out, Ten in, size_t n) {
    cpu::gelu_fwd(f32(out, n, "gelu_fwd out"), f32(in, n, "gelu_fwd in"), n);
}

void CpuOps::gelu_bwd(Ten din, Ten in, Ten dout, size_t n) {
    cpu::gelu_bwd(f32(din, n, "gelu_bwd din"), f32(in, n, "gelu_bwd in"),
                  f32(dout, n, "gelu_bwd dout"), n);
}

void CpuOps::add(Ten out, Ten a, Ten b, size_t n) {
    cpu::add(f32(out, n, "add out"), f32(a, n, "add a"), f32(b, n, "add b"), n);
}

void CpuOps::add_inplace(Ten acc, Ten x, size_t n) {
    cpu::add_inplace(f32(acc, n, "add_inplace acc"), f32(x, n, "add_inplace x"), n);
}

void CpuOps::dropout(Ten x, size_t n, float p, uint64_t seed) {
    GPT_CHECK(p >= 0.f && p < 1.f, fmt::format("cpu backend: dropout: p = {} must lie in [0, 1); "
                                               "fix model.dropout",
                                               p));
    cpu::dropout(f32(x, n, "dropout x"), n, p, seed);
}

namespace {

void check_attention(const AttnDims& d, const char* what) {
    check_positive(what, {d.B, d.T, d.Hq, d.Hkv, d.Dqk, d.Dv});
    GPT_CHECK(d.Hq % d.Hkv == 0,
              fmt::format("cpu backend: {}: Hkv = {} does not divide Hq = {}; grouped heads need "
                          "a whole number of query heads per key/value head",
                          what, d.Hkv, d.Hq));
    GPT_CHECK(
        d.q_stride >= d.Hq * d.Dqk && d.k_stride >= d.Hkv * d.Dqk && d.v_stride >= d.Hkv * d.Dv,
        fmt::format("cpu backend: {}: token strides q {} k {} v {} are narrower than the "
                    "heads they hold (Hq*Dqk = {}, Hkv*Dqk = {}, Hkv*Dv = {})",
                    what, d.q_stride, d.k_stride, d.v_stride, d.Hq * d.Dqk, d.Hkv * d.Dqk,
                    d.Hkv * d.Dv));
    GPT_CHECK(d.band >= 0 && (d.band == 0 || (d.band_split >= 0 && d.band_split <= d.Dqk)),
              fmt::format("cpu backend: {}: band {} / band_split {} invalid; band >= 0 and "
                          "0 <= band_split <= Dqk = {}",
                          what, d.band, d.band_split, d.Dqk));
    GPT_CHECK(d.dropout >= 0.f && d.dropout < 1.f,
              fmt::format("cpu backend: {}: dropout {} must lie in [0, 1)", what, d.dropout));
}

// Elements from a strided view's offset to the end of its last token's heads.
size_t extent(const AttnDims& d, int stride, int width) {
    return (size_t(d.B) * d.T - 1) * stride + width;
}

}  // namespace

void CpuOps::attention_fwd(Ten out, Ten lse, Ten q, Ten k, Ten v, const AttnDims& d) {
    check_attention(d, "attention_fwd");
    const size_t rows = size_t(d.B) * d.T;
    cpu::attention_fwd(f32(out, rows * d.Hq * d.Dv, "attention_fwd out"),
                       f32(lse, rows * d.Hq, "attention_fwd lse"),
                       f32_extent(q, extent(d, d.q_stride, d.Hq * d.Dqk), "attention_fwd q"),
                       f32_extent(k, extent(d, d.k_stride, d.Hkv * d.Dqk), "attention_fwd k"),
                       f32_extent(v, extent(d, d.v_stride, d.Hkv * d.Dv), "attention_fwd v"), d);
}

void CpuOps::attention_bwd(Ten dq, Ten dk, Ten dv, Ten dout, Ten out, Ten lse, Ten q, Ten k, Ten v,
                           const AttnDims& d, Ten delta_shift) {
    // `out` is not needed: D_i = sum_j P_ij dP_ij is formed from the recomputed row directly.
    check_attention(d, "attention_bwd");
    const size_t rows = size_t(d.B) * d.T;
    const size_t q_ext = extent(d, d.q_stride, d.Hq * d.Dqk);
    const size_t k_ext = extent(d, d.k_stride, d.Hkv * d.Dqk);
    const size_t v_ext = extent(d, d.v_stride, d.Hkv * d.Dv);
    cpu::attention_bwd(
        f32_extent(dq, q_ext, "attention_bwd dq"), f32_extent(dk, k_ext, "attention_bwd dk"),
        f32_extent(dv, v_ext, "attention_bwd dv"),
        f32(dout, rows * d.Hq * d.Dv, "attention_bwd dout"),
        f32(lse, rows * d.Hq, "attention_bwd lse"), f32_extent(q, q_ext, "attention_bwd q"),
        f32_extent(k, k_ext, "attention_bwd k"), f32_extent(v, v_ext, "attention_bwd v"), d,
        f32_optional(delta_shift, rows * d.Hq, "attention_bwd delta_shift"));
}

void CpuOps::classifier(Ten losses, Ten logits, Ten targets, int N, int V, int Vp, float dloss) {
    check_positive("classifier", {N, V, Vp});
    GPT_CHECK(V <= Vp, fmt::format("cpu backend: classifier: V = {} real columns exceed the padded "
                                   "row width Vp = {}; Vp must be >= V",
                                   V, Vp));
    const int32_t* tgt = i32(targets, N, "classifier targets");
    for (int i = 0; i < N; ++i)
        GPT_CHECK(tgt[i] >= 0 && tgt[i] < V,
                  fmt::format("cpu backend: classifier: target {} of row {} is outside the "
                              "vocabulary [0, {}); check the data's token ids",
                              tgt[i], i, V));
    cpu::classifier(f32(losses, N, "classifier losses"),
                    f32(logits, size_t(N) * Vp, "classifier logits"), tgt, N, V, Vp, dloss);
}

// --- optimisation --------------------------------------------------------------------------------

double CpuOps::sum_squares(Ten t) { return cpu::sum_squares(f32(t, t.n, "sum_squares"), t.n); }

void CpuOps::adamw(const std::vector<AdamWTensor>& ts, const AdamWHyper& h) {
    GPT_CHECK(h.step >= 1, fmt::format("cpu backend: adamw: step {} must be >= 1 (1-based, for "
                                       "bias correction)",
                                       h.step));
    for (const AdamWTensor& t : ts) {
        const size_t n = t.param.n;
        GPT_CHECK(t.param.space == Space::Param && t.m.space == Space::Opt &&
                      t.v.space == Space::Opt && (!h.amsgrad || t.vmax.space == Space::Opt),
                  fmt::format("cpu backend: adamw: parameter {} must be a Param view and m, v, "
                              "vmax Opt views",
                              describe(t.param)));
        GPT_CHECK(!h.amsgrad || t.vmax.present(),
                  fmt::format("cpu backend: adamw: AMSGrad is on but parameter {} has no vmax "
                              "state; plan a vmax Opt tensor for it",
                              describe(t.param)));
        cpu::adamw_update(f32(t.param, n, "adamw param"),
                          f32(t.param.as(Space::Grad), n, "adamw grad"), f32(t.m, n, "adamw m"),
                          f32(t.v, n, "adamw v"),
                          h.amsgrad ? f32(t.vmax, n, "adamw vmax") : nullptr, n, t.decay, h);
    }
}

void CpuOps::mul_inplace(Ten x, Ten mask, size_t n) {
    cpu::mul_inplace(f32(x, n, "mul_inplace x"), f32(mask, n, "mul_inplace mask"), n);
}

}  // namespace gpt
