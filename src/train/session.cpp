#include "train/session.h"

#include <spdlog/spdlog.h>

#include "common/error.h"
#include "train/profiling_ops.h"
#include "train/train_step.h"

namespace gpt {

Backend make_train_backend(const TrainConfig& train, bool profile, int cuda_device) {
    Backend b = make_backend(train.device, train.threads, cuda_device);
    if (profile) b.ops = std::make_unique<ProfilingOps>(std::move(b.ops));
    if (!b.is_cuda && train.precision == "bf16")
        fail("train.precision: bf16 needs the CUDA backend (the CPU reference runs fp32); "
             "use precision=auto or fp32, or device=cuda");
    if (b.is_cuda && train.precision == "fp32")
        fail("train.precision: fp32 training on the GPU is not supported (the CUDA backend is "
             "bf16 with fp32 master weights); use precision=auto or bf16, or device=cpu");
    return b;
}

Session::Session(const RunConfig& cfg, int B, int T, bool with_optimizer, bool profile, const Ranks& ranks)
    : cfg_(cfg), profile_(profile), ranks_(ranks) {
    backend_ = make_train_backend(cfg.train, profile, ranks.device);
    model_ = std::make_unique<GPT>(cfg.model, B, T, cfg.train.recompute);
    plan_ = model_->memory_plan();
    if (with_optimizer) {
        optimizer_ = std::make_unique<Optimizer>(cfg.train.optim, model_->params());
        plan_[Space::Opt] = optimizer_->state_elems();
    }
    backend_.ops->allocate(plan_);
    const std::vector<float> init = model_->params().initial_values(cfg.train.seed);
    backend_.ops->upload(Ten{Space::Param, 0, init.size()}, init.data());
    if (ranks_.distributed()) {
        // Every rank initialises from the same seed; rank 0's copy is still the one all start from.
        backend_.ops->join_ranks(ranks_.rank, ranks_.world, ranks_.id);
        backend_.ops->broadcast(Ten{Space::Param, 0, init.size()}, 0);
    }
    backend_.ops->params_changed();
}

Session::~Session() = default;

StepRunner& Session::runner() {
    GPT_CHECK(optimizer_ != nullptr, "a training step needs a session made with an optimizer");
    if (!runner_) runner_ = std::make_unique<StepRunner>(*this);
    return *runner_;
}

std::string Session::memory_report() const {
    size_t n = 0;
    for (const auto& s : model_->params().specs()) n += s.numel();
    return describe_memory(plan_, model_->activations(), backend_.bytes, n);
}

double Session::planned_gib() const {
    double total = 0;
    for (int s = 0; s < kNumSpaces; ++s) total += double(plan_.elems[s]) * double(backend_.bytes.bytes[s]);
    return total / (1024.0 * 1024.0 * 1024.0);
}

std::vector<float> Session::download(Space s, size_t n) {
    std::vector<float> v(n);
    if (n) backend_.ops->download(Ten{s, 0, n}, v.data());
    return v;
}

void Session::upload(Space s, const std::vector<float>& v) {
    if (!v.empty()) backend_.ops->upload(Ten{s, 0, v.size()}, v.data());
    if (s == Space::Param) backend_.ops->params_changed();
}

}  // namespace gpt
