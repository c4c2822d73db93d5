#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "data/prepare.h"

namespace gpt {

int cmd_prepare(const RunConfig& cfg, const CommandArgs& args) {
    PrepareOptions o;
    o.inputs = args.inputs;
    o.out_dir = args.out_dir;
    o.val_fraction = args.val_fraction;
    o.tokenizer_dir = args.tokenizer_dir.empty() ? cfg.data.tokenizer_dir : args.tokenizer_dir;
    o.name = args.name;
    spdlog::info("{}", describe(prepare_dataset(o)));
    return 0;
}

}  // namespace gpt
