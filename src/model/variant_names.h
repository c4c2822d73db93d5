// Config enum values as they are spelled in the YAML run file (for messages and descriptions).
#pragma once
#include "model/config.h"

namespace gpt {

const char* attention_kind_str(AttentionKind k);
const char* ract_stat_name(RactStat s);

}  // namespace gpt
