#include <iostream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "model/gpt.h"
#include "train/optimizer.h"

namespace gpt {

// The model and its memory plan without allocating anything (works for gpt2-xl on a laptop).
int cmd_info(const RunConfig& cfg) {
    GPT model(cfg.model, cfg.train.batch_size, cfg.train.seq_len, cfg.train.recompute);
    std::cout << model.describe() << "\n";
    for (const auto& p : model.params().specs()) {
        std::string shape;
        for (auto d : p.shape) {
            if (!shape.empty()) shape += " x ";
            shape += std::to_string(d);
        }
        std::cout << fmt::format("  {:<32} {:<16} decay={}\n", p.name, shape, p.decay ? "yes" : "no");
    }
    SpaceBytes cpu;
    SpaceBytes cuda;
    cuda.bytes[static_cast<int>(Space::Act)] = 2;
    MemoryPlan plan = model.memory_plan();
    plan[Space::Opt] = Optimizer(cfg.train.optim, model.params()).state_elems();
    size_t n = 0;
    for (const auto& p : model.params().specs()) n += p.numel();
    std::cout << "CPU (fp32) " << describe_memory(plan, model.activations(), cpu, n) << "\n";
    std::cout << "CUDA (bf16 activations) " << describe_memory(plan, model.activations(), cuda, n) << "\n";
    return 0;
}

}  // namespace gpt
