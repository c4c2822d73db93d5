#include "common/hdf5_file.h"

#include <filesystem>
#include <utility>

#include "common/error.h"

namespace gpt::h5 {
namespace {

// Owns one HDF5 identifier and closes it with the matching H5?close.
class Handle {
public:
    Handle(hid_t id, herr_t (*closer)(hid_t)) : id_(id), closer_(closer) {}
    Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, -1)), closer_(o.closer_) {}
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() {
        if (id_ >= 0) closer_(id_);
    }
    hid_t get() const { return id_; }
    bool ok() const { return id_ >= 0; }

private:
    hid_t id_;
    herr_t (*closer_)(hid_t);
};

// Silences HDF5's automatic error-stack printing for the scope of one call.
class Quiet {
public:
    Quiet() {
        H5Eget_auto2(H5E_DEFAULT, &fn_, &data_);
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    }
    ~Quiet() { H5Eset_auto2(H5E_DEFAULT, fn_, data_); }

private:
    H5E_auto2_t fn_ = nullptr;
    void* data_ = nullptr;
};

// The innermost message on HDF5's error stack, e.g. "unable to lock file".
std::string hdf5_reason() {
    std::string reason;
    H5Ewalk2(
        H5E_DEFAULT, H5E_WALK_DOWNWARD,
        [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
            if (e && e->desc && *e->desc) *static_cast<std::string*>(out) = e->desc;
            return 0;
        },
        &reason);
    return reason;
}

Handle string_type() {
    Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(t.get(), H5T_VARIABLE);
    H5Tset_cset(t.get(), H5T_CSET_UTF8);
    return t;
}

Handle intermediate_groups_lcpl() {
    Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl.get(), 1);
    return lcpl;
}

const char* class_name(H5T_class_t c) {
    switch (c) {
        case H5T_INTEGER: return "integer";
        case H5T_FLOAT: return "floating-point";
        case H5T_STRING: return "string";
        default: return "non-numeric";
    }
}

// Reads n strings (variable or fixed length) from an attribute or a dataset.
template <class ReadFn>
std::vector<std::string> read_string_values(hid_t stored_type, size_t n, ReadFn&& read) {
    std::vector<std::string> out(n);
    if (n == 0) return out;
    if (H5Tis_variable_str(stored_type) > 0) {
        Handle mem = string_type();
        std::vector<char*> ptrs(n, nullptr);
        if (read(mem.get(), ptrs.data()) < 0) return {};
        for (size_t i = 0; i < n; ++i) {
            if (ptrs[i]) out[i] = ptrs[i];
            H5free_memory(ptrs[i]);
        }
    } else {
        size_t width = H5Tget_size(stored_type);
        Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
        H5Tset_size(mem.get(), width);
        std::vector<char> buf(n * width);
        if (read(mem.get(), buf.data()) < 0) return {};
        for (size_t i = 0; i < n; ++i) {
            const char* s = buf.data() + i * width;
            size_t len = 0;
            while (len < width && s[len] != '\0') ++len;
            out[i].assign(s, len);
        }
    }
    return out;
}

}  // namespace

template <> hid_t native_type<float>() { return H5T_NATIVE_FLOAT; }
template <> hid_t native_type<double>() { return H5T_NATIVE_DOUBLE; }
template <> hid_t native_type<int64_t>() { return H5T_NATIVE_INT64; }
template <> hid_t native_type<uint64_t>() { return H5T_NATIVE_UINT64; }

File File::create(const std::string& path) {
    Quiet q;
    hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (id < 0)
        fail("cannot create HDF5 file '" + path + "': " + hdf5_reason() +
             " (does the directory exist and is it writable?)");
    return File(path, id);
}

File File::open(const std::string& path, bool writable, bool use_locking) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) fail("'" + path + "' does not exist");
    if (std::filesystem::is_directory(path, ec)) fail("'" + path + "' is a directory, not an HDF5 file");
    Quiet q;
    Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
#if (H5_VERSION_GE(1, 10, 7) && !H5_VERSION_GE(1, 12, 0)) || H5_VERSION_GE(1, 12, 1)
    if (!use_locking) H5Pset_file_locking(fapl.get(), false, true);
#endif
    hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl.get());
    if (id < 0)
        fail("'" + path + "' is not a readable HDF5 file (" + hdf5_reason() +
             "): it is damaged, truncated, of another format, or locked by another process");
    return File(path, id);
}

File::File(File&& other) noexcept : path_(std::move(other.path_)), id_(std::exchange(other.id_, -1)) {}

File& File::operator=(File&& other) noexcept {
    if (this != &other) {
        if (id_ >= 0) H5Fclose(id_);
        path_ = std::move(other.path_);
        id_ = std::exchange(other.id_, -1);
    }
    return *this;
}

File::~File() {
    if (id_ >= 0) {
        Quiet q;
        H5Fclose(id_);
    }
}

void File::close() {
    if (id_ < 0) return;
    Quiet q;
    herr_t rc = H5Fclose(std::exchange(id_, -1));
    if (rc < 0) fail("cannot close HDF5 file '" + path_ + "': " + hdf5_reason() + " (is the disk full?)");
}

void File::flush() {
    Quiet q;
    if (H5Fflush(id_, H5F_SCOPE_GLOBAL) < 0)
        fail("cannot flush HDF5 file '" + path_ + "': " + hdf5_reason() + " (is the disk full?)");
}

void File::fail_at(const std::string& object, const std::string& what) const {
    fail(path_ + ": '" + object + "' " + what);
}

bool File::exists(const std::string& object) const {
    Quiet q;
    if (object.empty() || object == "/") return true;
    // H5Lexists requires every intermediate group to exist, so walk the path.
    size_t pos = 0;
    while (pos != std::string::npos) {
        pos = object.find('/', pos + 1);
        std::string prefix = object.substr(0, pos);
        if (prefix.empty() || prefix == "/") continue;
        if (H5Lexists(id_, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    }
    return true;
}

void File::create_group(const std::string& group) {
    Quiet q;
    Handle gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
    H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    Handle lcpl = intermediate_groups_lcpl();
    Handle g(H5Gcreate2(id_, group.c_str(), lcpl.get(), gcpl.get(), H5P_DEFAULT), H5Gclose);
    if (!g.ok()) fail_at(group, "cannot be created as a group: " + hdf5_reason());
}

std::vector<std::string> File::members(const std::string& group) const {
    Quiet q;
    Handle g(H5Gopen2(id_, group.c_str(), H5P_DEFAULT), H5Gclose);
    if (!g.ok()) fail_at(group, "is missing or is not a group");
    H5G_info_t info;
    if (H5Gget_info(g.get(), &info) < 0) fail_at(group, "cannot be listed: " + hdf5_reason());
    unsigned order_flags = 0;
    Handle gcpl(H5Gget_create_plist(g.get()), H5Pclose);
    H5Pget_link_creation_order(gcpl.get(), &order_flags);
    H5_index_t index = (order_flags & H5P_CRT_ORDER_INDEXED) ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
    std::vector<std::string> names;
    for (hsize_t i = 0; i < info.nlinks; ++i) {
        ssize_t len = H5Lget_name_by_idx(g.get(), ".", index, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
        if (len < 0) fail_at(group, "cannot be listed: " + hdf5_reason());
        std::string name(static_cast<size_t>(len) + 1, '\0');
        H5Lget_name_by_idx(g.get(), ".", index, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
        name.resize(static_cast<size_t>(len));
        names.push_back(std::move(name));
    }
    return names;
}

void File::write_raw(const std::string& name, hid_t type, const void* data, std::vector<size_t> dims) {
    Quiet q;
    std::vector<hsize_t> hd(dims.begin(), dims.end());
    Handle space(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(hd.size()), hd.data(), nullptr),
                 H5Sclose);
    Handle lcpl = intermediate_groups_lcpl();
    Handle d(H5Dcreate2(id_, name.c_str(), type, space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
    if (!d.ok()) fail_at(name, "cannot be created: " + hdf5_reason());
    if (H5Sget_simple_extent_npoints(space.get()) == 0) return;  // nothing to write for empty arrays
    if (H5Dwrite(d.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        fail_at(name, "cannot be written: " + hdf5_reason() + " (is the disk full?)");
}

std::vector<size_t> File::shape_of(const std::string& name, hid_t type, int rank) const {
    Quiet q;
    if (!exists(name)) fail_at(name, "is missing (the file was written by another program or an older version)");
    Handle d(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
    if (!d.ok()) fail_at(name, "is not a dataset: " + hdf5_reason());
    Handle space(H5Dget_space(d.get()), H5Sclose);
    int got_rank = H5Sget_simple_extent_ndims(space.get());
    if (got_rank != rank)
        fail_at(name, "has rank " + std::to_string(got_rank) + ", expected " + std::to_string(rank));
    Handle stored(H5Dget_type(d.get()), H5Tclose);
    H5T_class_t want = H5Tget_class(type), got = H5Tget_class(stored.get());
    if (want != got)
        fail_at(name, std::string("holds ") + class_name(got) + " values, expected " + class_name(want));
    std::vector<hsize_t> hd(static_cast<size_t>(rank));
    if (rank > 0) H5Sget_simple_extent_dims(space.get(), hd.data(), nullptr);
    return std::vector<size_t>(hd.begin(), hd.end());
}

void File::read_raw(const std::string& name, hid_t type, void* data, size_t count) const {
    if (count == 0) return;
    Quiet q;
    Handle d(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
    if (!d.ok() || H5Dread(d.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        fail_at(name, "cannot be read: " + hdf5_reason() + " (the file is damaged)");
}

void File::write_2d(const std::string& name, const std::vector<int64_t>& v, size_t rows, size_t cols) {
    if (v.size() != rows * cols) fail_at(name, "write_2d: data size does not match rows*cols");
    write_raw(name, native_type<int64_t>(), v.data(), {rows, cols});
}

std::vector<int64_t> File::read_2d(const std::string& name, size_t* rows, size_t* cols) const {
    auto dims = shape_of(name, native_type<int64_t>(), 2);
    std::vector<int64_t> v(dims[0] * dims[1]);
    read_raw(name, native_type<int64_t>(), v.data(), v.size());
    *rows = dims[0];
    *cols = dims[1];
    return v;
}

void File::write_string(const std::string& name, const std::string& s) {
    if (s.find('\0') != std::string::npos) fail_at(name, "cannot store a string containing NUL bytes");
    Handle t = string_type();
    const char* p = s.c_str();
    write_raw(name, t.get(), &p, {});
}

void File::write_strings(const std::string& name, const std::vector<std::string>& v) {
    std::vector<const char*> ptrs;
    for (const auto& s : v) {
        if (s.find('\0') != std::string::npos) fail_at(name, "cannot store a string containing NUL bytes");
        ptrs.push_back(s.c_str());
    }
    Handle t = string_type();
    write_raw(name, t.get(), ptrs.data(), {v.size()});
}

static std::vector<std::string> read_string_dataset(const File& f, hid_t file_id, const std::string& name,
                                                     size_t n) {
    Handle d(H5Dopen2(file_id, name.c_str(), H5P_DEFAULT), H5Dclose);
    Handle stored(H5Dget_type(d.get()), H5Tclose);
    bool failed = false;
    auto out = read_string_values(stored.get(), n, [&](hid_t mem, void* buf) {
        herr_t rc = H5Dread(d.get(), mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        failed = rc < 0;
        return rc;
    });
    if (failed) f.fail_at(name, "cannot be read as strings: " + hdf5_reason());
    return out;
}

std::string File::read_string(const std::string& name) const {
    Handle t = string_type();
    shape_of(name, t.get(), 0);
    Quiet q;
    return read_string_dataset(*this, id_, name, 1).at(0);
}

std::vector<std::string> File::read_strings(const std::string& name) const {
    Handle t = string_type();
    auto dims = shape_of(name, t.get(), 1);
    Quiet q;
    return read_string_dataset(*this, id_, name, dims[0]);
}

namespace {
void write_attr(const File& f, hid_t file_id, const std::string& object, const std::string& attr, hid_t type,
                const void* value) {
    Quiet q;
    Handle obj(H5Oopen(file_id, object.c_str(), H5P_DEFAULT), H5Oclose);
    if (!obj.ok()) f.fail_at(object, "is missing; cannot set attribute '" + attr + "'");
    if (H5Aexists(obj.get(), attr.c_str()) > 0) H5Adelete(obj.get(), attr.c_str());
    Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    Handle a(H5Acreate2(obj.get(), attr.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (!a.ok() || H5Awrite(a.get(), type, value) < 0)
        f.fail_at(object, "cannot set attribute '" + attr + "': " + hdf5_reason());
}
}  // namespace

void File::set_attr(const std::string& object, const std::string& attr, const std::string& value) {
    Handle t = string_type();
    const char* p = value.c_str();
    write_attr(*this, id_, object, attr, t.get(), &p);
}

void File::set_attr(const std::string& object, const std::string& attr, int64_t value) {
    write_attr(*this, id_, object, attr, H5T_NATIVE_INT64, &value);
}

namespace {
// The attribute if it exists with a value of type class `want`; an invalid Handle otherwise.
Handle open_attr(const File& f, hid_t file_id, const std::string& object, const std::string& attr,
                 H5T_class_t want) {
    if (!f.exists(object) || H5Aexists_by_name(file_id, object.c_str(), attr.c_str(), H5P_DEFAULT) <= 0)
        return Handle(-1, H5Aclose);
    Handle a(H5Aopen_by_name(file_id, object.c_str(), attr.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    Handle stored(H5Aget_type(a.get()), H5Tclose);
    if (H5Tget_class(stored.get()) != want) return Handle(-1, H5Aclose);
    return a;
}
}  // namespace

std::optional<std::string> File::attr_string(const std::string& object, const std::string& attr) const {
    Quiet q;
    Handle a = open_attr(*this, id_, object, attr, H5T_STRING);
    if (!a.ok()) return std::nullopt;
    Handle stored(H5Aget_type(a.get()), H5Tclose);
    auto v = read_string_values(stored.get(), 1, [&](hid_t mem, void* buf) { return H5Aread(a.get(), mem, buf); });
    if (v.empty()) return std::nullopt;
    return v[0];
}

std::optional<int64_t> File::attr_int(const std::string& object, const std::string& attr) const {
    Quiet q;
    Handle a = open_attr(*this, id_, object, attr, H5T_INTEGER);
    if (!a.ok()) return std::nullopt;
    int64_t value = 0;
    if (H5Aread(a.get(), H5T_NATIVE_INT64, &value) < 0) return std::nullopt;
    return value;
}

void File::create_extendible_raw(const std::string& name, hid_t type, size_t chunk_rows) {
    Quiet q;
    hsize_t zero = 0, unlimited = H5S_UNLIMITED, chunk = chunk_rows;
    Handle space(H5Screate_simple(1, &zero, &unlimited), H5Sclose);
    Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    H5Pset_chunk(dcpl.get(), 1, &chunk);
    Handle lcpl = intermediate_groups_lcpl();
    Handle d(H5Dcreate2(id_, name.c_str(), type, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT), H5Dclose);
    if (!d.ok()) fail_at(name, "cannot be created: " + hdf5_reason());
}

void File::append_raw(const std::string& name, hid_t type, const void* data, size_t count) {
    if (count == 0) return;
    hsize_t start = length(name), n = count, total = start + n;
    Quiet q;
    Handle d(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
    if (!d.ok() || H5Dset_extent(d.get(), &total) < 0)
        fail_at(name, "cannot be extended: " + hdf5_reason() + " (was it created as extendible?)");
    Handle fspace(H5Dget_space(d.get()), H5Sclose);
    H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &n, nullptr);
    Handle mspace(H5Screate_simple(1, &n, nullptr), H5Sclose);
    if (H5Dwrite(d.get(), type, mspace.get(), fspace.get(), H5P_DEFAULT, data) < 0)
        fail_at(name, "cannot be appended to: " + hdf5_reason() + " (is the disk full?)");
}

size_t File::length(const std::string& name) const {
    Quiet q;
    Handle d(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), H5Dclose);
    if (!d.ok()) fail_at(name, "is missing");
    Handle space(H5Dget_space(d.get()), H5Sclose);
    if (H5Sget_simple_extent_ndims(space.get()) != 1) fail_at(name, "is not 1-D");
    hsize_t n = 0;
    H5Sget_simple_extent_dims(space.get(), &n, nullptr);
    return static_cast<size_t>(n);
}

}  // namespace gpt::h5
