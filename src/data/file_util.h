// Small file helpers shared by the data code: whole-file reads, atomic writes, read-only mmaps.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace gpt {

// The whole file as bytes; gpt::Error "<what> <path> ..." when it cannot be opened or read.
std::string read_whole_file(const std::string& path, const std::string& what);

// Writes `chunks` to a temporary file in the same directory, fsyncs it, then renames it over
// `path`, so readers see either the old file or the complete new one, never a partial write.
void write_file_atomically(const std::string& path, std::initializer_list<std::string_view> chunks);

// A read-only memory map of a whole file (empty files map to size 0 with a null data pointer).
class MappedFile {
public:
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(MappedFile&& other) noexcept;
    MappedFile& operator=(MappedFile&& other) noexcept;
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    const std::string& path() const { return path_; }

private:
    std::string path_;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace gpt
