// A thin RAII layer over the HDF5 C API (only calls that are stable from 1.10 to 1.14): one File
// object, datasets addressed by absolute path ("/arrays/params"), and every failure turned into a
// gpt::Error that names the file and the object. HDF5's own error-stack printing is silenced
// inside these calls because the gpt::Error already says what went wrong.
#pragma once
#include <hdf5.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gpt::h5 {

// The in-memory HDF5 type for T (float, double, int64_t, uint64_t).
template <class T> hid_t native_type();
template <> hid_t native_type<float>();
template <> hid_t native_type<double>();
template <> hid_t native_type<int64_t>();
template <> hid_t native_type<uint64_t>();

class File {
public:
    static File create(const std::string& path);                  // truncates an existing file
    // Throws if missing / not HDF5. use_locking = false skips HDF5's advisory file lock, so that
    // a single writer is not refused while a reader (h5py, a plot script) has the file open.
    static File open(const std::string& path, bool writable, bool use_locking = true);
    File(File&& other) noexcept;
    File& operator=(File&& other) noexcept;
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    ~File();                                                      // closes quietly
    void close();                                                 // closes, throwing on failure
    void flush();

    const std::string& path() const { return path_; }
    bool exists(const std::string& object) const;                 // every component of the path
    void create_group(const std::string& group);                  // tracks link creation order
    // Direct children of a group, in creation order when the group tracks it, else by name.
    std::vector<std::string> members(const std::string& group) const;

    // Contiguous 1-D datasets.
    template <class T> void write(const std::string& name, const std::vector<T>& v) {
        write_raw(name, native_type<T>(), v.data(), {v.size()});
    }
    template <class T> std::vector<T> read(const std::string& name) const {
        auto dims = shape_of(name, native_type<T>(), 1);
        std::vector<T> v(dims[0]);
        read_raw(name, native_type<T>(), v.data(), v.size());
        return v;
    }
    // 2-D int64 (row-major), e.g. parameter shapes.
    void write_2d(const std::string& name, const std::vector<int64_t>& v, size_t rows, size_t cols);
    std::vector<int64_t> read_2d(const std::string& name, size_t* rows, size_t* cols) const;
    // Scalars.
    template <class T> void write_scalar(const std::string& name, T value) {
        write_raw(name, native_type<T>(), &value, {});
    }
    template <class T> T read_scalar(const std::string& name) const {
        shape_of(name, native_type<T>(), 0);
        T value{};
        read_raw(name, native_type<T>(), &value, 1);
        return value;
    }
    // UTF-8 variable-length strings: a scalar, or a 1-D list.
    void write_string(const std::string& name, const std::string& s);
    std::string read_string(const std::string& name) const;
    void write_strings(const std::string& name, const std::vector<std::string>& v);
    std::vector<std::string> read_strings(const std::string& name) const;

    // Attributes on an object ("/" for the root).
    void set_attr(const std::string& object, const std::string& attr, const std::string& value);
    void set_attr(const std::string& object, const std::string& attr, int64_t value);
    std::optional<std::string> attr_string(const std::string& object, const std::string& attr) const;
    std::optional<int64_t> attr_int(const std::string& object, const std::string& attr) const;

    // Chunked 1-D datasets with unlimited length: created empty, grown by append or shrunk.
    template <class T> void create_extendible(const std::string& name, size_t chunk_rows) {
        create_extendible_raw(name, native_type<T>(), chunk_rows);
    }
    template <class T> void append(const std::string& name, const std::vector<T>& v) {
        append_raw(name, native_type<T>(), v.data(), v.size());
    }
    size_t length(const std::string& name) const;                 // 1-D datasets

    [[noreturn]] void fail_at(const std::string& object, const std::string& what) const;

private:
    File(std::string path, hid_t id) : path_(std::move(path)), id_(id) {}
    void write_raw(const std::string& name, hid_t type, const void* data, std::vector<size_t> dims);
    void read_raw(const std::string& name, hid_t type, void* data, size_t count) const;
    // Dimensions of a dataset after checking its rank and its type class against `type`.
    std::vector<size_t> shape_of(const std::string& name, hid_t type, int rank) const;
    void create_extendible_raw(const std::string& name, hid_t type, size_t chunk_rows);
    void append_raw(const std::string& name, hid_t type, const void* data, size_t count);

    std::string path_;
    hid_t id_ = -1;
};

}  // namespace gpt::h5
