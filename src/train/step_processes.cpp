#include "train/step_processes.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "common/error.h"
#include "common/fs_atomic.h"
#include "train/config_io.h"
#include "train/train_result_io.h"

extern char** environ;

namespace gpt {
namespace fs = std::filesystem;

std::string gpt2_executable() {
    if (const char* exe = std::getenv("GPT2_EXE"); exe && *exe) return exe;
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (ec) fail("cannot find this program's path (/proc/self/exe: " + ec.message() + "); set GPT2_EXE");
    return self.string();
}

namespace {

// This process's environment with CUDA_VISIBLE_DEVICES replaced (device < 0: left as it is).
std::vector<std::string> child_environment(int device) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e)
        if (device < 0 || std::strncmp(*e, "CUDA_VISIBLE_DEVICES=", 21) != 0) env.emplace_back(*e);
    if (device >= 0) env.push_back(fmt::format("CUDA_VISIBLE_DEVICES={}", device));
    return env;
}

std::vector<char*> c_strings(std::vector<std::string>& words) {
    std::vector<char*> out;
    for (auto& w : words) out.push_back(w.data());
    out.push_back(nullptr);
    return out;
}

std::string exit_description(int status) {
    if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return fmt::format("killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
    return fmt::format("wait status {}", status);
}

// Starts `<exe> train --config <out_dir>/run.yaml` with stdout and stderr appended to the log.
pid_t spawn_child(const RunConfig& cfg, const ProcessPlan& plan, int device, const std::string& log_path) {
    const std::string yaml_path = cfg.train.out_dir + "/run.yaml";
    write_text_atomically(yaml_path, to_yaml(cfg));
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    posix_spawn_file_actions_addclose(&actions, STDIN_FILENO);
    std::vector<std::string> args = {plan.executable, "train", "--config", yaml_path};
    std::vector<std::string> env = child_environment(device);
    auto argv = c_strings(args);
    auto envp = c_strings(env);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, plan.executable.c_str(), &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) fail(fmt::format("cannot start {}: {}", plan.executable, std::strerror(rc)));
    return pid;
}

}  // namespace

std::vector<ChildOutcome> train_in_processes(const std::vector<RunConfig>& runs, const ProcessPlan& plan,
                                             const std::function<void(size_t, const ChildOutcome&)>& on_done) {
    GPT_CHECK(plan.jobs >= 1, "train_in_processes: jobs must be >= 1");
    std::vector<ChildOutcome> outcomes(runs.size());
    struct Running { size_t index; int slot; };
    std::map<pid_t, Running> running;
    std::vector<bool> slot_busy(size_t(plan.jobs), false);
    size_t next = 0;
    auto start_next = [&](int slot) {
        RunConfig cfg = runs[next];
        cfg.job = "train";
        if (cfg.train.threads == 0 && plan.threads_per_job > 0) cfg.train.threads = plan.threads_per_job;
        fs::create_directories(cfg.train.out_dir);
        ChildOutcome& o = outcomes[next];
        o.log_path = cfg.train.out_dir + "/train.log";
        const int device = plan.devices.empty() ? -1 : plan.devices[size_t(slot) % plan.devices.size()];
        const pid_t pid = spawn_child(cfg, plan, device, o.log_path);
        running[pid] = {next, slot};
        slot_busy[size_t(slot)] = true;
        ++next;
    };
    while (next < runs.size() || !running.empty()) {
        for (int slot = 0; slot < plan.jobs && next < runs.size(); ++slot)
            if (!slot_busy[size_t(slot)]) start_next(slot);
        int status = 0;
        const pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            fail(fmt::format("waiting for the training processes: {}", std::strerror(errno)));
        }
        auto it = running.find(pid);
        if (it == running.end()) continue;   // not one of ours
        const auto [index, slot] = it->second;
        running.erase(it);
        slot_busy[size_t(slot)] = false;
        ChildOutcome& o = outcomes[index];
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            try {
                o.result = read_train_result(runs[index].train.out_dir + "/result.json");
                o.ok = true;
            } catch (const Error& e) {
                o.error = e.what();
            }
        } else {
            o.error = exit_description(status);
        }
        on_done(index, o);
    }
    return outcomes;
}

}  // namespace gpt
