#include "train/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"
#include "common/rng.h"

namespace gpt {

// Draw one token id from logits with temperature and top-k (k <= 0: all tokens).
static int32_t draw(std::vector<float>& logits, float temperature, int top_k, Rng& rng) {
    const int V = int(logits.size());
    if (temperature <= 0.f)
        return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    std::vector<int32_t> idx(V);
    std::iota(idx.begin(), idx.end(), 0);
    int k = (top_k > 0 && top_k < V) ? top_k : V;
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    const float mx = logits[idx[0]];
    std::vector<double> p(k);
    double z = 0;
    for (int i = 0; i < k; ++i) z += p[i] = std::exp(double(logits[idx[i]] - mx) / temperature);
    double u = double(rng.uniform()) * z;
    for (int i = 0; i < k; ++i) {
        if ((u -= p[i]) <= 0) return idx[i];
    }
    return idx[k - 1];
}

std::string generate(Session& s, const Tokenizer& tok, const std::string& prompt, int max_new_tokens,
                     float temperature, int top_k, uint64_t seed) {
    std::vector<int32_t> ids = tok.encode(prompt);
    if (ids.empty()) ids.push_back(tok.eot());
    const size_t prompt_len = ids.size();
    const int maxT = s.model().max_seq();
    Rng rng(seed);
    for (int i = 0; i < max_new_tokens; ++i) {
        const size_t start = ids.size() > size_t(maxT) ? ids.size() - maxT : 0;
        const int T = int(ids.size() - start);
        s.model().set_batch(s.ops(), ids.data() + start, nullptr, 1, T);
        StepContext c{&s.ops(), 1, T, false, 0};
        std::vector<float> logits = s.model().last_logits(c);
        ids.push_back(draw(logits, temperature, top_k, rng));
    }
    return tok.decode(std::vector<int32_t>(ids.begin() + long(prompt_len), ids.end()));
}

}  // namespace gpt
