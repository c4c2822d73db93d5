#include "train/train_step.h"

#include <vector>

#include "train/schedule.h"

namespace gpt {

StepOutcome train_step(Session& s, int64_t step, const BatchSource& next_batch) {
    const TrainConfig& tc = s.config().train;
    const int B = tc.batch_size, T = tc.seq_len, accum = tc.grad_accum;
    const float dloss = 1.0f / float(size_t(B) * T * accum);
    std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
    StepOutcome out;
    s.ops().zero(Ten{Space::Grad, 0, s.param_elems()});
    for (int micro = 0; micro < accum; ++micro) {
        next_batch(x.data(), y.data());
        s.model().set_batch(s.ops(), x.data(), y.data(), B, T);
        StepContext c{&s.ops(), B, T, true, mix64(tc.seed ^ mix64(uint64_t(step) * 1024 + uint64_t(micro)))};
        out.loss += s.model().forward(c, dloss);
        s.model().backward(c);
    }
    out.loss /= accum;
    const float lr = learning_rate(tc.optim, int(step), tc.max_iters);
    out.info = s.optimizer().step(s.ops(), int(step), lr, tc.max_iters);
    s.ops().params_changed();
    return out;
}

}  // namespace gpt
