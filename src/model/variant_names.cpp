#include "model/variant_names.h"

namespace gpt {

const char* attention_kind_str(AttentionKind k) {
    switch (k) {
        case AttentionKind::baseline: return "baseline";
        case AttentionKind::ra: return "ra";
        case AttentionKind::ra_lowrank: return "ra_lowrank";
        case AttentionKind::mla: return "mla";
        case AttentionKind::ra_mla: return "ra_mla";
    }
    return "?";
}

const char* ract_stat_name(RactStat s) {
    switch (s) {
        case RactStat::topk: return "topk";
        case RactStat::max: return "max";
        case RactStat::entropy: return "entropy";
        case RactStat::rms: return "rms";
    }
    return "?";
}

}  // namespace gpt
