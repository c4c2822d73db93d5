// Data-parallel training over several GPUs (train.gpus = N > 1), launched like torchrun:
// `gpt2 train` becomes a launcher that starts N ranks (`gpt2 train` child processes, one per GPU,
// told their place by environment variables) and waits for them. Each rank holds the whole model
// and reads its own share of every step's micro-batches (TokenLoader's rank/world split, train.
// grad_accum / N micro-batches each, so the global batch stays train.grad_accum micro-batches);
// after the backward the fp32 gradients and the step's loss sums are added over the ranks (NCCL),
// so every rank applies the same update and reports the same loss. Rank 0 writes everything of the
// run (train.log, metrics, checkpoints, samples, result.json); rank r > 0 logs to
// <out_dir>/rank<r>.log. If a rank fails, the launcher stops the others and names it.
#pragma once
#include <string>

#include "model/config.h"
#include "train/trainer.h"

namespace gpt {

struct Ranks {
    int rank = 0, world = 1;
    int device = 0;        // this rank's CUDA ordinal
    std::string id;        // the NCCL communicator id the launcher made (hex)
    // Started by the launcher: the session joins the communicator, even a single rank's (the GPU
    // test runs one rank through NCCL on a one-GPU machine and expects the plain run's bits).
    bool distributed() const { return !id.empty(); }
    bool writes_files() const { return rank == 0; }
};

// This process's place, from the launcher's environment (GPT_RANK, GPT_WORLD, GPT_RANK_DEVICE,
// GPT_NCCL_ID): rank 0 of 1 when GPT_RANK is unset. Error naming the variable when they are
// inconsistent. A rank also arranges to be stopped (SIGTERM) when its launcher dies.
Ranks ranks_from_environment();

// Each rank's micro-batches per step: train.grad_accum / world (validate() checks it divides).
int rank_grad_accum(const TrainConfig& tc, int world);

// The launcher, which train() calls when train.gpus > 1 and this process is not a rank (callable
// with train.gpus = 1 too: one rank, through NCCL): writes <out_dir>/ranks.yaml, starts the ranks
// on GPUs 0 .. N-1 of those visible, waits. Error (after stopping the others) naming the first
// rank that failed, how, and the end of its log.
TrainResult train_data_parallel(const RunConfig& cfg);

}  // namespace gpt
