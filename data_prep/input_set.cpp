// Input discovery for vit_data_prep: folders walked with std::filesystem,
// archives listed and read with libzip. See input_set.h for the rules.
#include "data_prep/input_set.h"

#include <zip.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "core/error.h"

namespace fs = std::filesystem;

namespace vit::data_prep {

namespace {

bool ends_with_ci(const std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size()) return false;
  for (size_t i = 0; i < suffix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[s.size() - suffix.size() + i])) != suffix[i]) return false;
  }
  return true;
}

bool hidden(const std::string& name) { return name.empty() || name[0] == '.'; }

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

std::vector<std::string> split_path(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t slash = s.find('/', start);
    const size_t end = slash == std::string::npos ? s.size() : slash;
    parts.push_back(s.substr(start, end - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return parts;
}

// One image found while scanning, before labels are known.
struct Found {
  std::string name;  // file name inside the class folder
  int archive = -1;
  uint64_t zip_index = 0;
};
using ClassMap = std::map<std::string, std::vector<Found>>;  // class -> images

}  // namespace

InputSet::InputSet(const std::vector<std::string>& inputs) : inputs_(inputs) {
  VIT_USER_CHECK(!inputs.empty(), "--input is required (a folder of <split>/<class>/*.jpg or .zip files)");
  const bool all_zip = std::all_of(inputs.begin(), inputs.end(), [](const std::string& p) { return ends_with_ci(p, ".zip"); });
  if (!all_zip) {
    VIT_USER_CHECK(inputs.size() == 1, "--input takes one folder or one or more .zip files, got ",
                   join(inputs, ", "));
    const std::string& p = inputs[0];
    std::error_code ec;
    VIT_USER_CHECK(fs::exists(p, ec), p, ": no such folder (--input)");
    VIT_USER_CHECK(fs::is_directory(p, ec), p, ": not a folder or a .zip file (--input)");
    folder_ = p;
    return;
  }
  for (const std::string& p : inputs) {
    std::error_code ec;
    VIT_USER_CHECK(fs::is_regular_file(p, ec), p, ": no such zip file (--input)");
    int err = 0;
    zip_t* z = zip_open(p.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &err);
    if (!z) {
      zip_error_t ze;
      zip_error_init_with_code(&ze, err);
      const std::string why = zip_error_strerror(&ze);
      zip_error_fini(&ze);
      throw UserError(str_cat(p, ": cannot open as a zip archive: ", why));
    }
    archives_.push_back({p, z, std::make_unique<std::mutex>()});
  }
}

InputSet::~InputSet() {
  for (auto& a : archives_) {
    if (a.handle) zip_discard(a.handle);  // read-only: nothing to write back
  }
}

std::string InputSet::source() const { return join(inputs_, ", "); }

std::string InputSet::describe(const ImageEntry& e) const {
  if (e.archive < 0) return (fs::path(folder_) / e.rel_path).string();
  return archives_[e.archive].path + ":" + e.rel_path;
}

InputManifest InputSet::scan(const std::vector<std::string>& splits, const std::vector<std::string>& classes) const {
  try {
    return scan_unchecked(splits, classes);
  } catch (const fs::filesystem_error& e) {  // e.g. a folder without read permission
    throw UserError(str_cat(e.path1().string(), ": cannot list: ", e.code().message()));
  }
}

InputManifest InputSet::scan_unchecked(const std::vector<std::string>& splits,
                                       const std::vector<std::string>& classes) const {
  VIT_USER_CHECK(!splits.empty(), "--splits is empty");
  std::map<std::string, ClassMap> found;  // split -> class -> images
  std::map<std::string, std::string> where;  // split -> how to name its folder in messages
  std::vector<std::string> zip_names;
  for (const auto& a : archives_) zip_names.push_back(a.path);

  if (!folder_.empty()) {
    for (const std::string& split : splits) {
      const fs::path dir = fs::path(folder_) / split;
      where[split] = dir.string();
      std::error_code ec;
      VIT_USER_CHECK(fs::is_directory(dir, ec), dir.string(), ": missing split folder (splits asked for: ",
                     join(splits, ","), "; choose others with --splits)");
      ClassMap& cm = found[split];
      for (const auto& ce : fs::directory_iterator(dir)) {
        const std::string cname = ce.path().filename().string();
        if (hidden(cname)) continue;
        VIT_USER_CHECK(ce.is_directory(), ce.path().string(), ": unexpected file (expected <split>/<class>/<image>)");
        std::vector<Found>& imgs = cm[cname];
        for (const auto& fe : fs::directory_iterator(ce.path())) {
          const std::string fname = fe.path().filename().string();
          if (hidden(fname)) continue;
          VIT_USER_CHECK(fe.is_regular_file(), fe.path().string(),
                         ": unexpected folder or special file (expected <split>/<class>/<image>)");
          imgs.push_back({fname, -1, 0});
        }
      }
    }
  } else {
    const std::set<std::string> wanted(splits.begin(), splits.end());
    for (const std::string& split : splits) {
      where[split] = split + "/ in " + join(zip_names, ", ");
    }
    std::map<std::string, std::string> seen;  // rel path -> archive, for duplicates
    for (size_t ai = 0; ai < archives_.size(); ++ai) {
      zip_t* z = archives_[ai].handle;
      const zip_int64_t n = zip_get_num_entries(z, 0);
      for (zip_int64_t i = 0; i < n; ++i) {
        const char* raw = zip_get_name(z, static_cast<zip_uint64_t>(i), ZIP_FL_ENC_GUESS);
        VIT_USER_CHECK(raw != nullptr, archives_[ai].path, ": unreadable entry name #", i, ": ",
                       zip_strerror(z));
        std::string name = raw;
        const bool is_dir = !name.empty() && name.back() == '/';
        if (is_dir) name.pop_back();
        std::vector<std::string> parts = split_path(name);
        if (std::any_of(parts.begin(), parts.end(), [](const std::string& p) { return hidden(p) || p == "__MACOSX"; }))
          continue;
        if (is_dir && parts.size() <= 2) {  // a split or class folder entry
          if (parts.size() == 2 && wanted.count(parts[0])) found[parts[0]][parts[1]];
          continue;
        }
        VIT_USER_CHECK(!is_dir && parts.size() == 3, archives_[ai].path, ": unexpected entry ", raw,
                       " (expected <split>/<class>/<image>)");
        if (!wanted.count(parts[0])) continue;
        const auto dup = seen.find(name);
        VIT_USER_CHECK(dup == seen.end(), archives_[ai].path, ": entry ", name, " also appears in ", dup->second);
        seen[name] = archives_[ai].path;
        found[parts[0]][parts[1]].push_back({parts[2], static_cast<int>(ai), static_cast<uint64_t>(i)});
      }
    }
    for (const std::string& split : splits) {
      VIT_USER_CHECK(found.count(split), "no split '", split, "' in ", join(zip_names, ", "), " (expected entries ",
                     split, "/<class>/<image>; choose splits with --splits)");
    }
  }

  // Class order: as given, or alphabetical over what the splits hold.
  InputManifest m;
  if (!classes.empty()) {
    m.class_names = classes;
    std::set<std::string> uniq(classes.begin(), classes.end());
    VIT_USER_CHECK(uniq.size() == classes.size(), "--classes lists a class twice: ", join(classes, ","));
  } else {
    std::set<std::string> all;
    for (const auto& [split, cm] : found)
      for (const auto& [c, imgs] : cm) all.insert(c);
    m.class_names.assign(all.begin(), all.end());
  }
  const std::set<std::string> class_set(m.class_names.begin(), m.class_names.end());

  for (const std::string& split : splits) {
    ClassMap& cm = found[split];
    VIT_USER_CHECK(!cm.empty(), where[split], ": empty folder (no class folders)");
    for (const auto& [c, imgs] : cm) {
      VIT_USER_CHECK(class_set.count(c), where[split], ": class folder '", c, "' is not in --classes ",
                     join(m.class_names, ","));
    }
    SplitManifest sm;
    sm.name = split;
    for (size_t label = 0; label < m.class_names.size(); ++label) {
      const std::string& c = m.class_names[label];
      auto it = cm.find(c);
      VIT_USER_CHECK(it != cm.end(), where[split], ": no folder for class '", c, "' (classes: ",
                     join(m.class_names, ","), ")");
      std::vector<Found>& imgs = it->second;
      VIT_USER_CHECK(!imgs.empty(), folder_.empty() ? str_cat(split, "/", c, "/ in ", join(zip_names, ", "))
                                                    : (fs::path(folder_) / split / c).string(),
                     ": empty folder (no images)");
      std::sort(imgs.begin(), imgs.end(), [](const Found& a, const Found& b) { return a.name < b.name; });
      for (const Found& f : imgs) {
        sm.images.push_back({split + "/" + c + "/" + f.name, static_cast<int64_t>(label), f.archive, f.zip_index});
      }
    }
    m.splits.push_back(std::move(sm));
  }
  return m;
}

void InputSet::read(const ImageEntry& e, std::vector<uint8_t>* bytes) const {
  if (e.archive < 0) {
    const fs::path p = fs::path(folder_) / e.rel_path;
    std::ifstream in(p, std::ios::binary | std::ios::ate);
    VIT_USER_CHECK(in, p.string(), ": cannot open: ", std::strerror(errno));
    const std::streamoff size = in.tellg();
    bytes->resize(static_cast<size_t>(size));
    in.seekg(0);
    VIT_USER_CHECK(in.read(reinterpret_cast<char*>(bytes->data()), size), p.string(), ": read error");
    return;
  }
  const Archive& a = archives_[e.archive];
  std::lock_guard<std::mutex> guard(*a.lock);
  zip_stat_t st;
  zip_stat_init(&st);
  VIT_USER_CHECK(zip_stat_index(a.handle, e.zip_index, 0, &st) == 0 && (st.valid & ZIP_STAT_SIZE), describe(e),
                 ": cannot stat entry: ", zip_strerror(a.handle));
  zip_file_t* f = zip_fopen_index(a.handle, e.zip_index, 0);
  VIT_USER_CHECK(f != nullptr, describe(e), ": cannot open entry: ", zip_strerror(a.handle));
  bytes->resize(static_cast<size_t>(st.size));
  zip_uint64_t done = 0;
  // Read to the end: libzip checks the entry's CRC only once the end is reached.
  while (true) {
    const zip_int64_t n = zip_fread(f, bytes->data() + done, st.size - done);
    if (n < 0) {
      const std::string why = zip_error_strerror(zip_file_get_error(f));
      zip_fclose(f);
      throw UserError(str_cat(describe(e), ": cannot read entry: ", why));
    }
    if (n == 0) break;
    done += static_cast<zip_uint64_t>(n);
    if (done == st.size) {
      char extra;
      const zip_int64_t m = zip_fread(f, &extra, 1);  // 0 at the end; triggers the CRC check
      if (m < 0) {
        const std::string why = zip_error_strerror(zip_file_get_error(f));
        zip_fclose(f);
        throw UserError(str_cat(describe(e), ": cannot read entry: ", why));
      }
      VIT_USER_CHECK(m == 0, describe(e), ": entry longer than its recorded size");
      break;
    }
  }
  const int rc = zip_fclose(f);
  VIT_USER_CHECK(rc == 0, describe(e), ": corrupt entry (zip error ", rc, ")");
  VIT_USER_CHECK(done == st.size, describe(e), ": truncated entry (", done, " of ", st.size, " bytes)");
}

}  // namespace vit::data_prep
