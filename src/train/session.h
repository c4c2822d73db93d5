// A model on a backend, ready to run: the backend chosen, the model built for a micro-batch
// shape, all memory allocated once (parameters, gradients, optimizer state, activations), and the
// parameters initialised. train, eval, sample and check all start from one.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/backend.h"
#include "model/config.h"
#include "model/gpt.h"
#include "train/data_parallel.h"
#include "train/optimizer.h"

namespace gpt {

class StepRunner;

// The backend of train.device / train.threads, checked against train.precision (Error: bf16 on
// the CPU, fp32 on CUDA); profile wraps it in ProfilingOps. Sessions and the module benchmark.
Backend make_train_backend(const TrainConfig& train, bool profile = false, int cuda_device = 0);

class Session {
public:
    // B, T: the largest micro-batch this session will run.
    // profile: wrap the backend in ProfilingOps (per-operation timing, off until enabled).
    // ranks: this process's place in a data-parallel run (train/data_parallel.h): the session runs
    // on ranks.device, joins the others and starts from rank 0's parameters.
    Session(const RunConfig& cfg, int B, int T, bool with_optimizer, bool profile = false,
            const Ranks& ranks = {});
    ~Session();

    Ops& ops() { return *backend_.ops; }
    GPT& model() { return *model_; }
    Optimizer& optimizer() { return *optimizer_; }
    const RunConfig& config() const { return cfg_; }
    const Backend& backend() const { return backend_; }
    bool profiling() const { return profile_; }
    const Ranks& ranks() const { return ranks_; }
    // The training-step runner (train/train_step.h), made on first use for the configured
    // micro-batch; the session must have an optimizer.
    StepRunner& runner();
    std::string memory_report() const;
    double planned_gib() const;

    std::vector<float> download(Space s, size_t n);
    void upload(Space s, const std::vector<float>& v);
    size_t param_elems() const { return model_->params().total(); }
    size_t opt_elems() const { return optimizer_ ? optimizer_->state_elems() : 0; }

private:
    RunConfig cfg_;
    Backend backend_;
    std::unique_ptr<GPT> model_;
    std::unique_ptr<Optimizer> optimizer_;
    MemoryPlan plan_;
    bool profile_ = false;
    Ranks ranks_;
    std::unique_ptr<StepRunner> runner_;   // declared last: destroyed before the backend
};

}  // namespace gpt
