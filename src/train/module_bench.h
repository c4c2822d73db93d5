// The attention module benchmark (SPEC §7, `gpt2 bench --module`): one attention unit, as the
// model builds it for layer 0 (make_attention_unit: c_attn or the variant's input projections,
// the attention op, the variant's gates, c_proj, all with their biases), on its own: its
// parameters laid out by a ParamTable and initialised as the model initialises them, its
// activations planned by an ActivationPlan, on the configured backend, at the micro-batch
// B = train.batch_size, T = train.seq_len, on random input rows and a random output gradient.
// Timed: forward alone, and forward + backward (parameter gradients and the input gradient).
#pragma once
#include <string>
#include <vector>

#include "train/benchmark.h"

namespace gpt {

struct ModuleBenchResult {
    std::string label;
    std::string module;        // the unit's describe()
    std::string backend;       // e.g. "cuda-bf16 on NVIDIA H100"
    int batch = 0, seq = 0;
    size_t params = 0;         // the unit's parameter count
    // Per call, synchronised before the clock starts and after it stops: median and minimum.
    double fwd_ms = 0, fwd_min_ms = 0, fwdbwd_ms = 0, fwdbwd_min_ms = 0;
    // The same calls queued back to back (one synchronisation at each end), mean per call: what
    // is left once the host's launch and synchronisation latency overlaps the device's work.
    double fwd_queued_ms = 0, fwdbwd_queued_ms = 0;
    std::string error;         // the arm could not run (unsupported option, out of memory, ...)
};

// One row per arm, in order. warmup untimed calls, then reps timed ones (reps >= 1), for the
// forward and again for forward + backward. An arm that fails gets its error in its row.
std::vector<ModuleBenchResult> bench_attention_module(const std::vector<BenchArm>& arms, int warmup, int reps);
// The table: per arm fwd and fwd+bwd ms, both as ratios to the first arm, the queued times, the
// unit's parameters and describe().
std::string format_module_table(const std::vector<ModuleBenchResult>& rows, int warmup, int reps);

}  // namespace gpt
