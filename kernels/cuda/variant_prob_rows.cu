// Statistics of materialised probability rows: RA-CT's gate (ops.h ract_gate_fwd/bwd: top-k sum,
// max, entropy, rms of the head's row or of the head-mean row) and M2's sparse rows (topk_rows:
// the k largest head-mean entries, renormalised). One block per query row (b, i); the row sits in
// shared memory; top-k is k passes of a block argmax (ties go to the lowest column). Every
// reduction has a fixed shape, and the gate's parameter gradients are per-row contributions summed
// in a fixed order: deterministic.
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Shared-memory scratch of one block: the row, a selection mark per column, reduction slots.
struct RowSmem {
    float* row;              // [T]
    unsigned char* taken;    // [T]
    float* wv;               // [kWarps] values
    int* wi;                 // [kWarps] indices
};
__device__ RowSmem row_smem(int T) {
    extern __shared__ float smem[];
    RowSmem s;
    s.wv = smem;
    s.wi = reinterpret_cast<int*>(smem + kWarps);
    s.row = smem + 2 * kWarps;
    s.taken = reinterpret_cast<unsigned char*>(s.row + T);
    return s;
}
size_t row_smem_bytes(int T) { return (2 * kWarps + size_t(T)) * 4 + size_t(T); }

// Sum over all threads' values, same order every time; every thread gets the result.
__device__ float block_sum(float v, RowSmem& s) {
    v = warp_sum(v);
    __syncthreads();   // wv free
    if ((threadIdx.x & 31) == 0) s.wv[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = 0.f;
    for (int w = 0; w < kWarps; ++w) t += s.wv[w];
    return t;
}

// Column of the largest unselected entry of row[0, n) (lowest column on ties); every thread gets it.
__device__ int block_argmax(int n, RowSmem& s) {
    float bv = -INFINITY;
    int bi = n;   // n = none
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        if (!s.taken[j] && (s.row[j] > bv || bi == n)) {
            bv = s.row[j];
            bi = j;
        }
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi < n && (bi == n || ov > bv || (ov == bv && oi < bi))) {
            bv = ov;
            bi = oi;
        }
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
        s.wv[threadIdx.x >> 5] = bv;
        s.wi[threadIdx.x >> 5] = bi;
    }
    __syncthreads();
    float v = -INFINITY;
    int best = n;
    for (int w = 0; w < kWarps; ++w)
        if (s.wi[w] < n && (best == n || s.wv[w] > v || (s.wv[w] == v && s.wi[w] < best))) {
            v = s.wv[w];
            best = s.wi[w];
        }
    return best;
}

// Marks the kk largest entries of row[0, n) in taken[] (cleared first). Thread 0 sees their sum
// in selection order (largest first); `order` (optional, thread 0) receives the columns.
__device__ float select_top(int n, int kk, RowSmem& s, int* order) {
    for (int j = threadIdx.x; j < n; j += blockDim.x) s.taken[j] = 0;
    __syncthreads();
    float sum = 0.f;
    for (int t = 0; t < kk; ++t) {
        const int j = block_argmax(n, s);
        if (threadIdx.x == 0) {
            s.taken[j] = 1;
            sum += s.row[j];
            if (order) order[t] = j;
        }
        __syncthreads();
    }
    return sum;
}

// Loads the source row of (b, h, i) into s.row[0, i]: the head's own row or the head mean.
__device__ void load_row(RowSmem& s, const float* probs, int B, int T, int H, int b, int h, int i, bool mean) {
    (void)B;
    __syncthreads();   // the previous row is consumed
    for (int j = threadIdx.x; j <= i; j += blockDim.x) {
        if (!mean) {
            s.row[j] = probs[((size_t(b) * H + h) * T + i) * T + j];
            continue;
        }
        float acc = 0.f;   // the CPU reference's order: += p / H over heads
        for (int hh = 0; hh < H; ++hh) acc += probs[((size_t(b) * H + hh) * T + i) * T + j] / float(H);
        s.row[j] = acc;
    }
    __syncthreads();
}

// The statistic of s.row[0, n); with `grad`, s.row is replaced by d stat / d row (zeros where none).
__device__ float row_statistic(RowSmem& s, int n, const RactDims& d, bool grad) {
    switch (d.stat) {
        case RactStat::max:
        case RactStat::topk: {
            const int kk = d.stat == RactStat::max ? 1 : min(d.topk, n);
            float sum = select_top(n, kk, s, nullptr);
            // thread 0 holds the sum: broadcast it
            if (threadIdx.x == 0) s.wv[0] = sum;
            __syncthreads();
            sum = s.wv[0];
            if (grad)
                for (int j = threadIdx.x; j < n; j += blockDim.x) s.row[j] = s.taken[j] ? 1.f : 0.f;
            __syncthreads();
            return sum;
        }
        case RactStat::entropy: {
            float v = 0.f;
            for (int j = threadIdx.x; j < n; j += blockDim.x)
                if (s.row[j] > 0.f) v -= s.row[j] * logf(s.row[j]);
            const float ent = block_sum(v, s);
            if (grad)
                for (int j = threadIdx.x; j < n; j += blockDim.x)
                    s.row[j] = s.row[j] > 0.f ? -(logf(s.row[j]) + 1.f) : 0.f;
            __syncthreads();
            return ent;
        }
        case RactStat::rms: {
            float v = 0.f;
            for (int j = threadIdx.x; j < n; j += blockDim.x) v += s.row[j] * s.row[j];
            const float rms = sqrtf(block_sum(v, s) / float(n));
            if (grad)
                for (int j = threadIdx.x; j < n; j += blockDim.x) s.row[j] = rms > 0.f ? s.row[j] / (n * rms) : 0.f;
            __syncthreads();
            return rms;
        }
    }
    return 0.f;
}

// One block per (b, i) = blockIdx.x.
__global__ void ract_fwd_kernel(float* stat, bf16* gate, const float* probs, const float* scale, const float* bias,
                                RactDims d) {
    RowSmem s = row_smem(d.T);
    const int b = blockIdx.x / d.T, i = blockIdx.x % d.T;
    float st_v = 0.f;
    for (int h = 0; h < d.H; ++h) {
        if (!d.head_average || h == 0) {
            load_row(s, probs, d.B, d.T, d.H, b, h, i, d.head_average);
            st_v = row_statistic(s, i + 1, d, false);
        }
        if (threadIdx.x == 0) {
            const size_t o = size_t(blockIdx.x) * d.H + h;
            stat[o] = st_v;
            gate[o] = __float2bfloat16(1.f / (1.f + expf(-(st_v * scale[h] + bias[h]))));
        }
    }
}

// dz = dgate sigma'(z) per (row, head), and the contributions to dscale (dz stat) and dbias (dz).
__global__ void ract_dz_kernel(float* dz, float* cscale, float* cbias, const bf16* dgate, const bf16* gate,
                               const float* stat, size_t n) {
    for (size_t o = size_t(blockIdx.x) * blockDim.x + threadIdx.x; o < n; o += size_t(gridDim.x) * blockDim.x) {
        const float g = __bfloat162float(gate[o]);
        const float z = __bfloat162float(dgate[o]) * g * (1.f - g);
        dz[o] = z;
        cscale[o] = z * stat[o];
        cbias[o] = z;
    }
}

// dprobs += the statistic's gradient times dz scale[h]; one block per (b, i).
__global__ void ract_dprobs_kernel(float* dprobs, const float* dz, const float* probs, const float* scale,
                                   RactDims d) {
    RowSmem s = row_smem(d.T);
    const int b = blockIdx.x / d.T, i = blockIdx.x % d.T;
    auto dp_row = [&](int h) { return dprobs + ((size_t(b) * d.H + h) * d.T + i) * d.T; };
    if (!d.head_average) {
        for (int h = 0; h < d.H; ++h) {
            load_row(s, probs, d.B, d.T, d.H, b, h, i, false);
            row_statistic(s, i + 1, d, true);
            const float f = dz[size_t(blockIdx.x) * d.H + h] * scale[h];
            float* dp = dp_row(h);
            for (int j = threadIdx.x; j <= i; j += blockDim.x) dp[j] += f * s.row[j];
        }
        return;
    }
    float shared = 0.f;   // the shared statistic's gradient, summed over heads in order
    for (int h = 0; h < d.H; ++h) shared += dz[size_t(blockIdx.x) * d.H + h] * scale[h];
    load_row(s, probs, d.B, d.T, d.H, b, 0, i, true);
    row_statistic(s, i + 1, d, true);
    for (int h = 0; h < d.H; ++h) {
        float* dp = dp_row(h);
        for (int j = threadIdx.x; j <= i; j += blockDim.x) dp[j] += shared * s.row[j] / float(d.H);
    }
}

// M2: the k largest head-mean entries of row (b, i), renormalised; one block per row.
__global__ void topk_rows_kernel(int32_t* idx, float* wts, const float* probs, int B, int H, int T, int k) {
    RowSmem s = row_smem(T);
    __shared__ int order[256];
    const int b = blockIdx.x / T, i = blockIdx.x % T, kk = min(k, i + 1);
    load_row(s, probs, B, T, H, b, 0, i, true);
    const float sum = select_top(i + 1, kk, s, order);
    if (threadIdx.x != 0) return;
    const size_t o = size_t(blockIdx.x) * k;
    for (int t = 0; t < k; ++t) {
        idx[o + t] = t < kk ? b * T + order[t] : -1;
        wts[o + t] = t < kk ? s.row[order[t]] / sum : 0.f;
    }
}

void check_ract(const RactDims& d, const char* op) {
    variant::check_positive(op, {d.B, d.T, d.H});
    GPT_CHECK(d.stat != RactStat::topk || d.topk > 0,
              std::string("cuda-bf16 ") + op + ": model.ract.topk must be > 0");
}

}  // namespace

namespace variant {

void ract_gate_fwd(const VariantEnv& e, Ten stat, Ten gate, Ten probs, Ten scale, Ten bias, const RactDims& d) {
    const char* op = "ract_gate_fwd";
    check_ract(d, op);
    const size_t nh = size_t(d.B) * d.T * d.H;
    ract_fwd_kernel<<<unsigned(size_t(d.B) * d.T), kThreads, row_smem_bytes(d.T), e.stream>>>(
        f32(e, stat, nh, op, "stat"), act(e, gate, nh, op, "gate"), f32(e, probs, nh * d.T, op, "probs"),
        f32(e, scale, d.H, op, "scale"), f32(e, bias, d.H, op, "bias"), d);
    GPT_CUDA_LAUNCHED("ract_fwd_kernel");
}

void ract_gate_bwd(const VariantEnv& e, Ten dprobs, Ten dscale, Ten dbias, Ten dgate, Ten probs, Ten stat,
                   Ten gate, Ten scale, const RactDims& d) {
    const char* op = "ract_gate_bwd";
    check_ract(d, op);
    const int N = d.B * d.T;
    const size_t nh = size_t(N) * d.H;
    float* dp = f32_opt(e, dprobs, nh * d.T, op, "dprobs");
    float* ds = f32_opt(e, dscale, d.H, op, "dscale");
    float* db = f32_opt(e, dbias, d.H, op, "dbias");
    ScratchPlan sp;
    const size_t o_dz = sp.add(nh), o_cs = sp.add(nh), o_cb = sp.add(nh), o_part = sp.add(colsum_scratch(N, d.H));
    float* scratch = sp.take(e);
    ract_dz_kernel<<<elementwise_blocks(nh), kThreads, 0, e.stream>>>(
        scratch + o_dz, scratch + o_cs, scratch + o_cb, act(e, dgate, nh, op, "dgate"), act(e, gate, nh, op, "gate"),
        f32(e, stat, nh, op, "stat"), nh);
    GPT_CUDA_LAUNCHED("ract_dz_kernel");
    if (ds) rows_sum_add(ds, scratch + o_cs, N, d.H, scratch + o_part, e.stream);
    if (db) rows_sum_add(db, scratch + o_cb, N, d.H, scratch + o_part, e.stream);
    if (!dp) return;
    ract_dprobs_kernel<<<unsigned(N), kThreads, row_smem_bytes(d.T), e.stream>>>(
        dp, scratch + o_dz, f32(e, probs, nh * d.T, op, "probs"), f32(e, scale, d.H, op, "scale"), d);
    GPT_CUDA_LAUNCHED("ract_dprobs_kernel");
}

void topk_rows(const VariantEnv& e, Ten idx, Ten wts, Ten probs, int B, int H, int T, int k) {
    const char* op = "topk_rows";
    check_positive(op, {B, H, T, k});
    GPT_CHECK(k <= 256, "cuda-bf16 topk_rows: k = " + std::to_string(k) +
                            " above the kernel's limit of 256 kept entries per row (model.m2 top-k)");
    const size_t nk = size_t(B) * T * k;
    topk_rows_kernel<<<unsigned(size_t(B) * T), kThreads, row_smem_bytes(T), e.stream>>>(
        index(e, idx, nk, op, "idx"), f32(e, wts, nk, op, "wts"), f32(e, probs, size_t(B) * H * T * T, op, "probs"),
        B, H, T, k);
    GPT_CUDA_LAUNCHED("topk_rows_kernel");
}

}  // namespace variant
}  // namespace gpt::cuda
