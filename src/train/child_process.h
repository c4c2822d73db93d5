// Starting `gpt2` child processes (the parallel ablation's steps, the data-parallel ranks) and
// describing how they ended: posix_spawn with an edited environment and the output appended to a
// log file, or inherited.
#pragma once
#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace gpt {

struct ChildSpec {
    std::vector<std::string> argv;                          // argv[0] is the program to run
    std::vector<std::pair<std::string, std::string>> env;   // set (replacing this process's values)
    std::string log_path;                                   // stdout + stderr appended here; empty: inherited
};

// Starts the child; Error when it cannot be started.
pid_t spawn_process(const ChildSpec& spec);

// "exit status 1", "killed by signal 9 (Killed)", ... from a waitpid status.
std::string exit_description(int status);

// The last `lines` lines of a text file ("" when it cannot be read): a failed child's own words.
std::string tail_of_file(const std::string& path, int lines);

}  // namespace gpt
