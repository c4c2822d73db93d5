#include "train/profiling_ops.h"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

namespace gpt {

std::string ProfilingOps::report(int steps) const {
    std::vector<std::pair<std::string, Total>> rows(totals_.begin(), totals_.end());
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
    double sum = 0;
    for (const auto& r : rows) sum += r.second.seconds;
    std::string s = fmt::format("  {:<22} {:>8} {:>12} {:>7}\n", "operation", "calls", "ms/step", "share");
    for (const auto& [op, t] : rows)
        s += fmt::format("  {:<22} {:>8} {:>12.3f} {:>6.1f}%\n", op, t.calls / std::max(1, steps),
                         1e3 * t.seconds / std::max(1, steps), 100 * t.seconds / std::max(sum, 1e-12));
    s += fmt::format("  {:<22} {:>8} {:>12.3f}\n", "total (synchronised)", "", 1e3 * sum / std::max(1, steps));
    return s;
}

}  // namespace gpt
