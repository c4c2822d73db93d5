#include "common/fs_atomic.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/error.h"

namespace gpt {
namespace fs = std::filesystem;

namespace {

std::string errno_text() { return std::strerror(errno); }

void fsync_path(const std::string& path, int flags, const char* what) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0) fail(std::string("cannot open ") + what + " '" + path + "' to sync it: " + errno_text());
    int rc = ::fsync(fd);
    int saved = errno;
    ::close(fd);
    if (rc != 0) {
        errno = saved;
        fail(std::string("fsync of ") + what + " '" + path + "' failed: " + errno_text() +
             " (is the disk full or the file system read-only?)");
    }
}

}  // namespace

std::string temp_path_for(const std::string& final_path) {
    return final_path + ".tmp-" + std::to_string(static_cast<long>(::getpid()));
}

bool is_temp_path(const std::string& path, long* pid) {
    const std::string marker = ".tmp-";
    size_t at = path.rfind(marker);
    if (at == std::string::npos || at + marker.size() == path.size()) return false;
    std::string digits = path.substr(at + marker.size());
    for (char c : digits)
        if (c < '0' || c > '9') return false;
    if (digits.size() > 18) return false;
    if (pid) *pid = std::stol(digits);
    return true;
}

void fsync_file(const std::string& path) { fsync_path(path, O_RDONLY, "file"); }

void fsync_directory(const std::string& dir) {
    fsync_path(dir.empty() ? std::string(".") : dir, O_RDONLY | O_DIRECTORY, "directory");
}

void write_file_atomically(const std::string& final_path,
                           const std::function<void(const std::string& tmp_path)>& write) {
    fs::path parent = fs::path(final_path).parent_path();
    std::error_code ec;
    if (!parent.empty()) {
        fs::create_directories(parent, ec);
        if (ec) fail("cannot create directory '" + parent.string() + "' for '" + final_path + "': " + ec.message());
    }
    const std::string tmp = temp_path_for(final_path);
    try {
        write(tmp);
        fsync_file(tmp);
        if (std::rename(tmp.c_str(), final_path.c_str()) != 0)
            fail("cannot rename '" + tmp + "' to '" + final_path + "': " + errno_text());
    } catch (...) {
        fs::remove(tmp, ec);  // best effort: never leave a half file behind a failed write
        throw;
    }
    fsync_directory(parent.string());
}

void write_text_atomically(const std::string& final_path, const std::string& content) {
    write_file_atomically(final_path, [&](const std::string& tmp) {
        std::FILE* f = std::fopen(tmp.c_str(), "wb");
        if (!f) fail("cannot create '" + tmp + "': " + errno_text());
        size_t n = std::fwrite(content.data(), 1, content.size(), f);
        bool ok = n == content.size() && std::fflush(f) == 0;
        ok = (std::fclose(f) == 0) && ok;
        if (!ok) fail("cannot write '" + tmp + "' (is the disk full?)");
    });
}

}  // namespace gpt
