// M2's sparse mixing (ops.h sparse_mix_fwd/bwd): agg[n] = sum_t wts[n,t] z[idx[n,t]]. The backward
// is a scatter; to keep it deterministic it is a gather over an inverse index: the (row, slot)
// entries are stably radix-sorted by target row, and each target row sums its entries in entry
// order (the CPU reference's order).
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

// One block per target row m: the run of sorted keys equal to m+1, summed in entry order.
__global__ void sparse_gather_kernel(bf16* dz, const bf16* dagg, const float* wts, const int32_t* keys,
                                     const int32_t* entries, int n_entries, int r, int k) {
    const int m = blockIdx.x;
    __shared__ int range[2];
    if (threadIdx.x < 2) {   // lower_bound of m+1 and of m+2
        const int want = m + 1 + threadIdx.x;
        int lo = 0, hi = n_entries;
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if (keys[mid] < want) lo = mid + 1;
            else hi = mid;
        }
        range[threadIdx.x] = lo;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < r; c += blockDim.x) {
        float acc = 0.f;
        for (int s = range[0]; s < range[1]; ++s) {
            const int e = entries[s];
            acc += wts[e] * __bfloat162float(dagg[size_t(e / k) * r + c]);
        }
        dz[size_t(m) * r + c] = __float2bfloat16(acc);
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
                 o_tmp = sp.add((temp_bytes + 3) / 4);
    float* base = sp.take(e);
    auto ints = [&](size_t off) { return reinterpret_cast<int32_t*>(base + off); };
    sparse_keys_kernel<<<elementwise_blocks(nk, kThreads), kThreads, 0, e.stream>>>(
        ints(o_k), ints(o_v), index(e, idx, nk, op, "idx"), N, nk);
    GPT_CUDA_LAUNCHED("sparse_keys_kernel");
    GPT_CUDA(cub::DeviceRadixSort::SortPairs(static_cast<void*>(base + o_tmp), temp_bytes, ints(o_k), ints(o_sk),
                                             ints(o_v), ints(o_sv), n_entries, 0, bits, e.stream));
    sparse_gather_kernel<<<unsigned(N), 128, 0, e.stream>>>(act(e, dz, nr, op, "dz"), act(e, dagg, nr, op, "dagg"),
                                                           f32(e, wts, nk, op, "wts"), ints(o_sk), ints(o_sv),
                                                           n_entries, r, k);
    GPT_CUDA_LAUNCHED("sparse_gather_kernel");
}

}  // namespace variant
}  // namespace gpt::cuda
