// Turns the data path a user gives (data.train_path / data.val_path) into a list of token files.
//
// Rules, in order:
// 1. A path with a glob character (* ? [) is a pattern: every regular file it matches, sorted by
//    name (byte order), e.g. "data/fineweb10B/fineweb_train_*.bin".
// 2. A directory: its *.bin files (not recursive), sorted by name. With `split` set ("train" or
//    "val"), only files whose name has that word as a part separated by _ . or - (so
//    "sotu_train_000000.bin" and nanoGPT's "train.bin" are "train"). Without `split`, a directory
//    that holds both train and val files is an error (which one was meant?).
// 3. Anything else is a single file, which must exist.
// Nothing found is a gpt::Error naming the path or pattern.
#pragma once
#include <string>
#include <vector>

namespace gpt {

std::vector<std::string> resolve_token_files(const std::string& path_or_pattern, const std::string& split = "");

}  // namespace gpt
