// M2's sparse mixing (ops.h sparse_mix_fwd/bwd): agg[n] = sum_t wts[n,t] z[idx[n,t]]. The backward
// is a scatter; to keep it deterministic it is a gather over an inverse index: the (row, slot)
// entries are stably radix-sorted by target row, and each target row sums its entries in a fixed
// order (sparse_gather_kernel).
#include <cub/device/device_radix_sort.cuh>

#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void sparse_mix_fwd_kernel(bf16* agg, const bf16* z, const int32_t* idx, const float* wts, int N, int r,
                                      int k) {
    const size_t total = size_t(N) * r;
    for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += size_t(gridDim.x) * blockDim.x) {
        const size_t n = e / r;
        const int c = int(e % r);
        float acc = 0.f;
        for (int t = 0; t < k; ++t) {
            const int src = idx[n * k + t];
            if (src < 0 || src >= N) continue;   // unused slot (out-of-range rows are refused on the CPU)
            acc += wts[n * k + t] * __bfloat162float(z[size_t(src) * r + c]);
        }
        agg[e] = __float2bfloat16(acc);
    }
}

// key = target row + 1 (0 = unused slot), value = entry number.
__global__ void sparse_keys_kernel(int32_t* keys, int32_t* vals, const int32_t* idx, int N, size_t n) {
    for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
        const int src = idx[e];
        keys[e] = (src < 0 || src >= N) ? 0 : src + 1;
        vals[e] = int32_t(e);
    }
}

// starts[m] = the first sorted position whose key is at least m + 1, for m in [0, N]: target row
// m's entries are [starts[m], starts[m + 1]). Position p sets the rows whose key lies between the
// key before it and its own, so each row is set once; the end (p = n) closes the rest. (It
// replaces a binary search per row inside the gather kernel.)
__global__ void segment_starts_kernel(int32_t* starts, const int32_t* keys, int n, int N) {
    for (int p = int(blockIdx.x * blockDim.x + threadIdx.x); p <= n; p += int(gridDim.x * blockDim.x)) {
        const int prev = p == 0 ? 0 : keys[p - 1], cur = p == n ? N + 1 : keys[p];
        for (int m1 = max(prev + 1, 1); m1 <= cur; ++m1) starts[m1 - 1] = p;
    }
}

// One block per target row m: its run of sorted entries. The runs are very uneven (an early
// token can be in nearly every later row's top-8: ~1000 entries), so the block's 8 warps split the
// run (warp w takes entries w, w + 8, ...), four entries' loads in flight at a time, each lane
// holding 4 of a pass's 128 channels; the warps' partial rows are then added in warp order. Fixed
// assignment and order: deterministic. (One 128-thread block walking the run alone took 1.7 ms per
// GPT-2 step with M2 at B = 32: the longest run's chain of dependent loads; docs/performance.md.)
constexpr int kGatherWarps = 8, kGatherUnroll = 4, kGatherPer = 4, kGatherCols = 32 * kGatherPer;
__global__ void __launch_bounds__(32 * kGatherWarps) sparse_gather_kernel(bf16* dz, const bf16* dagg, const float* wts,
                                                                        const int32_t* starts, const int32_t* entries,
                                                                        int r, int k) {
    __shared__ float part[kGatherWarps][kGatherCols];
    const int m = blockIdx.x, lo = starts[m], hi = starts[m + 1];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int c0 = 0; c0 < r; c0 += kGatherCols) {   // channel c0 + lane + 32 j for j < kGatherPer
        float acc[kGatherPer] = {};
        for (int s = lo + warp; s < hi; s += kGatherWarps * kGatherUnroll) {
            int e[kGatherUnroll];
            float w[kGatherUnroll];
#pragma unroll
            for (int u = 0; u < kGatherUnroll; ++u) {
                const int su = s + u * kGatherWarps;
                e[u] = su < hi ? entries[su] : -1;
                w[u] = e[u] >= 0 ? wts[e[u]] : 0.f;
            }
#pragma unroll
            for (int u = 0; u < kGatherUnroll; ++u) {
                const bf16* row = dagg + size_t(e[u] >= 0 ? e[u] / k : 0) * r;
#pragma unroll
                for (int j = 0; j < kGatherPer; ++j) {
                    const int c = c0 + lane + 32 * j;
                    if (e[u] >= 0 && c < r) acc[j] += w[u] * __bfloat162float(row[c]);
                }
            }
        }
#pragma unroll
        for (int j = 0; j < kGatherPer; ++j) part[warp][lane + 32 * j] = acc[j];
        __syncthreads();
        for (int x = threadIdx.x; x < kGatherCols && c0 + x < r; x += blockDim.x) {
            float t = 0.f;
#pragma unroll
            for (int w = 0; w < kGatherWarps; ++w) t += part[w][x];
            dz[size_t(m) * r + c0 + x] = __float2bfloat16(t);
        }
        __syncthreads();   // part is rewritten by the next pass
    }
}

int key_bits(int max_key) {
    int bits = 1;
    while (bits < 31 && (1ll << bits) <= max_key) ++bits;
    return bits;
}

}  // namespace

namespace variant {

void sparse_mix_fwd(const VariantEnv& e, Ten agg, Ten z, Ten idx, Ten wts, int N, int r, int k) {
    const char* op = "sparse_mix_fwd";
    check_positive(op, {N, r, k});
    const size_t nr = size_t(N) * r, nk = size_t(N) * k;
    sparse_mix_fwd_kernel<<<elementwise_blocks(nr, kThreads), kThreads, 0, e.stream>>>(
        act(e, agg, nr, op, "agg"), act(e, z, nr, op, "z"), index(e, idx, nk, op, "idx"), f32(e, wts, nk, op, "wts"),
        N, r, k);
    GPT_CUDA_LAUNCHED("sparse_mix_fwd_kernel");
}

void sparse_mix_bwd(const VariantEnv& e, Ten dz, Ten dagg, Ten idx, Ten wts, int N, int r, int k) {
    const char* op = "sparse_mix_bwd";
    check_positive(op, {N, r, k});
    const size_t nr = size_t(N) * r, nk = size_t(N) * k;
    GPT_CHECK(nk < (size_t(1) << 31), "cuda-bf16 sparse_mix_bwd: N*k too large for int32 entry numbers");
    const int n_entries = int(nk), bits = key_bits(N);
    size_t temp_bytes = 0;
    GPT_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), n_entries, 0, bits));
    ScratchPlan sp;   // int32 pieces carved as floats (same size)
    const size_t o_k = sp.add(nk), o_v = sp.add(nk), o_sk = sp.add(nk), o_sv = sp.add(nk),
                 o_st = sp.add(size_t(N) + 1), o_tmp = sp.add((temp_bytes + 3) / 4);
    float* base = sp.take(e);
    auto ints = [&](size_t off) { return reinterpret_cast<int32_t*>(base + off); };
    sparse_keys_kernel<<<elementwise_blocks(nk, kThreads), kThreads, 0, e.stream>>>(
        ints(o_k), ints(o_v), index(e, idx, nk, op, "idx"), N, nk);
    GPT_CUDA_LAUNCHED("sparse_keys_kernel");
    GPT_CUDA(cub::DeviceRadixSort::SortPairs(static_cast<void*>(base + o_tmp), temp_bytes, ints(o_k), ints(o_sk),
                                             ints(o_v), ints(o_sv), n_entries, 0, bits, e.stream));
    segment_starts_kernel<<<elementwise_blocks(nk + 1, kThreads), kThreads, 0, e.stream>>>(ints(o_st), ints(o_sk),
                                                                                         n_entries, N);
    GPT_CUDA_LAUNCHED("segment_starts_kernel");
    sparse_gather_kernel<<<unsigned(N), 32 * kGatherWarps, 0, e.stream>>>(
        act(e, dz, nr, op, "dz"), act(e, dagg, nr, op, "dagg"), f32(e, wts, nk, op, "wts"), ints(o_st), ints(o_sv), r,
        k);
    GPT_CUDA_LAUNCHED("sparse_gather_kernel");
}

}  // namespace variant
}  // namespace gpt::cuda
