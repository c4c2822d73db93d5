// cuDNN fused attention through the backend graph API (see attention_cudnn.cuh for the graphs).
// Raw backend descriptors instead of cudnn-frontend (a header library not installed here): every
// tensor is a descriptor with a unique id, every operation a descriptor wired to its tensors; the
// operation graph goes to cuDNN's heuristics, the first engine config that finalizes becomes the
// execution plan, and a variant pack maps the ids to device pointers at each call. Plans are
// cached per shape (building one takes milliseconds; the runtime-compiled engines much longer).
#include "cuda/attention_cudnn.cuh"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <tuple>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/error.h"

#ifdef GPT_HAVE_CUDNN
#include <cudnn.h>
#endif

namespace gpt::cuda {

namespace {

// `auto` takes cuDNN (with its deterministic backward: the project promises bit-identical reruns)
// for the shapes it covers. Measured on an H100, cuDNN 9.14, B=8 H=12 T=1024 (docs/performance.md,
// "cuDNN SDPA"): D=64 fwd+bwd 0.249 ms vs ours 0.403 ms; D=128 0.327 vs 0.802 ms; the GPT-2 124M
// training step (B=32, T=1024) 62.8 vs 70.2 ms.
constexpr bool kAutoPrefersCudnn = true;

}  // namespace

bool cudnn_attention_supports(const AttnDims& d, std::string* why) {
    auto no = [&](const std::string& reason) {
        if (why) *why = reason;
        return false;
    };
    if (!cudnn_compiled_in()) return no("this build has no cuDNN (headers/library not found at configure time)");
    if (d.dropout < 0.f || d.dropout >= 1.f) return no("attention dropout outside [0, 1)");
    if (d.band > 0) return no("the reciprocal band (RA) is ours only");
    if (d.Hq != d.Hkv) return no("grouped/multi-query heads (Hq != Hkv)");
    // (128, 64) is the exact RA fold without a band (q̃, k̃ of width 2D, values of width D); (64, 128)
    // RA-CT's entropy on the values [v, k] (model/attention_base.cpp).
    const bool dims_ok = (d.Dqk == 64 || d.Dqk == 128) && (d.Dv == 64 || d.Dv == 128);
    if (!dims_ok) return no("head dims other than Dqk, Dv in {64, 128}");
    if (d.T % 128 != 0) return no("T not a multiple of 128 (cuDNN <= 9.15 needs a padding mask there)");
    if (d.q_stride % 8 || d.k_stride % 8 || d.v_stride % 8) return no("row strides not multiples of 8 elements");
    if (d.B <= 0 || d.T <= 0 || d.Hq <= 0) return no("empty shape");
    return true;
}

bool cudnn_attention_wanted(const AttnDims& d) {
    switch (d.impl) {
        case AttentionImpl::ours: return false;
        case AttentionImpl::cudnn:
        case AttentionImpl::cudnn_nondeterministic: return cudnn_attention_supports(d);
        case AttentionImpl::auto_select: return kAutoPrefersCudnn && cudnn_attention_supports(d);
    }
    return false;
}

#ifndef GPT_HAVE_CUDNN
// ---- built without cuDNN: nothing is supported, every entry point says so ----------------------
bool cudnn_compiled_in() { return false; }
int cudnn_runtime_version() { return 0; }
struct CudnnAttention::Impl {
    std::string error = "this build has no cuDNN";
};
CudnnAttention::CudnnAttention() : impl_(std::make_unique<Impl>()) {}
CudnnAttention::~CudnnAttention() = default;
bool CudnnAttention::prepare_fwd(const AttnDims&, const CudnnView&) { return false; }
bool CudnnAttention::prepare_bwd(const AttnDims&, bool, const CudnnView&) { return false; }
const std::string& CudnnAttention::last_error() const { return impl_->error; }
size_t CudnnAttention::fwd_workspace_bytes(const AttnDims&, const CudnnView&) { fail(impl_->error); }
size_t CudnnAttention::bwd_workspace_bytes(const AttnDims&, bool, const CudnnView&) { fail(impl_->error); }
bool CudnnAttention::bwd_engine_nondeterministic(const AttnDims&, bool) { fail(impl_->error); }
std::string CudnnAttention::describe(const AttnDims&, bool, bool) { return impl_->error; }
void CudnnAttention::fwd(__nv_bfloat16*, float*, const __nv_bfloat16*, const __nv_bfloat16*,
                         const __nv_bfloat16*, const AttnDims&, void*, cudaStream_t, const CudnnView&) {
    fail(impl_->error);
}
void CudnnAttention::bwd(__nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, const __nv_bfloat16*,
                         const __nv_bfloat16*, const float*, const __nv_bfloat16*, const __nv_bfloat16*,
                         const __nv_bfloat16*, const AttnDims&, bool, void*, cudaStream_t, const CudnnView&) {
    fail(impl_->error);
}

#else
// ---- the cuDNN backend graph API ---------------------------------------------------------------
bool cudnn_compiled_in() { return true; }
int cudnn_runtime_version() { return int(cudnnGetVersion()); }

namespace {

constexpr size_t align256(size_t n) { return (n + 255) / 256 * 256; }

// A status error while building: caught by prepare_*, which then reports and falls back.
struct Failure {
    std::string what;
};

void check(cudnnStatus_t s, const std::string& what) {
    if (s == CUDNN_STATUS_SUCCESS) return;
    char detail[1024] = {0};
    cudnnGetLastErrorString(detail, sizeof(detail));
    throw Failure{what + ": " + cudnnGetErrorString(s) + " (" + std::to_string(int(s)) + ")" +
                  (detail[0] ? std::string(" [") + detail + "]" : std::string())};
}

// The handle attributes are marked deprecated in cuDNN 9.19's headers but cuDNN 9.14 (the GPU
// machine's) still reads them; named by value to keep the build free of deprecation warnings.
constexpr auto kGraphHandle = static_cast<cudnnBackendAttributeName_t>(800);   // OPERATIONGRAPH_HANDLE
constexpr auto kPlanHandle = static_cast<cudnnBackendAttributeName_t>(400);    // EXECUTION_PLAN_HANDLE

// One owned backend descriptor.
class Desc {
public:
    explicit Desc(cudnnBackendDescriptorType_t type) {
        check(cudnnBackendCreateDescriptor(type, &d_), "cudnnBackendCreateDescriptor(" + std::to_string(int(type)) + ")");
    }
    ~Desc() {
        if (d_) cudnnBackendDestroyDescriptor(d_);
    }
    Desc(const Desc&) = delete;
    Desc& operator=(const Desc&) = delete;
    cudnnBackendDescriptor_t get() const { return d_; }
    void set(cudnnBackendAttributeName_t a, cudnnBackendAttributeType_t t, int64_t n, const void* p,
             const char* what) {
        check(cudnnBackendSetAttribute(d_, a, t, n, p), std::string("set ") + what);
    }
    void set_desc(cudnnBackendAttributeName_t a, const Desc& x, const char* what) {
        cudnnBackendDescriptor_t raw = x.get();
        set(a, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw, what);
    }
    void finalize(const std::string& what) { check(cudnnBackendFinalize(d_), "finalize " + what); }

private:
    cudnnBackendDescriptor_t d_ = nullptr;
};
using DescPtr = std::shared_ptr<Desc>;

using Dims = std::array<int64_t, 4>;

Dims packed(const Dims& dims) {   // row-major strides of a dense tensor
    return {dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1};
}

// Builds one operation graph: tensors (non-virtual ones carry the uids of the variant pack) and
// operations, kept alive as long as the plan that uses them.
class Graph {
public:
    explicit Graph(cudnnHandle_t h) : handle_(h) {}

    DescPtr tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides,
                   bool is_virtual = false, bool by_value = false) {
        auto t = std::make_shared<Desc>(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
        const int64_t align = 16;
        t->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor data type");
        t->set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), "tensor dims");
        t->set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), "tensor strides");
        t->set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor uid");
        t->set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, "tensor alignment");
        if (is_virtual) t->set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, "tensor virtual");
        if (by_value) t->set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value, "tensor by value");
        t->finalize("tensor uid " + std::to_string(uid));
        keep_.push_back(t);
        return t;
    }
    // An intermediate that never reaches memory (fp32 unless said otherwise).
    DescPtr virt(const Dims& dims, cudnnDataType_t type = CUDNN_DATA_FLOAT) {
        return tensor(next_virtual_++, type, dims, packed(dims), true);
    }
    DescPtr virt_strided(const Dims& dims, const Dims& strides, cudnnDataType_t type) {
        return tensor(next_virtual_++, type, dims, strides, true);
    }
    // A scalar passed by value at execution time (host pointer in the variant pack).
    DescPtr scalar(int64_t uid) { return tensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true); }

    // y = mode(x, b, t); b and t may be null. axis >= 0 for GEN_INDEX.
    void pointwise(cudnnPointwiseMode_t mode, const DescPtr& x, const DescPtr& b, const DescPtr& t,
                   const DescPtr& y, cudnnDataType_t prec = CUDNN_DATA_FLOAT, int64_t axis = -1) {
        auto pw = std::make_shared<Desc>(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
        pw->set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
        pw->set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "pointwise precision");
        if (axis >= 0) pw->set(CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise axis");
        pw->finalize("pointwise mode " + std::to_string(int(mode)));
        auto op = std::make_shared<Desc>(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
        op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, *pw, "pointwise op descriptor");
        op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, *x, "pointwise x");
        if (b) op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, *b, "pointwise b");
        if (t) op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, *t, "pointwise t");
        op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, *y, "pointwise y");
        op->finalize("pointwise operation mode " + std::to_string(int(mode)));
        keep_.push_back(pw);
        ops_.push_back(op);
    }
    void matmul(const DescPtr& a, const DescPtr& b, const DescPtr& c) {
        auto mm = std::make_shared<Desc>(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
        const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
        mm->set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "matmul compute type");
        mm->finalize("matmul descriptor");
        auto op = std::make_shared<Desc>(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
        op->set_desc(CUDNN_ATTR_OPERATION_MATMUL_ADESC, *a, "matmul a");
        op->set_desc(CUDNN_ATTR_OPERATION_MATMUL_BDESC, *b, "matmul b");
        op->set_desc(CUDNN_ATTR_OPERATION_MATMUL_CDESC, *c, "matmul c");
        op->set_desc(CUDNN_ATTR_OPERATION_MATMUL_DESC, *mm, "matmul descriptor");
        op->finalize("matmul operation");
        keep_.push_back(mm);
        ops_.push_back(op);
    }
    // y = reduce(x) over the dims where y has extent 1.
    void reduction(cudnnReduceTensorOp_t mode, const DescPtr& x, const DescPtr& y) {
        auto red = std::make_shared<Desc>(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
        const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
        red->set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode, "reduction mode");
        red->set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "reduction compute type");
        red->finalize("reduction descriptor");
        auto op = std::make_shared<Desc>(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
        op->set_desc(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, *x, "reduction x");
        op->set_desc(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, *y, "reduction y");
        op->set_desc(CUDNN_ATTR_OPERATION_REDUCTION_DESC, *red, "reduction descriptor");
        op->finalize("reduction operation");
        keep_.push_back(red);
        ops_.push_back(op);
    }
    // y = Bernoulli(keep) draws of cuDNN's Philox generator, from device int64 seed and offset
    // (cuDNN's dropout: the same seed, offset and shape give the same mask in forward and backward).
    void rng_bernoulli(double keep, const DescPtr& seed, const DescPtr& offset, const DescPtr& y) {
        auto rng = std::make_shared<Desc>(CUDNN_BACKEND_RNG_DESCRIPTOR);
        const cudnnRngDistribution_t dist = CUDNN_RNG_DISTRIBUTION_BERNOULLI;
        rng->set(CUDNN_ATTR_RNG_DISTRIBUTION, CUDNN_TYPE_RNG_DISTRIBUTION, 1, &dist, "rng distribution");
        rng->set(CUDNN_ATTR_RNG_BERNOULLI_DIST_PROBABILITY, CUDNN_TYPE_DOUBLE, 1, &keep, "rng keep probability");
        rng->finalize("rng descriptor");
        auto op = std::make_shared<Desc>(CUDNN_BACKEND_OPERATION_RNG_DESCRIPTOR);
        op->set_desc(CUDNN_ATTR_OPERATION_RNG_YDESC, *y, "rng y");
        op->set_desc(CUDNN_ATTR_OPERATION_RNG_SEED, *seed, "rng seed");
        op->set_desc(CUDNN_ATTR_OPERATION_RNG_OFFSET_DESC, *offset, "rng offset");
        op->set_desc(CUDNN_ATTR_OPERATION_RNG_DESC, *rng, "rng descriptor");
        op->finalize("rng operation");
        keep_.push_back(rng);
        ops_.push_back(op);
    }
    // y = x viewed with other dims/strides (the transposes of P, dS and K).
    void reshape(const DescPtr& x, const DescPtr& y) {
        auto op = std::make_shared<Desc>(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
        op->set_desc(CUDNN_ATTR_OPERATION_RESHAPE_XDESC, *x, "reshape x");
        op->set_desc(CUDNN_ATTR_OPERATION_RESHAPE_YDESC, *y, "reshape y");
        op->finalize("reshape operation");
        ops_.push_back(op);
    }
    // The causal mask on scores s [B,H,T,T]: keep where row >= col, else the lowest float.
    DescPtr causal_mask(const DescPtr& s, const Dims& dims, const DescPtr& lowest) {
        auto row = virt(dims, CUDNN_DATA_INT32), col = virt(dims, CUDNN_DATA_INT32);
        pointwise(CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr, row, CUDNN_DATA_INT32, 2);
        pointwise(CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr, col, CUDNN_DATA_INT32, 3);
        auto keep = virt(dims, CUDNN_DATA_BOOLEAN);
        pointwise(CUDNN_POINTWISE_CMP_GE, row, col, nullptr, keep, CUDNN_DATA_BOOLEAN);
        auto out = virt(dims);
        pointwise(CUDNN_POINTWISE_BINARY_SELECT, s, lowest, keep, out);
        return out;
    }

    // Finalize the operation graph, ask the heuristics, and keep the first config that finalizes.
    // Fills plan, workspace, engine description and the nondeterministic note.
    void build_plan(DescPtr& plan, int64_t& workspace, std::string& engine, bool& nondeterministic,
                    int skip = 0) {
        graph_ = std::make_shared<Desc>(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
        std::vector<cudnnBackendDescriptor_t> raw;
        for (auto& op : ops_) raw.push_back(op->get());
        graph_->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(raw.size()), raw.data(),
                    "graph operations");
        graph_->set(kGraphHandle, CUDNN_TYPE_HANDLE, 1, &handle_, "graph handle");
        graph_->finalize("operation graph (" + std::to_string(raw.size()) + " operations)");

        std::string tried;
        for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
            Desc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
            heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, *graph_, "heuristics graph");
            heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
            try {
                heur.finalize("heuristics mode " + std::to_string(int(mode)));
            } catch (const Failure& f) {
                tried += " " + f.what + ";";
                continue;
            }
            int64_t count = 0;
            check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                           &count, nullptr),
                  "heuristics result count");
            tried += " heuristics mode " + std::to_string(int(mode)) + ": " + std::to_string(count) + " configs;";
            if (count == 0) continue;
            std::vector<DescPtr> cfgs;
            std::vector<cudnnBackendDescriptor_t> cfg_raw;
            for (int64_t i = 0; i < count; ++i) {
                cfgs.push_back(std::make_shared<Desc>(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
                cfg_raw.push_back(cfgs.back()->get());
            }
            int64_t got = 0;
            check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                           count, &got, cfg_raw.data()),
                  "heuristics results");
            for (int64_t i = 0; i < got; ++i) {
                if (mode == CUDNN_HEUR_MODE_A && i < skip) continue;
                try {
                    auto p = std::make_shared<Desc>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
                    p->set(kPlanHandle, CUDNN_TYPE_HANDLE, 1, &handle_, "plan handle");
                    p->set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, *cfgs[i], "plan engine config");
                    p->finalize("execution plan from config " + std::to_string(i));
                    int64_t ws = 0, n = 0;
                    check(cudnnBackendGetAttribute(p->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64,
                                                   1, &n, &ws),
                          "plan workspace size");
                    plan = p;
                    workspace = ws;
                    keep_.push_back(cfgs[i]);
                    describe_engine(*cfgs[i], engine, nondeterministic);
                    engine += " (heuristics mode " + std::to_string(int(mode)) + ", config " + std::to_string(i) +
                              " of " + std::to_string(got) + ")";
                    return;
                } catch (const Failure& f) {
                    tried += " config " + std::to_string(i) + ": " + f.what + ";";
                }
            }
        }
        throw Failure{"no engine config finalized:" + tried};
    }

private:
    // "engine <global index>" and whether its numerical notes say nondeterministic.
    static void describe_engine(const Desc& cfg, std::string& out, bool& nondeterministic) {
        out = "engine ?";
        nondeterministic = false;
        try {
            Desc eng(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
            cudnnBackendDescriptor_t raw = eng.get();
            int64_t n = 0;
            check(cudnnBackendGetAttribute(cfg.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                                           &raw),
                  "engine of config");
            int64_t index = -1;
            check(cudnnBackendGetAttribute(raw, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &index),
                  "engine index");
            out = "engine " + std::to_string(index);
            cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
            int64_t nn = 0;
            check(cudnnBackendGetAttribute(raw, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                           CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &nn, notes),
                  "engine numerical notes");
            out += " notes [";
            for (int64_t i = 0; i < nn; ++i) {
                out += (i ? "," : "") + std::to_string(int(notes[i]));
                if (notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) nondeterministic = true;
            }
            out += "]";
        } catch (const Failure& f) {
            out += " (" + f.what + ")";
        }
    }

    cudnnHandle_t handle_;
    std::vector<DescPtr> keep_, ops_;
    DescPtr graph_;
    int64_t next_virtual_ = 1000;

public:
    // The graph's descriptors outlive it inside the plan entry.
    std::vector<DescPtr> release() {
        std::vector<DescPtr> all = keep_;
        all.insert(all.end(), ops_.begin(), ops_.end());
        if (graph_) all.push_back(graph_);
        return all;
    }
};

// GPT_CUDNN_FWD_CONFIG / GPT_CUDNN_BWD_CONFIG = n: start from the n-th config of heuristics mode A
// instead of the first (for measuring the alternatives; docs/performance.md). 0 when unset.
int config_skip(const char* env) {
    const char* e = std::getenv(env);
    return e ? std::max(0, std::atoi(e)) : 0;
}

// Variant-pack uids.
enum Uid : int64_t {
    kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kScale, kLowest, kKeepProb, kSoftmaxSum, kDQAccum,
    kSeed, kOffset, kDropScale
};

// With attention dropout, the Philox seed and offset live in the first bytes of the workspace
// (cuDNN reads them from device memory; a one-thread kernel writes them per call, so a captured
// CUDA graph carries each call's seed as a kernel argument).
constexpr size_t kRngStateBytes = 256;

__global__ void write_rng_state_kernel(int64_t* state, int64_t seed, int64_t offset) {
    state[0] = seed;
    state[1] = offset;
}

struct Plan {
    bool ok = false;
    std::string error;
    std::vector<DescPtr> keep;
    DescPtr plan;
    int64_t plan_workspace = 0;
    size_t softmax_sum_bytes = 0, dq_accum_bytes = 0;   // backward: cuDNN's own buffers, in our workspace
    size_t rng_state_bytes = 0;                         // seed and offset (with dropout), at its start
    std::string engine;
    bool nondeterministic = false;
    size_t workspace_bytes() const {
        return rng_state_bytes + align256(softmax_sum_bytes) + align256(dq_accum_bytes) + align256(plan_workspace);
    }
};

// Layout of our tensors as cuDNN's [B, H, T, D] views (of buffers with view.T_buf rows per batch
// and q/k heads view.head_stride apart, when the call is a window of larger tensors).
struct Layout {
    int64_t B, H, T, Dk, Dv;  // Dk: q/k head width, Dv: v/out head width
    Dims q, k, v, o;          // strides of q, k, v (token rows with strides) and out [B,T,H,Dv]
    Dims kt, vt;              // strides of K^T [B, H, Dk, T], V^T [B, H, Dv, T]
    Dims stats;               // strides of lse [B, H, T, 1]
    Dims dims_qk() const { return {B, H, T, Dk}; }
    Dims dims_v() const { return {B, H, T, Dv}; }
    Dims dims_kt() const { return {B, H, Dk, T}; }
    Dims dims_vt() const { return {B, H, Dv, T}; }
    Dims dims_s() const { return {B, H, T, T}; }
    Dims dims_row() const { return {B, H, T, 1}; }
    Layout(const AttnDims& d, const CudnnView& view) : B(d.B), H(d.Hq), T(d.T), Dk(d.Dqk), Dv(d.Dv) {
        const int64_t Tb = view.T_buf > 0 ? view.T_buf : T, hs = view.head_stride > 0 ? view.head_stride : Dk;
        q = {Tb * d.q_stride, hs, d.q_stride, 1};
        k = {Tb * d.k_stride, hs, d.k_stride, 1};
        v = {Tb * d.v_stride, Dv, d.v_stride, 1};
        o = {Tb * H * Dv, Dv, H * Dv, 1};
        stats = {H * Tb, Tb, 1, 1};
        kt = {k[0], k[1], 1, k[2]};
        vt = {v[0], v[1], 1, v[2]};
    }
};

// cuDNN's dropout mask [B, H, T, T] (1 = kept) from the seed and offset in the workspace.
DescPtr dropout_mask(Graph& g, const Layout& L, float dropout, Plan& plan) {
    auto seed = g.tensor(kSeed, CUDNN_DATA_INT64, {1, 1, 1, 1}, {1, 1, 1, 1});
    auto offset = g.tensor(kOffset, CUDNN_DATA_INT64, {1, 1, 1, 1}, {1, 1, 1, 1});
    auto mask = g.virt(L.dims_s());
    g.rng_bernoulli(1.0 - double(dropout), seed, offset, mask);
    plan.rng_state_bytes = kRngStateBytes;
    return mask;
}

void build_forward(Graph& g, const AttnDims& d, const CudnnView& view, Plan& plan) {
    const Layout L(d, view);
    auto Q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, L.dims_qk(), L.q);
    auto KT = g.tensor(kK, CUDNN_DATA_BFLOAT16, L.dims_kt(), L.kt);
    auto V = g.tensor(kV, CUDNN_DATA_BFLOAT16, L.dims_v(), L.v);
    auto O = g.tensor(kO, CUDNN_DATA_BFLOAT16, L.dims_v(), L.o);
    auto stats = g.tensor(kStats, CUDNN_DATA_FLOAT, L.dims_row(), L.stats);
    auto scale = g.scalar(kScale), lowest = g.scalar(kLowest);

    auto s = g.virt(L.dims_s());
    g.matmul(Q, KT, s);
    auto ss = g.virt(L.dims_s());
    g.pointwise(CUDNN_POINTWISE_MUL, s, scale, nullptr, ss);
    auto sm = g.causal_mask(ss, L.dims_s(), lowest);
    // softmax with stats: m = max, e = exp(s - m), z = sum e, stats = m + log z, p = e / z
    auto m = g.virt(L.dims_row());
    g.reduction(CUDNN_REDUCE_TENSOR_MAX, sm, m);
    auto sub = g.virt(L.dims_s());
    g.pointwise(CUDNN_POINTWISE_SUB, sm, m, nullptr, sub);
    auto e = g.virt(L.dims_s());
    g.pointwise(CUDNN_POINTWISE_EXP, sub, nullptr, nullptr, e);
    auto z = g.virt(L.dims_row());
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, z);
    auto logz = g.virt(L.dims_row());
    g.pointwise(CUDNN_POINTWISE_LOG, z, nullptr, nullptr, logz);
    g.pointwise(CUDNN_POINTWISE_ADD, m, logz, nullptr, stats);
    // The second matmul reads P in the io type; with dropout P * mask / (1 - dropout).
    if (d.dropout > 0.f) {
        auto p = g.virt(L.dims_s());
        g.pointwise(CUDNN_POINTWISE_DIV, e, z, nullptr, p);
        auto pm = g.virt(L.dims_s());
        g.pointwise(CUDNN_POINTWISE_MUL, p, dropout_mask(g, L, d.dropout, plan), nullptr, pm);
        auto pd = g.virt(L.dims_s(), CUDNN_DATA_BFLOAT16);
        g.pointwise(CUDNN_POINTWISE_MUL, pm, g.scalar(kDropScale), nullptr, pd);
        g.matmul(pd, V, O);
        return;
    }
    auto p = g.virt(L.dims_s(), CUDNN_DATA_BFLOAT16);
    g.pointwise(CUDNN_POINTWISE_DIV, e, z, nullptr, p);
    g.matmul(p, V, O);
}

void build_backward(Graph& g, const AttnDims& d, const CudnnView& view, bool deterministic, Plan& plan) {
    const Layout L(d, view);
    auto Q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, L.dims_qk(), L.q);
    auto KT = g.tensor(kK, CUDNN_DATA_BFLOAT16, L.dims_kt(), L.kt);
    auto VT = g.tensor(kV, CUDNN_DATA_BFLOAT16, L.dims_vt(), L.vt);
    auto O = g.tensor(kO, CUDNN_DATA_BFLOAT16, L.dims_v(), L.o);
    auto dO = g.tensor(kDO, CUDNN_DATA_BFLOAT16, L.dims_v(), L.o);
    auto stats = g.tensor(kStats, CUDNN_DATA_FLOAT, L.dims_row(), L.stats);
    auto dQ = g.tensor(kDQ, CUDNN_DATA_BFLOAT16, L.dims_qk(), L.q);
    auto dK = g.tensor(kDK, CUDNN_DATA_BFLOAT16, L.dims_qk(), L.k);
    auto dV = g.tensor(kDV, CUDNN_DATA_BFLOAT16, L.dims_v(), L.v);
    // kKeepProb: 1 - dropout (1 without dropout), see softmax_sum below.
    auto scale = g.scalar(kScale), lowest = g.scalar(kLowest), keep_prob = g.scalar(kKeepProb);
    const bool drop = d.dropout > 0.f;
    DescPtr mask = drop ? dropout_mask(g, L, d.dropout, plan) : nullptr;
    DescPtr drop_scale = drop ? g.scalar(kDropScale) : nullptr;

    // softmax_sum = rowsum(dO * O) (1 - dropout): fp32 [B,H,T,1] that cuDNN wants in memory (our
    // workspace). With dropout dS = s P (mask dP - D (1 - p)) where s = 1/(1-p), D = rowsum(dO O).
    auto dOO = g.virt(L.dims_v());
    g.pointwise(CUDNN_POINTWISE_MUL, dO, O, nullptr, dOO);
    auto rs = g.virt(L.dims_row());
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, dOO, rs);
    auto softmax_sum = g.tensor(kSoftmaxSum, CUDNN_DATA_FLOAT, L.dims_row(), packed(L.dims_row()));
    g.pointwise(CUDNN_POINTWISE_MUL, rs, keep_prob, nullptr, softmax_sum);
    plan.softmax_sum_bytes = size_t(L.B * L.H * L.T) * 4;

    // P = exp(scale Q K^T - stats), masked
    auto s = g.virt(L.dims_s());
    g.matmul(Q, KT, s);
    auto ss = g.virt(L.dims_s());
    g.pointwise(CUDNN_POINTWISE_MUL, s, scale, nullptr, ss);
    auto sub = g.virt(L.dims_s());
    g.pointwise(CUDNN_POINTWISE_SUB, ss, stats, nullptr, sub);
    auto sm = g.causal_mask(sub, L.dims_s(), lowest);
    auto P = g.virt(L.dims_s());
    g.pointwise(CUDNN_POINTWISE_EXP, sm, nullptr, nullptr, P);

    // dV = (P mask s)^T dO
    auto Pd = P;
    if (drop) {
        auto pm = g.virt(L.dims_s());
        g.pointwise(CUDNN_POINTWISE_MUL, P, mask, nullptr, pm);
        Pd = g.virt(L.dims_s());
        g.pointwise(CUDNN_POINTWISE_MUL, pm, drop_scale, nullptr, Pd);
    }
    const Dims s_t = {L.H * L.T * L.T, L.T * L.T, 1, L.T};   // [B,H,Tk,Tq] view of a [B,H,Tq,Tk] tensor
    auto PT = g.virt_strided(L.dims_s(), s_t, CUDNN_DATA_BFLOAT16);
    g.reshape(Pd, PT);
    g.matmul(PT, dO, dV);

    // dS = P (dO V^T [mask] - softmax_sum) [s] scale
    auto dP = g.virt(L.dims_s());
    g.matmul(dO, VT, dP);
    if (drop) {
        auto dPm = g.virt(L.dims_s());
        g.pointwise(CUDNN_POINTWISE_MUL, dP, mask, nullptr, dPm);
        dP = dPm;
    }
    auto t1 = g.virt(L.dims_s());
    g.pointwise(CUDNN_POINTWISE_SUB, dP, softmax_sum, nullptr, t1);
    auto t2 = g.virt(L.dims_s());
    g.pointwise(CUDNN_POINTWISE_MUL, t1, P, nullptr, t2);
    if (drop) {
        auto t2d = g.virt(L.dims_s());
        g.pointwise(CUDNN_POINTWISE_MUL, t2, drop_scale, nullptr, t2d);
        t2 = t2d;
    }
    auto dS = g.virt(L.dims_s());
    g.pointwise(CUDNN_POINTWISE_MUL, t2, scale, nullptr, dS);

    // dK = dS^T Q
    auto dST = g.virt_strided(L.dims_s(), s_t, CUDNN_DATA_BFLOAT16);
    g.reshape(dS, dST);
    g.matmul(dST, Q, dK);

    // dQ = dS K: straight into dQ (deterministic: cuDNN keeps dP in its workspace), or through an
    // fp32 accumulator that cuDNN adds into with atomics
    auto K = g.virt_strided(L.dims_qk(), L.k, CUDNN_DATA_BFLOAT16);
    g.reshape(KT, K);
    if (deterministic) {
        g.matmul(dS, K, dQ);
    } else {
        auto acc = g.tensor(kDQAccum, CUDNN_DATA_FLOAT, L.dims_qk(), packed(L.dims_qk()));
        g.matmul(dS, K, acc);
        g.pointwise(CUDNN_POINTWISE_IDENTITY, acc, nullptr, nullptr, dQ);
        plan.dq_accum_bytes = size_t(L.B * L.H * L.T * L.Dk) * 4;
    }
}

// Cache key: everything that fixes the graph (the scale, the dropout scale and the seed are passed
// at execution; the keep probability is part of the graph).
// kind, B, T, H, Dqk, strides q/k/v, Dv, dropout, the view's buffer rows and head stride
using Key = std::tuple<int, int, int, int, int, int, int, int, int, float, int, int>;
Key key_of(const AttnDims& d, const CudnnView& v, int kind) {
    return Key{kind, d.B, d.T, d.Hq, d.Dqk, d.q_stride, d.k_stride, d.v_stride, d.Dv, d.dropout, v.T_buf, v.head_stride};
}
constexpr int kFwd = 0, kBwdDet = 1, kBwdFast = 2;

}  // namespace

struct CudnnAttention::Impl {
    cudnnHandle_t handle = nullptr;
    bool handle_failed = false;
    std::string error;
    std::map<Key, Plan> plans;

    ~Impl() {
        plans.clear();
        if (handle) cudnnDestroy(handle);
    }

    Plan& get(const AttnDims& d, const CudnnView& view, int kind) {
        const Key key = key_of(d, view, kind);
        auto it = plans.find(key);
        if (it != plans.end()) return it->second;
        Plan& plan = plans[key];
        std::string why;
        if (!cudnn_attention_supports(d, &why)) {
            plan.error = "cuDNN attention: unsupported shape: " + why;
            return plan;
        }
        try {
            if (!handle) {
                if (handle_failed) throw Failure{"cudnnCreate failed earlier"};
                const cudnnStatus_t st = cudnnCreate(&handle);
                if (st != CUDNN_STATUS_SUCCESS) {
                    handle_failed = true;
                    handle = nullptr;
                    check(st, "cudnnCreate");
                }
            }
            Graph g(handle);
            if (kind == kFwd) build_forward(g, d, view, plan);
            else build_backward(g, d, view, kind == kBwdDet, plan);
            g.build_plan(plan.plan, plan.plan_workspace, plan.engine, plan.nondeterministic,
                         config_skip(kind == kFwd ? "GPT_CUDNN_FWD_CONFIG" : "GPT_CUDNN_BWD_CONFIG"));
            plan.keep = g.release();
            plan.ok = true;
            if (std::getenv("GPT_CUDNN_FWD_CONFIG") || std::getenv("GPT_CUDNN_BWD_CONFIG"))
                spdlog::info("cuDNN attention {} plan (T={} Dqk={} dropout={}): {}", kind == kFwd ? "forward" : "backward",
                             d.T, d.Dqk, d.dropout, plan.engine);
        } catch (const Failure& f) {
            plan.error = std::string("cuDNN attention (") + (kind == kFwd ? "forward" : "backward") +
                         ", cuDNN " + std::to_string(cudnnGetVersion()) + "): " + f.what;
            spdlog::warn("{}; our attention kernels run this shape instead", plan.error);
        }
        return plan;
    }

    Plan& ready(const AttnDims& d, const CudnnView& view, int kind) {
        Plan& p = get(d, view, kind);
        if (!p.ok) fail(p.error);
        return p;
    }

    void execute(Plan& p, cudaStream_t s, const std::vector<int64_t>& uids, const std::vector<void*>& ptrs,
                 void* workspace) {
        check_exec(cudnnSetStream(handle, s), "cudnnSetStream");
        Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
        pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, int64_t(uids.size()), uids.data(), "variant uids");
        pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, int64_t(ptrs.size()), ptrs.data(),
                 "variant pointers");
        pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace, "variant workspace");
        pack.finalize("variant pack");
        check_exec(cudnnBackendExecute(handle, p.plan->get(), pack.get()), "cudnnBackendExecute (" + p.engine + ")");
    }
    static void check_exec(cudnnStatus_t st, const std::string& what) {
        try {
            check(st, what);
        } catch (const Failure& f) {
            fail("cuDNN attention: " + f.what);
        }
    }
};

CudnnAttention::CudnnAttention() : impl_(std::make_unique<Impl>()) {}
CudnnAttention::~CudnnAttention() = default;

namespace {
// Seed and offset for cuDNN's dropout RNG at the start of the workspace; offset 0: every call
// gets its own seed (AttnDims::seed, per step, layer and micro-batch).
void add_rng_state(std::vector<int64_t>& uids, std::vector<void*>& ptrs, char* ws, const AttnDims& d,
                   cudaStream_t s) {
    auto* state = reinterpret_cast<int64_t*>(ws);
    write_rng_state_kernel<<<1, 1, 0, s>>>(state, static_cast<int64_t>(d.seed), 0);
    const cudaError_t e = cudaGetLastError();
    GPT_CHECK(e == cudaSuccess, std::string("cuDNN attention: writing the dropout seed: ") + cudaGetErrorString(e));
    uids.insert(uids.end(), {kSeed, kOffset});
    ptrs.insert(ptrs.end(), {state, state + 1});
}
}  // namespace

bool CudnnAttention::prepare_fwd(const AttnDims& d, const CudnnView& view) {
    Plan& p = impl_->get(d, view, kFwd);
    if (!p.ok) impl_->error = p.error;
    return p.ok;
}
bool CudnnAttention::prepare_bwd(const AttnDims& d, bool deterministic, const CudnnView& view) {
    Plan& p = impl_->get(d, view, deterministic ? kBwdDet : kBwdFast);
    if (!p.ok) impl_->error = p.error;
    return p.ok;
}
const std::string& CudnnAttention::last_error() const { return impl_->error; }

size_t CudnnAttention::fwd_workspace_bytes(const AttnDims& d, const CudnnView& view) {
    return impl_->ready(d, view, kFwd).workspace_bytes();
}
size_t CudnnAttention::bwd_workspace_bytes(const AttnDims& d, bool det, const CudnnView& view) {
    return impl_->ready(d, view, det ? kBwdDet : kBwdFast).workspace_bytes();
}
bool CudnnAttention::bwd_engine_nondeterministic(const AttnDims& d, bool det) {
    return impl_->ready(d, {}, det ? kBwdDet : kBwdFast).nondeterministic;
}
std::string CudnnAttention::describe(const AttnDims& d, bool backward, bool det) {
    Plan& p = impl_->get(d, {}, backward ? (det ? kBwdDet : kBwdFast) : kFwd);
    return p.ok ? p.engine + ", workspace " + std::to_string(p.workspace_bytes()) + " bytes" : p.error;
}

void CudnnAttention::fwd(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
                         const __nv_bfloat16* v, const AttnDims& d, void* workspace, cudaStream_t s,
                         const CudnnView& view) {
    Plan& p = impl_->ready(d, view, kFwd);
    float scale = d.scale, lowest = std::numeric_limits<float>::lowest(), drop_scale = 1.f / (1.f - d.dropout);
    std::vector<int64_t> uids = {kQ, kK, kV, kO, kStats, kScale, kLowest};
    std::vector<void*> ptrs = {const_cast<__nv_bfloat16*>(q), const_cast<__nv_bfloat16*>(k),
                               const_cast<__nv_bfloat16*>(v), out, lse, &scale, &lowest};
    char* ws = static_cast<char*>(workspace);
    if (p.rng_state_bytes) {
        GPT_CHECK(workspace != nullptr, "cuDNN attention forward with dropout: a workspace is required");
        add_rng_state(uids, ptrs, ws, d, s);
        uids.push_back(kDropScale);
        ptrs.push_back(&drop_scale);
    }
    impl_->execute(p, s, uids, ptrs, p.plan_workspace ? ws + p.rng_state_bytes : nullptr);
}

void CudnnAttention::bwd(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, const __nv_bfloat16* dout,
                         const __nv_bfloat16* out, const float* lse, const __nv_bfloat16* q,
                         const __nv_bfloat16* k, const __nv_bfloat16* v, const AttnDims& d, bool det,
                         void* workspace, cudaStream_t s, const CudnnView& view) {
    Plan& p = impl_->ready(d, view, det ? kBwdDet : kBwdFast);
    GPT_CHECK(workspace != nullptr, "cuDNN attention backward: a workspace is required");
    float scale = d.scale, lowest = std::numeric_limits<float>::lowest(), keep_prob = 1.f - d.dropout,
          drop_scale = 1.f / (1.f - d.dropout);
    char* ws = static_cast<char*>(workspace);
    std::vector<int64_t> uids;
    std::vector<void*> ptrs;
    if (p.rng_state_bytes) {
        add_rng_state(uids, ptrs, ws, d, s);
        uids.push_back(kDropScale);
        ptrs.push_back(&drop_scale);
        ws += p.rng_state_bytes;
    }
    void* softmax_sum = ws;
    void* dq_accum = ws + align256(p.softmax_sum_bytes);
    void* plan_ws = ws + align256(p.softmax_sum_bytes) + align256(p.dq_accum_bytes);
    uids.insert(uids.end(), {kQ, kK, kV, kO, kDO, kStats, kDQ, kDK, kDV, kScale, kLowest, kKeepProb, kSoftmaxSum});
    ptrs.insert(ptrs.end(), {const_cast<__nv_bfloat16*>(q), const_cast<__nv_bfloat16*>(k),
                             const_cast<__nv_bfloat16*>(v), const_cast<__nv_bfloat16*>(out),
                             const_cast<__nv_bfloat16*>(dout), const_cast<float*>(lse), dq, dk, dv,
                             &scale, &lowest, &keep_prob, softmax_sum});
    if (p.dq_accum_bytes) {
        uids.push_back(kDQAccum);
        ptrs.push_back(dq_accum);
        // cuDNN >= 9.6 zeroes its dQ accumulator itself; earlier versions expect zeros.
        if (cudnnGetVersion() < 90600) {
            const cudaError_t e = cudaMemsetAsync(dq_accum, 0, p.dq_accum_bytes, s);
            GPT_CHECK(e == cudaSuccess, std::string("cuDNN attention: cudaMemsetAsync: ") + cudaGetErrorString(e));
        }
    }
    impl_->execute(p, s, uids, ptrs, p.plan_workspace ? plan_ws : nullptr);
}

#endif  // GPT_HAVE_CUDNN

}  // namespace gpt::cuda
