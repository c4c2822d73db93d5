#include "train/child_process.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <fstream>

#include <fmt/format.h>

#include "common/error.h"

extern char** environ;

namespace gpt {

namespace {

std::vector<char*> c_strings(std::vector<std::string>& words) {
    std::vector<char*> out;
    for (auto& w : words) out.push_back(w.data());
    out.push_back(nullptr);
    return out;
}

// This process's environment with spec.env's names replaced.
std::vector<std::string> child_environment(const ChildSpec& spec) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
        bool replaced = false;
        for (const auto& [name, value] : spec.env)
            replaced |= std::strncmp(*e, name.c_str(), name.size()) == 0 && (*e)[name.size()] == '=';
        if (!replaced) env.emplace_back(*e);
    }
    for (const auto& [name, value] : spec.env) env.push_back(name + "=" + value);
    return env;
}

}  // namespace

pid_t spawn_process(const ChildSpec& spec) {
    GPT_CHECK(!spec.argv.empty(), "spawn_process: no program");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (!spec.log_path.empty()) {
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                         0644);
        posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
        posix_spawn_file_actions_addclose(&actions, STDIN_FILENO);
    }
    std::vector<std::string> args = spec.argv;
    std::vector<std::string> env = child_environment(spec);
    auto argv = c_strings(args);
    auto envp = c_strings(env);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, args[0].c_str(), &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) fail(fmt::format("cannot start {}: {}", args[0], std::strerror(rc)));
    return pid;
}

std::string exit_description(int status) {
    if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return fmt::format("killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
    return fmt::format("wait status {}", status);
}

std::string tail_of_file(const std::string& path, int lines) {
    std::ifstream in(path);
    std::deque<std::string> last;
    for (std::string line; std::getline(in, line);) {
        last.push_back(line);
        if (int(last.size()) > lines) last.pop_front();
    }
    std::string out;
    for (const auto& l : last) out += l + "\n";
    return out;
}

}  // namespace gpt
