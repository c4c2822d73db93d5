// Crash-safe file replacement: write a sibling temporary, make it durable, rename it over the
// final name. A crash at any point leaves either the old complete file or the new complete file.
#pragma once
#include <functional>
#include <string>

namespace gpt {

// "<path>.tmp-<pid>": the sibling a writer in this process uses (same directory, so the final
// rename never crosses a file system).
std::string temp_path_for(const std::string& final_path);

// True for names produced by temp_path_for ("....tmp-<digits>"); sets *pid when given.
bool is_temp_path(const std::string& path, long* pid = nullptr);

// fsync a regular file / a directory (so a rename inside it survives power loss).
void fsync_file(const std::string& path);
void fsync_directory(const std::string& dir);

// Runs write(tmp_path), fsyncs the temporary, renames it over final_path and fsyncs the directory.
// The parent directory is created if missing. If write throws, the temporary is removed and the
// exception propagates; final_path is untouched.
void write_file_atomically(const std::string& final_path,
                           const std::function<void(const std::string& tmp_path)>& write);

// write_file_atomically for a text/binary blob.
void write_text_atomically(const std::string& final_path, const std::string& content);

}  // namespace gpt
