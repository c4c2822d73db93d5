#include "model/memory_plan.h"

#include <fmt/format.h>

#include <map>

namespace gpt {

Ten ActivationPlan::add(Space s, size_t n, const std::string& category, const std::string& name) {
    size_t& top = size_[static_cast<int>(s)];
    size_t off = (top + 63) / 64 * 64;   // aligned for vector loads
    Ten t{s, off, n};
    top = off + n;
    entries_.push_back({category, name, t});
    return t;
}

MemoryPlan ActivationPlan::memory_plan(size_t param_elems) const {
    MemoryPlan p;
    p[Space::Param] = param_elems;
    p[Space::Grad] = param_elems;
    for (Space s : {Space::Act, Space::Stat, Space::Index}) p[s] = size(s);
    return p;
}

static double gib(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

std::string describe_memory(const MemoryPlan& plan, const ActivationPlan& acts,
                            const SpaceBytes& bytes, size_t param_count) {
    std::map<std::string, double> by_cat;
    for (const auto& e : acts.entries()) by_cat[e.category] += double(e.t.n) * double(bytes[e.t.space]);
    std::string out = "memory plan:\n";
    out += fmt::format("  {:<22} {:>10.3f} GiB  ({} parameters)\n", "parameters",
                       gib(double(plan[Space::Param]) * double(bytes[Space::Param])), param_count);
    out += fmt::format("  {:<22} {:>10.3f} GiB\n", "gradients",
                       gib(double(plan[Space::Grad]) * double(bytes[Space::Grad])));
    out += fmt::format("  {:<22} {:>10.3f} GiB\n", "optimizer state",
                       gib(double(plan[Space::Opt]) * double(bytes[Space::Opt])));
    double activations = 0;
    for (const auto& [cat, b] : by_cat) {
        out += fmt::format("  {:<22} {:>10.3f} GiB\n", cat, gib(b));
        activations += b;
    }
    // The part that grows with the micro-batch, and the one train.recompute shrinks.
    out += fmt::format("  {:<22} {:>10.3f} GiB\n", "activations (sum)", gib(activations));
    double total = 0;
    for (int s = 0; s < kNumSpaces; ++s) total += double(plan.elems[s]) * double(bytes.bytes[s]);
    out += fmt::format("  {:<22} {:>10.3f} GiB", "total", gib(total));
    return out;
}

}  // namespace gpt
