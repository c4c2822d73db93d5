#include "data/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "common/error.h"
#include "common/fs_atomic.h"

namespace gpt {

namespace {
std::string errno_text() { return std::strerror(errno); }
}  // namespace

std::string read_whole_file(const std::string& path, const std::string& what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        fail(what + " " + path + " cannot be opened (" + errno_text() + ")");
    }
    std::ostringstream buffer;
    buffer << in.rdbuf();
    if (in.bad()) fail(what + " " + path + " could not be read (" + errno_text() + ")");
    return std::move(buffer).str();
}

void write_file_atomically(const std::string& path, std::initializer_list<std::string_view> chunks) {
    // The temp+fsync+rename protocol lives in common/fs_atomic; this adds writing the chunks.
    write_file_atomically(path, [&](const std::string& tmp) {
        std::FILE* f = std::fopen(tmp.c_str(), "wb");
        if (!f) fail("cannot create a temporary file next to " + path + " (" + errno_text() + ")");
        bool ok = true;
        for (std::string_view chunk : chunks) ok = ok && std::fwrite(chunk.data(), 1, chunk.size(), f) == chunk.size();
        ok = std::fflush(f) == 0 && ok;
        ok = std::fclose(f) == 0 && ok;
        if (!ok) fail("writing " + path + " failed: write error (disk full?)");
    });
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("file " + path + " cannot be opened (" + errno_text() + ")");
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        ::close(fd);
        fail("file " + path + " cannot be inspected (" + errno_text() + ")");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            ::close(fd);
            fail("file " + path + " cannot be memory-mapped (" + errno_text() + ")");
        }
        data_ = static_cast<const uint8_t*>(p);
    }
    ::close(fd);  // the mapping stays valid without the descriptor
}

MappedFile::~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
    if (this != &other) {
        if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
        path_ = std::move(other.path_);
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
    }
    return *this;
}

}  // namespace gpt
