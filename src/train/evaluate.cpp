#include "train/evaluate.h"

#include <vector>

namespace gpt {

double evaluate(Session& s, TokenLoader& val, int batches, int B, int T) {
    val.reset();
    std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
    StepContext c{&s.ops(), B, T, false, 0};
    // Data-parallel: rank r takes batches r, r + N, ... of the loader's rank/world split (the same
    // windows as one process when N divides `batches`); the sums are added over the ranks.
    const Ranks& ranks = s.ranks();
    const int mine = batches / ranks.world + (ranks.rank < batches % ranks.world ? 1 : 0);
    double sum = 0;
    for (int i = 0; i < mine; ++i) {
        val.next_batch(x.data(), y.data());
        s.model().set_batch(s.ops(), x.data(), y.data(), B, T);
        sum += s.model().forward(c, 0.f);
    }
    sum = s.ops().allreduce_value(sum);
    return batches > 0 ? sum / batches : 0.0;
}

}  // namespace gpt
