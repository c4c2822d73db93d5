// Training checkpoints in HDF5 (layout: docs/file-formats.md). A checkpoint is a bag of named
// arrays plus the run's YAML and step; the trainer decides what goes in. Files are written
// atomically: a crash leaves the previous complete file or nothing, never a half file.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gpt {

// Where one parameter tensor lives inside the flat "params" array (and every float array of the
// same length: adam_m, adam_v, ...). Optional; written to the group /param_index for h5py users.
struct ParamIndexEntry {
    std::string name;             // e.g. "h.0.attn.c_attn.weight"
    int64_t offset = 0;           // first element in the flat array
    std::vector<int64_t> shape;   // row-major; numel = product
};

struct CheckpointData {
    std::string config_yaml;      // the resolved run configuration
    int64_t step = 0;             // optimizer steps completed
    std::vector<std::pair<std::string, std::vector<float>>> arrays;     // params, adam_m, adam_v, ...
    std::vector<std::pair<std::string, std::vector<uint64_t>>> u64;     // rng, loader state, ...
    std::vector<std::pair<std::string, std::vector<double>>> f64;       // spam grad-norm history, ...
    std::vector<std::pair<std::string, std::string>> strings;
    std::vector<ParamIndexEntry> param_index;                           // empty: not written
    std::string source;           // the file it was loaded from (set by load_checkpoint; for messages)

    // Lookup: find_* returns nullptr when absent; get_* throws a gpt::Error naming the entry,
    // the file and what the checkpoint does hold.
    const std::vector<float>* find_array(const std::string& name) const;
    const std::vector<uint64_t>* find_u64(const std::string& name) const;
    const std::vector<double>* find_f64(const std::string& name) const;
    const std::string* find_string(const std::string& name) const;
    const std::vector<float>& get_array(const std::string& name) const;
    const std::vector<uint64_t>& get_u64(const std::string& name) const;
    const std::vector<double>& get_f64(const std::string& name) const;
    const std::string& get_string(const std::string& name) const;
    // Insert or replace.
    void set_array(const std::string& name, std::vector<float> v);
    void set_u64(const std::string& name, std::vector<uint64_t> v);
    void set_f64(const std::string& name, std::vector<double> v);
    void set_string(const std::string& name, std::string v);
};

// Writes `path` atomically (<path>.tmp-<pid>, fsync, rename, fsync of the directory). Names must
// be non-empty, unique within their kind and free of '/'; param_index entries must lie inside
// "params". Throws gpt::Error (and leaves any existing `path` untouched) on failure.
void save_checkpoint(const std::string& path, const CheckpointData& data);

// Reads and validates a checkpoint; a missing file, a file that is not HDF5 or not a checkpoint,
// a missing dataset or one of the wrong rank or type gives a gpt::Error naming file and object.
CheckpointData load_checkpoint(const std::string& path);

// A directory of numbered checkpoints, ckpt_00001234.h5, keeping the newest `keep_last`.
class CheckpointDir {
public:
    CheckpointDir(std::string dir, int keep_last);   // keep_last 0 = keep all; creates dir
    std::string path_for_step(int64_t step) const;   // <dir>/ckpt_00001234.h5
    // Saves path_for_step(data.step), then deletes the oldest checkpoints so that `keep_last`
    // remain among those with step <= data.step (newer ones, from an abandoned run, are kept
    // and reported with a warning).
    void save(const CheckpointData& data);
    // Path of the newest checkpoint that opens as a checkpoint. Ignores *.tmp-* leftovers and
    // removes those whose writer process is gone; skips (with a warning) damaged files.
    std::optional<std::string> latest() const;
    // All complete-looking checkpoints (by file name), sorted by step ascending.
    std::vector<std::pair<int64_t, std::string>> list() const;
    const std::string& dir() const { return dir_; }

private:
    std::string dir_;
    int keep_last_;
};

}  // namespace gpt
