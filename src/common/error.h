// One exception type for every user-facing error: the message names what is wrong and the fix.
#pragma once
#include <stdexcept>
#include <string>

namespace gpt {

struct Error : std::runtime_error {
    explicit Error(const std::string& what) : std::runtime_error(what) {}
};

[[noreturn]] inline void fail(const std::string& what) { throw Error(what); }

#define GPT_CHECK(cond, msg)                                   \
    do {                                                       \
        if (!(cond)) ::gpt::fail(std::string(msg));            \
    } while (0)

}  // namespace gpt
