#include "train/step_processes.h"

#include <sys/wait.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"
#include "common/fs_atomic.h"
#include "train/child_process.h"
#include "train/config_io.h"
#include "train/train_result_io.h"

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

// Starts `<exe> train --config <out_dir>/run.yaml` with stdout and stderr appended to the log,
// on the given GPUs (empty: CUDA_VISIBLE_DEVICES left as it is).
pid_t spawn_child(const RunConfig& cfg, const ProcessPlan& plan, const std::vector<int>& devices,
                  const std::string& log_path) {
    const std::string yaml_path = cfg.train.out_dir + "/run.yaml";
    write_text_atomically(yaml_path, to_yaml(cfg));
    ChildSpec spec;
    spec.argv = {plan.executable, "train", "--config", yaml_path};
    if (!devices.empty()) spec.env.emplace_back("CUDA_VISIBLE_DEVICES", fmt::format("{}", fmt::join(devices, ",")));
    spec.log_path = log_path;
    return spawn_process(spec);
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
        // Slot k takes the next devices_per_job entries of the device list, cycling.
        std::vector<int> devices;
        for (int i = 0; i < plan.devices_per_job && !plan.devices.empty(); ++i)
            devices.push_back(plan.devices[size_t(slot * plan.devices_per_job + i) % plan.devices.size()]);
        const pid_t pid = spawn_child(cfg, plan, devices, o.log_path);
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
