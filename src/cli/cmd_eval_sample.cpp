// eval and sample: both load trained weights into a fresh session.
#include <cmath>
#include <iostream>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "train/evaluate.h"
#include "train/sampler.h"
#include "train/weights.h"

namespace gpt {

int cmd_eval(const RunConfig& cfg, const CommandArgs& args) {
    const std::string path = resolve_checkpoint(cfg, args.checkpoint);
    Session s(cfg, cfg.train.batch_size, cfg.train.seq_len, false);
    const int64_t step = load_weights(s, path);
    TokenLoader val(cfg.data.val_path, cfg.train.batch_size, cfg.train.seq_len,
                    validation_seed(cfg.train), 0, 1, cfg.model.vocab_size);
    const double loss = evaluate(s, val, cfg.train.eval_batches, cfg.train.batch_size, cfg.train.seq_len);
    spdlog::info("{} (step {}): val loss {:.4f}, perplexity {:.2f} over {} batches of {}x{}", path, step,
                 loss, std::exp(loss), cfg.train.eval_batches, cfg.train.batch_size, cfg.train.seq_len);
    std::cout << "val_loss " << loss << "\nval_ppl " << std::exp(loss) << "\n";
    return 0;
}

int cmd_sample(const RunConfig& cfg, const CommandArgs& args) {
    const std::string path = resolve_checkpoint(cfg, args.checkpoint);
    const SampleConfig& sc = cfg.sample;
    Session s(cfg, 1, cfg.train.seq_len, false);
    load_weights(s, path);
    const Tokenizer tok = Tokenizer::load(cfg.data.tokenizer_dir);
    const std::string prompt = args.prompt.empty() ? sc.prompt : args.prompt;
    const std::string text =
        generate(s, tok, prompt, args.tokens >= 0 ? args.tokens : sc.max_new_tokens,
                 args.temperature >= 0 ? args.temperature : sc.temperature, args.top_k >= 0 ? args.top_k : sc.top_k,
                 args.seed >= 0 ? uint64_t(args.seed) : sc.seed);
    std::cout << prompt << text << std::endl;
    return 0;
}

}  // namespace gpt
