// Errors and check macros.
//
// Every failure in vit_hpc becomes a vit::Error carrying where it was raised
// (file:line) and a message that says what to do. Errors are thrown, never
// exit()-ed: the entry point catches them and aborts every MPI rank, so no
// rank is left hanging inside a collective (llm.c's habit we do not copy).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace vit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Bad user input (spec, command line, data files). The entry point prints
// these without the source location: the message itself names the file and
// field the user has to fix.
class UserError : public Error {
 public:
  explicit UserError(const std::string& what) : Error(what) {}
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}
}  // namespace detail

// Concatenates any streamable arguments into one string.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);

}  // namespace vit

// VIT_CHECK(cond, "message", value, ...): throws vit::Error with file:line.
#define VIT_CHECK(cond, ...)                                                     \
  do {                                                                           \
    if (!(cond)) {                                                               \
      ::vit::throw_error(__FILE__, __LINE__,                                     \
                         ::vit::str_cat("check failed: " #cond ": ", __VA_ARGS__)); \
    }                                                                            \
  } while (0)

#define VIT_THROW(...) ::vit::throw_error(__FILE__, __LINE__, ::vit::str_cat(__VA_ARGS__))

// For input the user controls: no source location, the message is the help.
#define VIT_USER_CHECK(cond, ...)                                  \
  do {                                                             \
    if (!(cond)) throw ::vit::UserError(::vit::str_cat(__VA_ARGS__)); \
  } while (0)
