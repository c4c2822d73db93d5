#include "data/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "common/error.h"

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
    namespace fs = std::filesystem;
    const fs::path target(path);
    const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) fail("cannot create directory " + dir.string() + " for " + path + ": " + ec.message());

    // (append() rather than operator+: g++ 12 misreports a -Wrestrict overlap for the latter)
    std::string tmp = (dir / std::string(".").append(target.filename().string()).append(".tmpXXXXXX")).string();
    int fd = ::mkstemp(tmp.data());
    if (fd < 0) fail("cannot create a temporary file next to " + path + " (" + errno_text() + ")");
    auto abandon = [&](const std::string& why) {
        const std::string detail = errno_text();
        ::close(fd);
        ::unlink(tmp.c_str());
        fail("writing " + path + " failed: " + why + " (" + detail + ")");
    };
    for (std::string_view chunk : chunks) {
        const char* p = chunk.data();
        size_t left = chunk.size();
        while (left > 0) {
            ssize_t n = ::write(fd, p, left);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) abandon("write error (disk full?)");
            p += n;
            left -= static_cast<size_t>(n);
        }
    }
    if (::fchmod(fd, 0644) != 0) abandon("fchmod");
    if (::fsync(fd) != 0) abandon("fsync");
    if (::close(fd) != 0) {
        ::unlink(tmp.c_str());
        fail("writing " + path + " failed: close (" + errno_text() + ")");
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const std::string detail = errno_text();
        ::unlink(tmp.c_str());
        fail("writing " + path + " failed: rename (" + detail + ")");
    }
    // Make the rename itself durable (best effort: some file systems refuse fsync on directories).
    const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
        ::fsync(dir_fd);
        ::close(dir_fd);
    }
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
