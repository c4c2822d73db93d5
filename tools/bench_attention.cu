// Attention-core micro-benchmark of the CUDA backend's flash attention (SPEC section 7):
// forward and forward+backward at the seeds' shape B=8, H=12, T=1024, D=64 (bf16), and the
// exact-RA fold (Dqk=128, Dv=64), full and banded (W=64). CUDA events around batches of 10
// calls, 300 ms of warm-up first, the median over many batches, inputs rotated over several sets so that L2
// does not hold them. Prints ms and TFLOP/s (causal FLOPs: fwd = B*H*T^2*(Dqk+Dv), bwd = 2.5x).
//
// Usage: bench_attention [reps]      (reps = 0: one fwd+bwd at the base shape, for a profiler)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/rng.h"
#include "cuda/cuda_kernels.cuh"

using namespace gpt;
using gpt::cuda::attention_bwd;
using gpt::cuda::attention_fwd;

namespace {

__global__ void fill_random(__nv_bfloat16* x, size_t n, uint64_t seed) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
        x[i] = __float2bfloat16(2.f * uniform01(seed, i) - 1.f);
}

struct Set {   // one input set (q, k, v, dout) and its outputs/gradients
    __nv_bfloat16 *q, *k, *v, *out, *dout, *dq, *dk, *dv;
    float *lse, *delta;
};

__nv_bfloat16* bf16_buffer(size_t n, uint64_t seed) {
    __nv_bfloat16* p = nullptr;
    GPT_CUDA(cudaMalloc(&p, n * 2));
    fill_random<<<1024, 256>>>(p, n, seed);
    GPT_CUDA(cudaGetLastError());
    return p;
}

double median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

struct Result {
    double fwd_ms, fwdbwd_ms;
};

Result bench(const AttnDims& d, int reps) {
    const size_t rows = size_t(d.B) * d.T;
    const int kSets = 4;   // 4 x ~50 MB > 50 MB of L2
    std::vector<Set> sets(kSets);
    for (int s = 0; s < kSets; ++s) {
        Set& x = sets[s];
        x.q = bf16_buffer(rows * d.q_stride, 10 * s + 1);
        x.k = bf16_buffer(rows * d.k_stride, 10 * s + 2);
        x.v = bf16_buffer(rows * d.v_stride, 10 * s + 3);
        x.dout = bf16_buffer(rows * d.Hq * d.Dv, 10 * s + 4);
        x.out = bf16_buffer(rows * d.Hq * d.Dv, 0);
        x.dq = bf16_buffer(rows * d.q_stride, 0);
        x.dk = bf16_buffer(rows * d.k_stride, 0);
        x.dv = bf16_buffer(rows * d.v_stride, 0);
        GPT_CUDA(cudaMalloc(&x.lse, size_t(d.B) * d.Hq * d.T * 4));
        GPT_CUDA(cudaMalloc(&x.delta, size_t(d.B) * d.Hq * d.T * 4));
    }
    cudaStream_t st;
    GPT_CUDA(cudaStreamCreate(&st));
    cudaEvent_t e0, e1;
    GPT_CUDA(cudaEventCreate(&e0));
    GPT_CUDA(cudaEventCreate(&e1));
    auto run = [&](int i, bool bwd) {
        if (reps == 0) bwd = true;
        Set& x = sets[i % kSets];
        attention_fwd(x.out, x.lse, x.q, x.k, x.v, d, st);
        if (bwd) attention_bwd(x.dq, x.dk, x.dv, x.dout, x.out, x.lse, x.q, x.k, x.v, d, x.delta, nullptr, st);
    };
    // Warm up for 300 ms (clocks ramp up from idle), then time samples of kBatch back-to-back
    // calls (host launch overhead overlaps the GPU work) and take the median per call.
    const int kBatch = 10;
    Result r{};
    if (reps == 0) {   // profiler mode: two plain calls, no timing
        run(0, true);
        run(1, true);
        GPT_CUDA(cudaStreamSynchronize(st));
        return r;
    }
    for (int bwd = 0; bwd < 2; ++bwd) {
        float warm = 0.f;
        GPT_CUDA(cudaEventRecord(e0, st));
        for (int i = 0; warm < 300.f; ++i) {
            run(i, bwd);
            if (i % 20 == 19) {
                GPT_CUDA(cudaEventRecord(e1, st));
                GPT_CUDA(cudaEventSynchronize(e1));
                GPT_CUDA(cudaEventElapsedTime(&warm, e0, e1));
            }
        }
        std::vector<float> ms(reps);
        for (int i = 0; i < reps; ++i) {
            GPT_CUDA(cudaEventRecord(e0, st));
            for (int j = 0; j < kBatch; ++j) run(i * kBatch + j, bwd);
            GPT_CUDA(cudaEventRecord(e1, st));
            GPT_CUDA(cudaEventSynchronize(e1));
            GPT_CUDA(cudaEventElapsedTime(&ms[i], e0, e1));
            ms[i] /= kBatch;
        }
        (bwd ? r.fwdbwd_ms : r.fwd_ms) = median(ms);
    }
    for (Set& x : sets)
        for (void* p : {(void*)x.q, (void*)x.k, (void*)x.v, (void*)x.out, (void*)x.dout, (void*)x.dq,
                        (void*)x.dk, (void*)x.dv, (void*)x.lse, (void*)x.delta})
            cudaFree(p);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaStreamDestroy(st);
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    const int reps = argc > 1 ? std::atoi(argv[1]) : 100;
    try {
        cudaDeviceProp prop{};
        GPT_CUDA(cudaGetDeviceProperties(&prop, 0));
        std::printf("bench_attention: %s, %d SMs, median of %d reps, 4 rotating input sets\n",
                    prop.name, prop.multiProcessorCount, reps);
        struct Shape {
            const char* name;
            int Dqk, Dv, band;
        };
        const Shape shapes[] = {{"core base (D=64)", 64, 64, 0},
                                {"core RA exact (Dqk=128,Dv=64)", 128, 64, 0},
                                {"core RA band W=64 (128/64)", 128, 64, 64},
                                {"core D=128 (128/128)", 128, 128, 0}};
        const int B = 8, H = 12, T = 1024;
        std::printf("%-32s %10s %10s %12s %12s\n", "shape", "fwd ms", "fwd+bwd ms", "fwd TFLOP/s",
                    "f+b TFLOP/s");
        for (const Shape& s : shapes) {
            if (reps == 0 && s.Dqk != 64) continue;
            AttnDims d;
            d.B = B;
            d.T = T;
            d.Hq = d.Hkv = H;
            d.Dqk = s.Dqk;
            d.Dv = s.Dv;
            d.q_stride = d.k_stride = H * s.Dqk;
            d.v_stride = H * s.Dv;
            d.scale = 0.125f;
            d.band = s.band;
            d.band_split = s.band ? 64 : 0;
            const Result r = bench(d, reps);
            const double flops = double(B) * H * T * T * (s.Dqk + s.Dv);
            std::printf("%-32s %10.3f %10.3f %12.1f %12.1f\n", s.name, r.fwd_ms, r.fwdbwd_ms,
                        flops / r.fwd_ms / 1e9, 3.5 * flops / r.fwdbwd_ms / 1e9);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_attention: %s\n", e.what());
        return 1;
    }
    return 0;
}
