// Token + position embedding, forward and a deterministic backward: tokens repeat, so instead of
// float atomics (whose summation order changes run to run) the (token, position) pairs are
// stably radix-sorted and each token's gradient rows are summed in position order by one block.
#include <cub/device/device_radix_sort.cuh>

#include "cuda/cuda_kernels.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void embedding_fwd_kernel(TView out, const int32_t* tokens, TView wte, TView wpe, int T,
                                     int E) {
    const size_t bt = blockIdx.x;
    const int t = static_cast<int>(bt % T);
    const size_t tok = static_cast<size_t>(tokens[bt]);
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        st(out, bt * E + e, ld(wte, tok * E + e) + ld(wpe, size_t(t) * E + e));
}

__global__ void iota_kernel(int32_t* x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = i;
}

// Block i handles the run of equal tokens that starts at sorted index i (other blocks exit).
__global__ void embedding_wte_bwd_kernel(TView dwte, TView dout, const int32_t* sorted_tokens,
                                         const int32_t* sorted_pos, int N, int E) {
    const int i = blockIdx.x;
    const int tok = sorted_tokens[i];
    if (i > 0 && sorted_tokens[i - 1] == tok) return;
    int end = i + 1;
    while (end < N && sorted_tokens[end] == tok) ++end;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        float acc = 0.f;
        for (int j = i; j < end; ++j) acc += ld(dout, size_t(sorted_pos[j]) * E + e);
        const size_t o = size_t(tok) * E + e;
        st(dwte, o, ld(dwte, o) + acc);
    }
}

// dwpe[t, :] += sum over b of dout[b, t, :], in batch order.
__global__ void embedding_wpe_bwd_kernel(TView dwpe, TView dout, int B, int T, int E) {
    const int t = blockIdx.x;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        float acc = 0.f;
        for (int b = 0; b < B; ++b) acc += ld(dout, (size_t(b) * T + t) * E + e);
        const size_t o = size_t(t) * E + e;
        st(dwpe, o, ld(dwpe, o) + acc);
    }
}

int key_bits(int V) {
    int bits = 1;
    while (bits < 31 && (1ll << bits) < V) ++bits;
    return bits;
}

size_t cub_temp_bytes(int N, int V) {
    size_t bytes = 0;
    GPT_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr),
                                             static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), N, 0, key_bits(V)));
    return bytes;
}

size_t align256(size_t b) { return (b + 255) & ~size_t(255); }

}  // namespace

void embedding_fwd(TView out, const int32_t* tokens, TView wte, TView wpe, int B, int T, int E,
                   cudaStream_t s) {
    if (B * T == 0) return;
    embedding_fwd_kernel<<<B * T, kThreads, 0, s>>>(out, tokens, wte, wpe, T, E);
    GPT_CUDA_LAUNCHED("embedding_fwd_kernel");
}

size_t embedding_bwd_scratch(int N, int V) {
    return 3 * align256(size_t(N) * sizeof(int32_t)) + align256(cub_temp_bytes(N, V));
}

void embedding_bwd(TView dwte, TView dwpe, TView dout, const int32_t* tokens, int B, int T, int E,
                   int V, void* scratch, cudaStream_t s) {
    const int N = B * T;
    if (N == 0) return;
    char* base = static_cast<char*>(scratch);
    const size_t slot = align256(size_t(N) * sizeof(int32_t));
    int32_t* pos = reinterpret_cast<int32_t*>(base);
    int32_t* sorted_tok = reinterpret_cast<int32_t*>(base + slot);
    int32_t* sorted_pos = reinterpret_cast<int32_t*>(base + 2 * slot);
    void* temp = base + 3 * slot;
    size_t temp_bytes = cub_temp_bytes(N, V);
    iota_kernel<<<(N + kThreads - 1) / kThreads, kThreads, 0, s>>>(pos, N);
    GPT_CUDA_LAUNCHED("iota_kernel");
    GPT_CUDA(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, tokens, sorted_tok, pos, sorted_pos,
                                             N, 0, key_bits(V), s));
    embedding_wte_bwd_kernel<<<N, kThreads, 0, s>>>(dwte, dout, sorted_tok, sorted_pos, N, E);
    GPT_CUDA_LAUNCHED("embedding_wte_bwd_kernel");
    embedding_wpe_bwd_kernel<<<T, kThreads, 0, s>>>(dwpe, dout, B, T, E);
    GPT_CUDA_LAUNCHED("embedding_wpe_bwd_kernel");
}

}  // namespace gpt::cuda
