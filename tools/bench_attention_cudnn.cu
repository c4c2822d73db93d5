// cuDNN's fused SDPA (kernels/cuda/attention_cudnn.cu, backend graph API) against our flash
// attention at the seeds' shape B=8, H=12, T=1024 (bf16, causal), D=64 and D=128:
//   1. the plans cuDNN builds (engine, numerical notes, workspace) or the status that refused them;
//   2. agreement with ours (relative L2 of out, lse, dq, dk, dv; ours is checked against the CPU
//      by tests/gpu) and whether reruns of each backward are bit-identical;
//   3. timing with bench_attention's protocol: 300 ms warm-up, CUDA events around batches of 10
//      calls, median over `reps` batches, 4 rotating input sets (more than L2).
// Usage: bench_attention_cudnn [reps]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/rng.h"
#include "cuda/attention_cudnn.cuh"
#include "cuda/cuda_kernels.cuh"

using namespace gpt;

namespace {

__global__ void fill_random(__nv_bfloat16* x, size_t n, uint64_t seed) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
        x[i] = __float2bfloat16(2.f * uniform01(seed, i) - 1.f);
}

template <class T>
T* device(size_t n) {
    T* p = nullptr;
    GPT_CUDA(cudaMalloc(&p, n * sizeof(T)));
    GPT_CUDA(cudaMemset(p, 0, n * sizeof(T)));
    return p;
}

__nv_bfloat16* random_bf16(size_t n, uint64_t seed) {
    __nv_bfloat16* p = device<__nv_bfloat16>(n);
    fill_random<<<1024, 256>>>(p, n, seed);
    GPT_CUDA(cudaGetLastError());
    return p;
}

std::vector<float> host(const __nv_bfloat16* p, size_t n) {
    std::vector<__nv_bfloat16> h(n);
    GPT_CUDA(cudaMemcpy(h.data(), p, n * 2, cudaMemcpyDeviceToHost));
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = __bfloat162float(h[i]);
    return f;
}
std::vector<float> host(const float* p, size_t n) {
    std::vector<float> f(n);
    GPT_CUDA(cudaMemcpy(f.data(), p, n * 4, cudaMemcpyDeviceToHost));
    return f;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        if (!std::isfinite(a[i])) return INFINITY;
        num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
        den += double(ref[i]) * ref[i];
    }
    return std::sqrt(num / std::max(den, 1e-30));
}

struct Set {   // one input set and its outputs
    __nv_bfloat16 *q, *k, *v, *out, *dout, *dq, *dk, *dv;
    float* lse;
};

double median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Median ms per call of run(i) over `reps` batches of 10, after 300 ms of warm-up.
double time_ms(const std::function<void(int)>& run, int reps, cudaStream_t st) {
    cudaEvent_t e0, e1;
    GPT_CUDA(cudaEventCreate(&e0));
    GPT_CUDA(cudaEventCreate(&e1));
    float warm = 0.f;
    GPT_CUDA(cudaEventRecord(e0, st));
    for (int i = 0; warm < 300.f; ++i) {
        run(i);
        if (i % 20 == 19) {
            GPT_CUDA(cudaEventRecord(e1, st));
            GPT_CUDA(cudaEventSynchronize(e1));
            GPT_CUDA(cudaEventElapsedTime(&warm, e0, e1));
        }
    }
    const int kBatch = 10;
    std::vector<float> ms(reps);
    for (int r = 0; r < reps; ++r) {
        GPT_CUDA(cudaEventRecord(e0, st));
        for (int j = 0; j < kBatch; ++j) run(r * kBatch + j);
        GPT_CUDA(cudaEventRecord(e1, st));
        GPT_CUDA(cudaEventSynchronize(e1));
        GPT_CUDA(cudaEventElapsedTime(&ms[r], e0, e1));
        ms[r] /= kBatch;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return median(ms);
}

void run_shape(int D, int reps) {
    const int B = 8, H = 12, T = 1024;
    AttnDims d;
    d.B = B;
    d.T = T;
    d.Hq = d.Hkv = H;
    d.Dqk = d.Dv = D;
    d.q_stride = d.k_stride = d.v_stride = H * D;
    d.scale = 1.f / std::sqrt(float(D));
    const size_t rows = size_t(B) * T, n = rows * H * D, nl = size_t(B) * H * T;
    std::printf("\n== B=%d H=%d T=%d D=%d ==\n", B, H, T, D);

    cuda::CudnnAttention cud;
    const bool ok_f = cud.prepare_fwd(d);
    std::printf("cudnn fwd plan: %s\n", cud.describe(d, false, false).c_str());
    const bool ok_bd = cud.prepare_bwd(d, true);
    std::printf("cudnn bwd (deterministic graph) plan: %s\n", cud.describe(d, true, true).c_str());
    const bool ok_bn = cud.prepare_bwd(d, false);
    std::printf("cudnn bwd (atomic dQ graph) plan: %s\n", cud.describe(d, true, false).c_str());
    std::fflush(stdout);

    const int kSets = 4;
    std::vector<Set> sets(kSets);
    for (int s = 0; s < kSets; ++s) {
        Set& x = sets[s];
        x.q = random_bf16(n, 10 * s + 1);
        x.k = random_bf16(n, 10 * s + 2);
        x.v = random_bf16(n, 10 * s + 3);
        x.dout = random_bf16(n, 10 * s + 4);
        x.out = device<__nv_bfloat16>(n);
        x.dq = device<__nv_bfloat16>(n);
        x.dk = device<__nv_bfloat16>(n);
        x.dv = device<__nv_bfloat16>(n);
        x.lse = device<float>(nl);
    }
    // Our backward's scratch (delta per row; newer kernels also an fp32 dQ and tile counters):
    // sized generously so the tool builds against either interface.
    float* delta = device<float>(size_t(B) * H * T * (D + 8) + (1 << 20));
    size_t ws_bytes = 256;
    if (ok_f) ws_bytes = std::max(ws_bytes, cud.fwd_workspace_bytes(d));
    if (ok_bd) ws_bytes = std::max(ws_bytes, cud.bwd_workspace_bytes(d, true));
    if (ok_bn) ws_bytes = std::max(ws_bytes, cud.bwd_workspace_bytes(d, false));
    void* ws = device<char>(ws_bytes);
    cudaStream_t st;
    GPT_CUDA(cudaStreamCreate(&st));

    auto ours_fwd = [&](Set& x) { cuda::attention_fwd(x.out, x.lse, x.q, x.k, x.v, d, st); };
    auto ours_bwd = [&](Set& x) {
        cuda::attention_bwd(x.dq, x.dk, x.dv, x.dout, x.out, x.lse, x.q, x.k, x.v, d, delta, nullptr, st);
    };
    auto cud_fwd = [&](Set& x) { cud.fwd(x.out, x.lse, x.q, x.k, x.v, d, ws, st); };
    auto cud_bwd = [&](Set& x, bool det) {
        cud.bwd(x.dq, x.dk, x.dv, x.dout, x.out, x.lse, x.q, x.k, x.v, d, det, ws, st);
    };

    // --- agreement with ours, and bit-identical reruns -----------------------------------------
    Set& x = sets[0];
    ours_fwd(x);
    GPT_CUDA(cudaStreamSynchronize(st));
    const auto out0 = host(x.out, n), lse0 = host(x.lse, nl);
    ours_bwd(x);
    GPT_CUDA(cudaStreamSynchronize(st));
    const auto dq0 = host(x.dq, n), dk0 = host(x.dk, n), dv0 = host(x.dv, n);
    if (ok_f) {
        cud_fwd(x);
        GPT_CUDA(cudaStreamSynchronize(st));
        std::printf("cudnn fwd vs ours: out rel L2 %.2e, lse rel L2 %.2e (lse[0..2] cudnn %.5f %.5f %.5f ours %.5f %.5f %.5f)\n",
                    rel_l2(host(x.out, n), out0), rel_l2(host(x.lse, nl), lse0), host(x.lse, 3)[0],
                    host(x.lse, 3)[1], host(x.lse, 3)[2], lse0[0], lse0[1], lse0[2]);
        // back to ours' out/lse so both backwards see the same inputs
        ours_fwd(x);
    }
    for (int det = 1; det >= 0; --det) {
        if (!(det ? ok_bd : ok_bn)) continue;
        std::vector<float> first[3];
        bool same = true;
        for (int rep = 0; rep < 3; ++rep) {
            cud_bwd(x, det);
            GPT_CUDA(cudaStreamSynchronize(st));
            const std::vector<float> g[3] = {host(x.dq, n), host(x.dk, n), host(x.dv, n)};
            if (rep == 0) {
                std::printf("cudnn bwd (%s) vs ours: dq %.2e dk %.2e dv %.2e\n", det ? "deterministic" : "atomic dQ",
                            rel_l2(g[0], dq0), rel_l2(g[1], dk0), rel_l2(g[2], dv0));
                for (int i = 0; i < 3; ++i) first[i] = g[i];
            } else {
                for (int i = 0; i < 3; ++i)
                    same = same && std::memcmp(first[i].data(), g[i].data(), n * 4) == 0;
            }
        }
        std::printf("cudnn bwd (%s): 3 reruns bit-identical: %s; engine nondeterministic note: %s\n",
                    det ? "deterministic" : "atomic dQ", same ? "yes" : "NO",
                    cud.bwd_engine_nondeterministic(d, det) ? "yes" : "no");
    }
    std::fflush(stdout);

    // --- timing ---------------------------------------------------------------------------------
    const double flops = double(B) * H * T * T * (2 * D);   // causal fwd; fwd+bwd = 3.5x
    auto report = [&](const char* name, double f, double fb) {
        std::printf("%-28s fwd %.3f ms (%.0f TF/s)   fwd+bwd %.3f ms (%.0f TF/s)\n", name, f, flops / f / 1e9, fb,
                    3.5 * flops / fb / 1e9);
    };
    if (reps <= 0) return;
    const double of = time_ms([&](int i) { ours_fwd(sets[i % kSets]); }, reps, st);
    const double ofb = time_ms([&](int i) { ours_fwd(sets[i % kSets]); ours_bwd(sets[i % kSets]); }, reps, st);
    report("ours", of, ofb);
    if (ok_f) {
        const double cf = time_ms([&](int i) { cud_fwd(sets[i % kSets]); }, reps, st);
        if (ok_bd)
            report("cudnn (deterministic bwd)", cf,
                   time_ms([&](int i) { cud_fwd(sets[i % kSets]); cud_bwd(sets[i % kSets], true); }, reps, st));
        if (ok_bn)
            report("cudnn (atomic-dQ bwd)", cf,
                   time_ms([&](int i) { cud_fwd(sets[i % kSets]); cud_bwd(sets[i % kSets], false); }, reps, st));
    }
    std::fflush(stdout);
    for (Set& s : sets)
        for (void* p : {(void*)s.q, (void*)s.k, (void*)s.v, (void*)s.out, (void*)s.dout, (void*)s.dq, (void*)s.dk,
                        (void*)s.dv, (void*)s.lse})
            cudaFree(p);
    cudaFree(delta);
    cudaFree(ws);
    cudaStreamDestroy(st);
}

}  // namespace

int main(int argc, char** argv) {
    const int reps = argc > 1 ? std::atoi(argv[1]) : 100;
    try {
        cudaDeviceProp prop{};
        GPT_CUDA(cudaGetDeviceProperties(&prop, 0));
        std::printf("bench_attention_cudnn: %s, cuDNN compiled in: %s, runtime version %d, median of %d batches of 10\n",
                    prop.name, cuda::cudnn_compiled_in() ? "yes" : "no", cuda::cudnn_runtime_version(), reps);
        run_shape(64, reps);
        run_shape(128, reps);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_attention_cudnn: %s\n", e.what());
        return 1;
    }
    return 0;
}
