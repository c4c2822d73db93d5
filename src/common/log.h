// Logging set-up: spdlog to the console (coloured, stderr) and, for a run, to <run_dir>/train.log.
// After init_logging the rest of the code just calls spdlog::info / warn / error / debug.
#pragma once
#include <string>

namespace gpt {

// run_dir "" = console only. verbose = debug level (else info). The log file is appended to, so a
// resumed run keeps its history. Safe to call again (e.g. per ablation step): it replaces the
// previous default logger.
void init_logging(const std::string& run_dir, bool verbose);

// Path of the current log file ("" when console only).
const std::string& log_file_path();

// A live progress line on the terminal (train/progress.h) registers here, so that a log message
// first erases it instead of being glued to its end; take_console_line_cleared() then tells the
// progress display to redraw at its next update.
void set_console_live_line(bool active);
bool take_console_line_cleared();

}  // namespace gpt
