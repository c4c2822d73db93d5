// The resolved run configuration. The YAML run file (written by Kconfig, or by hand) maps onto
// these structs key for key: `model.n_layer` is ModelConfig::n_layer, and so on. Parsing and
// validation live in src/train/config.cpp; docs/configuration.md lists every key.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gpt {

enum class AttentionKind { baseline, ra, ra_lowrank, mla, ra_mla };
// Which attention kernels run the shapes both cover (model.attention_impl; CUDA only, the CPU
// ignores it): ours (kernels/cuda/attention_*.cu) or cuDNN's fused SDPA (attention_cudnn.cu) with
// its deterministic backward, or with its faster atomic-dQ backward (not bit-reproducible).
// auto: the one measured faster (docs/performance.md, "cuDNN SDPA"). With attention dropout cuDNN
// draws its own mask (not the CPU's; ours does). With RA's band, cuDNN takes the pairs far from the
// diagonal and ours the band (kernels/cuda/attention_band_split.cuh).
enum class AttentionImpl { auto_select, ours, cudnn, cudnn_nondeterministic };
enum class RactStat { topk, max, entropy, rms };
enum class RactApply { output, weights };
enum class GateScope { per_head, per_layer };
// MLA's computational form (docs/variants.md): the same model and parameters either way.
enum class MlaForm { auto_select, latent, expanded };
// Where same-FLOP RA's fold happens (docs/variants.md): on each token's q, k rows, or once per step
// on c_attn's weights (q̃, k̃ are linear in the block input). The same model either way.
enum class RaLowRankForm { auto_select, rows, weights };
// Where exact RA's fold happens (docs/variants.md): q̃, k̃ written to memory by a pass (what cuDNN
// needs), or built tile by tile inside our attention kernels. The same model either way.
enum class RaFold { auto_select, materialized, kernel };

struct RaConfig {                 // reciprocal attention, SPEC §2.2
    int band = 0;                 // W: 0 = full transpose, else only i-j <= W gets the reciprocal term
    GateScope gates = GateScope::per_head;
    bool learnable = true;
    float g_std = 0.5f;           // init of the standard-score gate
    float g_rec = 0.3f;           // init of the reciprocal-score gate
    int rank = 8;                 // R for ra_lowrank
    RaLowRankForm lowrank_form = RaLowRankForm::auto_select;   // auto: weights unless discoverability
    RaFold fold = RaFold::auto_select;   // exact RA; auto: inside the kernel when attention_impl = ours
    float route_threshold = -1.f; // head-selective routing: heads with g_rec <= tau run baseline; <0 off
    bool discoverability = false; // optional per-key column bias
};

struct MlaConfig {                // multi-head latent attention, SPEC §2.3
    int latent = 128;             // L
    bool shared_maps = false;     // one D->L query map P and one L->D value map U shared by all heads
    float ra_alpha = 0.3f;        // RA+MLA reciprocal gate init (per layer, learnable)
    int ra_band = 64;             // RA+MLA band W
    MlaForm form = MlaForm::auto_select;   // auto: the form with fewer FLOPs (mla_expanded())
};

struct RactConfig {               // cross-token gating from attention-row statistics, SPEC §2.5
    bool enabled = false;
    RactStat stat = RactStat::topk;
    RactApply apply = RactApply::output;
    int topk = 8;
    float alpha = 0.2f;           // for apply=weights
    bool head_average = false;
    bool detach = false;
};

struct ModelConfig {
    std::string preset = "gpt2-tiny";
    int n_layer = 4;
    int n_embd = 128;
    int n_head = 4;
    int vocab_size = 50257;       // real tokens
    int padded_vocab = 50304;     // matrix rows; rows >= vocab_size never win the softmax
    int block_size = 256;         // context length the position table covers
    int mlp_hidden = 0;           // F; 0 means 4 * n_embd
    float dropout = 0.0f;
    AttentionKind attention = AttentionKind::baseline;
    AttentionImpl attention_impl = AttentionImpl::auto_select;
    RaConfig ra;
    MlaConfig mla;
    RactConfig ract;
    bool m1 = false, m2 = false, m3 = false;   // MLP mechanisms, SPEC §2.6
    int m2_rank = 128;

    int head_dim() const { return n_embd / n_head; }
    int hidden() const { return mlp_hidden > 0 ? mlp_hidden : 4 * n_embd; }
};

enum class OptimizerKind { adamw, adamw_spam };

// Activation recomputation (train.recompute): which per-layer activations backward recomputes
// instead of keeping them from the forward pass. Gradients are identical; only memory and time change.
//   gelu:      the MLP hidden GELU(c_fc x) [B*T, F] (recomputed from the kept pre-activation)
//   layernorm: the ln_1 / ln_2 outputs [B*T, E] each (recomputed from the kept block inputs)
enum class Recompute { none, gelu, layernorm, both };
inline bool recompute_gelu(Recompute r) { return r == Recompute::gelu || r == Recompute::both; }
inline bool recompute_layernorm(Recompute r) { return r == Recompute::layernorm || r == Recompute::both; }
inline const char* recompute_name(Recompute r) {
    return r == Recompute::gelu ? "gelu" : r == Recompute::layernorm ? "layernorm" : r == Recompute::both ? "both" : "none";
}

struct OptimConfig {
    OptimizerKind kind = OptimizerKind::adamw;
    float lr = 6e-4f;
    float min_lr = 6e-5f;
    int warmup_iters = 100;
    int lr_decay_iters = 0;       // 0 means max_iters
    float weight_decay = 0.1f;
    float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
    bool amsgrad = false;
    float grad_clip = 1.0f;       // global norm; 0 disables
    bool decay_embeddings = true; // the tied wte is a 2-D weight: decayed unless this is false
    // AdamWSPAM, SPEC §3
    float spam_theta = 50.0f;
    int spam_interval = 1000;
    int spam_warmup = 150;
    float spam_spike_z = 2.0f;
    int spam_window = 100;
    // magnitude pruning, SPEC §3
    float prune_sparsity = 0.0f;  // target; 0 disables
};

struct TrainConfig {
    int batch_size = 8;           // micro-batch B
    int seq_len = 128;            // T (<= block_size)
    int grad_accum = 1;
    int max_iters = 200;
    int eval_interval = 50;
    int eval_batches = 10;
    int log_interval = 1;
    int sample_interval = 0;      // 0: only at the end
    int sample_tokens = 64;
    int checkpoint_interval = 0;  // 0: only at the end
    int keep_checkpoints = 3;
    uint64_t seed = 1337;
    std::string precision = "auto";  // auto | fp32 | bf16 (bf16 requires cuda)
    std::string device = "auto";     // auto | cpu | cuda
    std::string out_dir = "runs/default";
    bool resume = true;
    int threads = 0;                 // CPU threads; 0 = all cores
    bool cuda_graph = true;          // CUDA: capture the training step as a graph (train/train_step.h)
    int gpus = 1;                    // data-parallel ranks, one GPU each (train/data_parallel.h)
    Recompute recompute = Recompute::none;   // activations recomputed in backward (memory vs time)
    OptimConfig optim;
};

struct DataConfig {
    std::string dataset = "sotu";    // a name for reports
    std::string train_path;          // a shard file, a glob pattern, a directory, or a raw .bin
    std::string val_path;
    std::string tokenizer_dir = "assets/gpt2";   // encoder.json + vocab.bpe
};

struct SampleConfig {
    std::string prompt = "\n";
    int max_new_tokens = 128;
    float temperature = 1.0f;
    int top_k = 40;
    uint64_t seed = 42;
};

// One ablation step: a record that overrides parts of the model/optim config (SPEC §4).
struct AblationStep {
    int id = 0;
    std::string name;
    std::string description;
    ModelConfig model;
    OptimConfig optim;
};

struct RunConfig {
    std::string job = "train";       // train | ablation | eval | sample
    ModelConfig model;
    TrainConfig train;
    DataConfig data;
    SampleConfig sample;
    std::vector<int> ablation_steps; // selected steps of the ablation table (empty: none)
    std::string ablation_name;       // gpt2-ratio-ablation, ...
    // Steps run as concurrent child processes (`gpt2 train` per step): 0 = one per visible GPU on
    // CUDA (1 on the CPU); slot k uses GPU ablation_devices[k % size] (empty: all visible GPUs).
    int ablation_jobs = 0;
    std::vector<int> ablation_devices;
    // The quick quality test (job quality, SPEC §6): arms compared with the configured model,
    // "label: key=value ...; label: ...", each trained once per seed.
    std::string quality_arms = "RA exact: model.attention=ra model.ra.band=0; "
                               "RA same-FLOP R=8: model.attention=ra_lowrank model.ra.rank=8; MLA: model.attention=mla";
    std::vector<int> quality_seeds = {1, 2, 3};
};

}  // namespace gpt
