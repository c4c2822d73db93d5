#include "train/checkpoint.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <filesystem>
#include <set>

#include <spdlog/spdlog.h>

#include "common/error.h"
#include "common/fs_atomic.h"
#include "common/hdf5_file.h"

namespace gpt {
namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "gpt2ra-checkpoint";
constexpr int64_t kFormatVersion = 1;

// The four named-entry kinds share lookup, insertion and HDF5 group handling.
template <class T>
const T* find_entry(const std::vector<std::pair<std::string, T>>& entries, const std::string& name) {
    for (const auto& [key, value] : entries)
        if (key == name) return &value;
    return nullptr;
}

template <class T>
const T& get_entry(const std::vector<std::pair<std::string, T>>& entries, const std::string& name,
                   const char* kind, const std::string& source) {
    if (const T* v = find_entry(entries, name)) return *v;
    std::string held;
    for (const auto& e : entries) held += (held.empty() ? "" : ", ") + e.first;
    fail("checkpoint" + (source.empty() ? std::string() : " '" + source + "'") + " has no " + kind + " '" +
         name + "' (it holds: " + (held.empty() ? "none" : held) +
         "); it was written by a run with different settings: resume with the matching config or start fresh");
}

template <class T>
void set_entry(std::vector<std::pair<std::string, T>>& entries, const std::string& name, T value) {
    for (auto& e : entries)
        if (e.first == name) {
            e.second = std::move(value);
            return;
        }
    entries.emplace_back(name, std::move(value));
}

template <class T>
void check_names(const std::vector<std::pair<std::string, T>>& entries, const char* kind) {
    std::set<std::string> seen;
    for (const auto& e : entries) {
        const std::string& n = e.first;
        if (n.empty() || n == "." || n.find('/') != std::string::npos)
            fail(std::string("checkpoint ") + kind + " name '" + n + "' is invalid: use a non-empty name without '/'");
        if (!seen.insert(n).second)
            fail(std::string("checkpoint ") + kind + " '" + n + "' appears twice: names must be unique");
    }
}

int64_t numel(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

void check_param_index(const std::vector<ParamIndexEntry>& index, const std::vector<float>* params,
                       const std::string& where) {
    if (index.empty()) return;
    if (!params) fail(where + "param_index is given but there is no float array 'params' for it to index");
    for (const auto& e : index) {
        bool bad_shape = std::any_of(e.shape.begin(), e.shape.end(), [](int64_t d) { return d < 0; });
        if (e.name.empty() || e.offset < 0 || bad_shape ||
            e.offset + numel(e.shape) > static_cast<int64_t>(params->size()))
            fail(where + "param_index entry '" + e.name + "' (offset " + std::to_string(e.offset) +
                 ") does not lie inside 'params' of " + std::to_string(params->size()) + " elements");
    }
}

std::string utc_now() {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

void write_param_index(h5::File& f, const std::vector<ParamIndexEntry>& index) {
    size_t rank = 1;
    for (const auto& e : index) rank = std::max(rank, e.shape.size());
    std::vector<std::string> names;
    std::vector<int64_t> offsets, shapes(index.size() * rank, -1);  // -1 pads lower ranks
    for (size_t i = 0; i < index.size(); ++i) {
        names.push_back(index[i].name);
        offsets.push_back(index[i].offset);
        std::copy(index[i].shape.begin(), index[i].shape.end(), shapes.begin() + static_cast<long>(i * rank));
    }
    f.create_group("/param_index");
    f.write_strings("/param_index/names", names);
    f.write("/param_index/offsets", offsets);
    f.write_2d("/param_index/shapes", shapes, index.size(), rank);
}

std::vector<ParamIndexEntry> read_param_index(const h5::File& f) {
    auto names = f.read_strings("/param_index/names");
    auto offsets = f.read<int64_t>("/param_index/offsets");
    size_t rows = 0, cols = 0;
    auto shapes = f.read_2d("/param_index/shapes", &rows, &cols);
    if (offsets.size() != names.size() || rows != names.size())
        f.fail_at("/param_index", "has " + std::to_string(names.size()) + " names but " +
                                      std::to_string(offsets.size()) + " offsets and " + std::to_string(rows) +
                                      " shapes");
    std::vector<ParamIndexEntry> index(names.size());
    for (size_t i = 0; i < rows; ++i) {
        index[i].name = names[i];
        index[i].offset = offsets[i];
        for (size_t c = 0; c < cols && shapes[i * cols + c] >= 0; ++c) index[i].shape.push_back(shapes[i * cols + c]);
    }
    return index;
}

template <class T>
void write_group(h5::File& f, const std::string& group, const std::vector<std::pair<std::string, T>>& entries) {
    f.create_group(group);
    for (const auto& [name, value] : entries) {
        if constexpr (std::is_same_v<T, std::string>)
            f.write_string(group + "/" + name, value);
        else
            f.write(group + "/" + name, value);
    }
}

template <class T>
void read_group(const h5::File& f, const std::string& group, std::vector<std::pair<std::string, T>>& entries) {
    if (!f.exists(group)) return;  // an empty kind may be absent in hand-made files
    for (const auto& name : f.members(group)) {
        if constexpr (std::is_same_v<T, std::string>)
            entries.emplace_back(name, f.read_string(group + "/" + name));
        else
            entries.emplace_back(name, f.read<typename T::value_type>(group + "/" + name));
    }
}

// Opens `path` and checks it is a checkpoint this version can read.
h5::File open_checkpoint(const std::string& path) {
    h5::File f = h5::File::open(path, false);
    auto format = f.attr_string("/", "format");
    if (!format || *format != kFormat)
        fail("'" + path + "' is an HDF5 file but not a gpt2ra checkpoint (root attribute 'format' is " +
             (format ? "'" + *format + "'" : std::string("missing")) + ", expected '" + kFormat + "')");
    int64_t version = f.attr_int("/", "format_version").value_or(0);
    if (version < 1 || version > kFormatVersion)
        fail("'" + path + "' has checkpoint format_version " + std::to_string(version) + "; this program reads 1.." +
             std::to_string(kFormatVersion) + " (use the program version that wrote it)");
    if (!f.exists("/step")) f.fail_at("/step", "is missing: the checkpoint is incomplete");
    return f;
}

bool parse_checkpoint_name(const std::string& filename, int64_t* step) {
    const std::string prefix = "ckpt_", suffix = ".h5";
    if (filename.size() <= prefix.size() + suffix.size() || filename.rfind(prefix, 0) != 0 ||
        filename.compare(filename.size() - suffix.size(), suffix.size(), suffix) != 0)
        return false;
    std::string digits = filename.substr(prefix.size(), filename.size() - prefix.size() - suffix.size());
    if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return false;
    *step = std::stoll(digits);
    return true;
}

bool process_is_gone(long pid) { return pid <= 0 || (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH); }

}  // namespace

const std::vector<float>* CheckpointData::find_array(const std::string& n) const { return find_entry(arrays, n); }
const std::vector<uint64_t>* CheckpointData::find_u64(const std::string& n) const { return find_entry(u64, n); }
const std::vector<double>* CheckpointData::find_f64(const std::string& n) const { return find_entry(f64, n); }
const std::string* CheckpointData::find_string(const std::string& n) const { return find_entry(strings, n); }
const std::vector<float>& CheckpointData::get_array(const std::string& n) const {
    return get_entry(arrays, n, "float array", source);
}
const std::vector<uint64_t>& CheckpointData::get_u64(const std::string& n) const {
    return get_entry(u64, n, "u64 array", source);
}
const std::vector<double>& CheckpointData::get_f64(const std::string& n) const {
    return get_entry(f64, n, "f64 array", source);
}
const std::string& CheckpointData::get_string(const std::string& n) const {
    return get_entry(strings, n, "string", source);
}
void CheckpointData::set_array(const std::string& n, std::vector<float> v) { set_entry(arrays, n, std::move(v)); }
void CheckpointData::set_u64(const std::string& n, std::vector<uint64_t> v) { set_entry(u64, n, std::move(v)); }
void CheckpointData::set_f64(const std::string& n, std::vector<double> v) { set_entry(f64, n, std::move(v)); }
void CheckpointData::set_string(const std::string& n, std::string v) { set_entry(strings, n, std::move(v)); }

void save_checkpoint(const std::string& path, const CheckpointData& data) {
    check_names(data.arrays, "float array");
    check_names(data.u64, "u64 array");
    check_names(data.f64, "f64 array");
    check_names(data.strings, "string");
    check_param_index(data.param_index, data.find_array("params"), "cannot save checkpoint '" + path + "': ");

    write_file_atomically(path, [&](const std::string& tmp) {
        h5::File f = h5::File::create(tmp);
        f.set_attr("/", "format", kFormat);
        f.set_attr("/", "format_version", kFormatVersion);
        f.set_attr("/", "written_utc", utc_now());
        f.write_scalar<int64_t>("/step", data.step);
        f.write_string("/config_yaml", data.config_yaml);
        write_group(f, "/arrays", data.arrays);
        write_group(f, "/u64", data.u64);
        write_group(f, "/f64", data.f64);
        write_group(f, "/strings", data.strings);
        if (!data.param_index.empty()) write_param_index(f, data.param_index);
        f.flush();
        f.close();
    });
}

CheckpointData load_checkpoint(const std::string& path) {
    try {
        h5::File f = open_checkpoint(path);
        CheckpointData d;
        d.source = path;
        d.step = f.read_scalar<int64_t>("/step");
        d.config_yaml = f.read_string("/config_yaml");
        read_group(f, "/arrays", d.arrays);
        read_group(f, "/u64", d.u64);
        read_group(f, "/f64", d.f64);
        read_group(f, "/strings", d.strings);
        if (f.exists("/param_index")) d.param_index = read_param_index(f);
        check_param_index(d.param_index, d.find_array("params"), path + ": ");
        return d;
    } catch (const Error& e) {
        fail(std::string("cannot load checkpoint: ") + e.what() +
             ". Point the run at another checkpoint, or remove this file to resume from an older one.");
    }
}

CheckpointDir::CheckpointDir(std::string dir, int keep_last) : dir_(std::move(dir)), keep_last_(keep_last) {
    if (keep_last_ < 0)
        fail("keep_checkpoints is " + std::to_string(keep_last) + ": use 0 (keep all) or a positive count");
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (ec) fail("cannot create checkpoint directory '" + dir_ + "': " + ec.message());
}

std::string CheckpointDir::path_for_step(int64_t step) const {
    char name[40];
    std::snprintf(name, sizeof name, "ckpt_%08lld.h5", static_cast<long long>(step));
    return (fs::path(dir_) / name).string();
}

std::vector<std::pair<int64_t, std::string>> CheckpointDir::list() const {
    std::vector<std::pair<int64_t, std::string>> found;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir_, ec)) {
        int64_t step = 0;
        if (entry.is_regular_file(ec) && parse_checkpoint_name(entry.path().filename().string(), &step))
            found.emplace_back(step, entry.path().string());
    }
    std::sort(found.begin(), found.end());
    return found;
}

void CheckpointDir::save(const CheckpointData& data) {
    const std::string path = path_for_step(data.step);
    save_checkpoint(path, data);
    std::vector<std::string> older;
    for (const auto& [step, p] : list()) {
        if (step <= data.step)
            older.push_back(p);
        else
            spdlog::warn("checkpoint directory '{}' holds {} (newer than step {}, from an earlier run); "
                         "a later resume would pick it: remove it if this run should continue instead",
                         dir_, p, data.step);
    }
    if (keep_last_ == 0 || static_cast<int>(older.size()) <= keep_last_) return;
    for (size_t i = 0; i + static_cast<size_t>(keep_last_) < older.size(); ++i) {
        std::error_code ec;
        fs::remove(older[i], ec);
        if (ec) spdlog::warn("cannot delete old checkpoint '{}': {}", older[i], ec.message());
    }
}

std::optional<std::string> CheckpointDir::latest() const {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir_, ec)) {
        const std::string name = entry.path().filename().string();
        long pid = 0;
        if (name.rfind("ckpt_", 0) == 0 && is_temp_path(name, &pid) && pid != ::getpid() && process_is_gone(pid)) {
            spdlog::info("removing leftover of an interrupted checkpoint write: {}", entry.path().string());
            fs::remove(entry.path(), ec);
        }
    }
    auto all = list();
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
        try {
            open_checkpoint(it->second);
            return it->second;
        } catch (const Error& e) {
            spdlog::warn("skipping damaged checkpoint: {}", e.what());
        }
    }
    return std::nullopt;
}

}  // namespace gpt
