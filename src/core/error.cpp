#include "core/error.h"

#include <cstring>

namespace vit {

[[noreturn]] void throw_error(const char* file, int line, const std::string& msg) {
  // Keep only the path below src/ (or the basename) so messages stay short.
  const char* shown = std::strstr(file, "src/");
  if (shown == nullptr) {
    const char* slash = std::strrchr(file, '/');
    shown = slash ? slash + 1 : file;
  }
  throw Error(str_cat(shown, ":", line, ": ", msg));
}

}  // namespace vit
