// Errors thrown by the engine. Messages name the op and the offending shapes or fields.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace mcd {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

#define MCD_CHECK(cond, ...)               \
  do {                                     \
    if (!(cond)) ::mcd::fail(__VA_ARGS__); \
  } while (0)

}  // namespace mcd
