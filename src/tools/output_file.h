// Writing a result file so that readers never see it half-written.
//
// The text goes to a temporary file in the same folder (same file system, so
// the final rename is atomic), is flushed to disk, and then renamed over the
// target. A crash leaves either the old file or the new one, never a mix;
// the temporary is removed when anything fails.
#pragma once

#include <filesystem>
#include <string>

namespace vit::tools {

// Throws vit::UserError naming `path` when it cannot be written.
void write_file_atomically(const std::filesystem::path& path, const std::string& text);

}  // namespace vit::tools
