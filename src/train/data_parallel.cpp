#include "train/data_parallel.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/error.h"
#include "common/fs_atomic.h"
#include "model/backend.h"
#include "train/child_process.h"
#include "train/config_io.h"
#include "train/step_processes.h"
#include "train/train_result_io.h"

#ifdef GPT_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace gpt {

namespace fs = std::filesystem;

namespace {

int env_int(const char* name, int lo, int hi) {
    const char* v = std::getenv(name);
    if (!v || !*v) fail(fmt::format("{} is not set, but GPT_RANK is: a data-parallel rank is started by the "
                                    "launcher (`gpt2 train` with train.gpus > 1), not by hand", name));
    char* end = nullptr;
    errno = 0;
    const long x = std::strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || x < lo || x > hi)
        fail(fmt::format("{}: '{}' is not an integer in {} .. {}", name, v, lo, hi));
    return int(x);
}

}  // namespace

Ranks ranks_from_environment() {
    Ranks r;
    const char* rank = std::getenv("GPT_RANK");
    if (!rank || !*rank) return r;
    r.world = env_int("GPT_WORLD", 1, 1024);
    r.rank = env_int("GPT_RANK", 0, r.world - 1);
    r.device = env_int("GPT_RANK_DEVICE", 0, 1023);
    const char* id = std::getenv("GPT_NCCL_ID");
    if (!id || !*id) fail("GPT_NCCL_ID is not set, but GPT_RANK is: ranks are started by the launcher");
    r.id = id;
    // A rank whose launcher is gone would wait in a collective forever.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    return r;
}

int rank_grad_accum(const TrainConfig& tc, int world) {
    GPT_CHECK(world >= 1 && tc.grad_accum % world == 0,
              "train.grad_accum must be a multiple of the number of ranks (validate() checks this)");
    return tc.grad_accum / world;
}

TrainResult train_data_parallel(const RunConfig& cfg) {
    const TrainConfig& tc = cfg.train;
    const int world = tc.gpus;
    GPT_CHECK(world >= 1, "train_data_parallel: train.gpus must be >= 1");
    if (!backend_uses_cuda(tc.device))
        fail(fmt::format("train.gpus: {} GPUs asked for, but this run is on the CPU (train.device = {}); "
                         "data-parallel training needs CUDA GPUs: set train.gpus to 1 or train.device to cuda",
                         world, tc.device));
    const int visible = cuda_devices_visible();
    if (visible < world)
        fail(fmt::format("train.gpus: {} GPUs asked for, but {} {} visible; lower train.gpus or check "
                         "CUDA_VISIBLE_DEVICES", world, visible, visible == 1 ? "is" : "are"));
#ifdef GPT_HAVE_CUDA
    const std::string id = nccl_communicator_id();
#else
    const std::string id;
#endif
    fs::create_directories(tc.out_dir);
    const std::string yaml_path = tc.out_dir + "/ranks.yaml";
    RunConfig rank_cfg = cfg;
    rank_cfg.job = "train";
    write_text_atomically(yaml_path, to_yaml(rank_cfg));
    const std::string exe = gpt2_executable();
    spdlog::info("data-parallel: {} ranks on GPUs 0..{} (NCCL), {} micro-batches of {} each per step; "
                 "rank 0 reports here, ranks 1..{} log to {}/rank<r>.log",
                 world, world - 1, rank_grad_accum(tc, world), tc.batch_size, world - 1, tc.out_dir);

    std::map<pid_t, int> running;   // pid -> rank
    std::vector<std::string> logs(static_cast<size_t>(world));
    for (int r = 0; r < world; ++r) {
        ChildSpec spec;
        spec.argv = {exe, "train", "--config", yaml_path};
        spec.env = {{"GPT_RANK", std::to_string(r)}, {"GPT_WORLD", std::to_string(world)},
                    {"GPT_RANK_DEVICE", std::to_string(r)}, {"GPT_NCCL_ID", id}};
        if (r > 0) spec.log_path = logs[size_t(r)] = fmt::format("{}/rank{}.log", tc.out_dir, r);
        running[spawn_process(spec)] = r;
    }
    int failed_rank = -1;
    std::string failure;
    while (!running.empty()) {
        int status = 0;
        const pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            fail(fmt::format("waiting for the data-parallel ranks: {}", std::strerror(errno)));
        }
        auto it = running.find(pid);
        if (it == running.end()) continue;
        const int rank = it->second;
        running.erase(it);
        const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok && failed_rank < 0) {
            // The others would wait for it in their next collective: stop them.
            failed_rank = rank;
            failure = exit_description(status);
            for (const auto& [other, r] : running) kill(other, SIGTERM);
        }
    }
    if (failed_rank >= 0) {
        const std::string& log = logs[size_t(failed_rank)];
        const std::string where = log.empty() ? "its messages are above" : "its log is " + log;
        const std::string tail = log.empty() ? "" : tail_of_file(log, 8);
        fail(fmt::format("data-parallel training failed: rank {} of {} ended with {}; the other ranks were "
                         "stopped; {}{}{}. The last checkpoint in {}/checkpoints is intact",
                         failed_rank, world, failure, where, tail.empty() ? "" : ":\n", tail, tc.out_dir));
    }
    return read_train_result(tc.out_dir + "/result.json");
}

}  // namespace gpt
