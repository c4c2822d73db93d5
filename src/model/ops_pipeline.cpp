// The default step-pipeline hooks of Ops (model/ops.h): synchronous host code built on the other
// Ops methods. The CPU backend uses them as they are; they also serve any decorator that does not
// forward them.
#include <cmath>
#include <string>
#include <vector>

#include "common/error.h"
#include "model/ops.h"

namespace gpt {

int32_t* Ops::stage_host(int slot, size_t n) {
    GPT_CHECK(slot == 0 || slot == 1, "stage_host: slot must be 0 or 1");
    host_stage_[slot].resize(n);
    return host_stage_[slot].data();
}

void Ops::stage_take(Ten dst, int slot, size_t off) {
    GPT_CHECK(off + dst.n <= host_stage_[slot].size(), "stage_take: past the staged batch");
    upload_index(dst, host_stage_[slot].data() + off);
}

void Ops::scalars_reserve(int n) { host_scalars_.assign(size_t(n), 0.0); }

void Ops::scalars_zero(int first, int n) {
    GPT_CHECK(first >= 0 && first + n <= int(host_scalars_.size()), "scalars_zero: past the reserved scalars");
    for (int i = first; i < first + n; ++i) host_scalars_[size_t(i)] = 0.0;
}

void Ops::scalar_add_sum(int slot, Ten t) {
    std::vector<float> v(t.n);
    if (t.n) download(t, v.data());
    double sum = 0;
    for (float x : v) sum += x;   // in order: the loss the step used to sum on the host
    host_scalars_.at(size_t(slot)) += sum;
}

void Ops::scalar_sum_squares(int slot, Ten t) { host_scalars_.at(size_t(slot)) = sum_squares(t); }

double Ops::scalar_read(int slot) { return host_scalars_.at(size_t(slot)); }

void Ops::scalars_fetch(int, int first, int n, double* out) {
    GPT_CHECK(first >= 0 && first + n <= int(host_scalars_.size()), "scalars_fetch: past the reserved scalars");
    for (int i = 0; i < n; ++i) out[i] = host_scalars_[size_t(first + i)];
}

void Ops::adamw_clipped(const std::vector<AdamWTensor>& ts, const AdamWHyper& h, int norm_sq_slot, float clip) {
    const double norm = std::sqrt(scalar_read(norm_sq_slot));
    AdamWHyper c = h;
    c.grad_scale = clip > 0 && norm > clip ? float(clip / (norm + 1e-6)) : 1.f;
    if (std::isfinite(norm)) adamw(ts, c);
}

bool Ops::graph_end(std::string* why) {
    if (why) *why = name() + " does not capture graphs";
    return false;
}

void Ops::join_ranks(int rank, int world, const std::string& id) {
    (void)rank, (void)id;
    fail("train.gpus: data-parallel training over " + std::to_string(world) + " ranks runs on the CUDA "
         "backend (NCCL), but this run uses " + name() + "; set train.device to cuda or train.gpus to 1");
}

}  // namespace gpt
