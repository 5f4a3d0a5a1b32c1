// Small HDF5 (C API) helpers shared by the writer (data_prep/) and the reader.
//
// Header-only so that vit_data_prep can use it without linking vit_data.
// - H5Handle closes any hid_t with the right H5?close on scope exit.
// - HDF5's own error printing is switched off (quiet_hdf5_errors); failures
//   become exceptions whose text carries the innermost HDF5 message.
// - hdf5_mutex(): the serial HDF5 library is not thread-safe, so every call
//   made while other threads may also call HDF5 (the loader's workers) takes
//   this one process-wide lock.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace vit::data::h5 {

inline std::mutex& hdf5_mutex() {
  static std::mutex m;
  return m;
}

// Switches off HDF5's automatic printing of its error stack (we report errors
// ourselves). Per thread in a thread-safe build, global otherwise: cheap,
// so call it before any sequence of HDF5 calls.
inline void quiet_hdf5_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// The innermost description on HDF5's current error stack ("" when empty);
// short_reason() below makes a file-driver dump readable.
inline std::string last_error_text() {
  std::string text;
  auto walker = [](unsigned n, const H5E_error2_t* err, void* data) -> herr_t {
    auto* out = static_cast<std::string*>(data);
    if (n == 0 && err->desc != nullptr) *out = err->desc;  // innermost first
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walker, &text);
  H5Eclear2(H5E_DEFAULT);
  return text;
}

// HDF5's file-driver messages are a dump ("file write failed: time = ...,
// filename = ..., errno = 28, error message = 'No space left on device', buf =
// ..."); for a user only the system's reason matters. Returns that reason
// when the text carries one, else the text itself.
inline std::string short_reason(const std::string& hdf5_text) {
  const std::string key = "error message = '";
  const size_t at = hdf5_text.find(key);
  if (at == std::string::npos) return hdf5_text;
  const size_t begin = at + key.size();
  const size_t end = hdf5_text.find('\'', begin);
  return hdf5_text.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

// Owns one HDF5 identifier (file, group, dataset, dataspace, type, plist, attribute).
class H5Handle {
 public:
  H5Handle() = default;
  explicit H5Handle(hid_t id) : id_(id) {}
  ~H5Handle() { reset(); }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  H5Handle(H5Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  H5Handle& operator=(H5Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  explicit operator bool() const { return valid(); }

  // Closes and reports whether the close succeeded (a file's close flushes:
  // a failure there means the file is not complete).
  bool close() {
    if (id_ < 0) return true;
    herr_t rc = 0;
    switch (H5Iget_type(id_)) {
      case H5I_FILE: rc = H5Fclose(id_); break;
      case H5I_GROUP: rc = H5Gclose(id_); break;
      case H5I_DATASET: rc = H5Dclose(id_); break;
      case H5I_DATASPACE: rc = H5Sclose(id_); break;
      case H5I_DATATYPE: rc = H5Tclose(id_); break;
      case H5I_ATTR: rc = H5Aclose(id_); break;
      case H5I_GENPROP_LST: rc = H5Pclose(id_); break;
      default: rc = H5Idec_ref(id_); break;
    }
    id_ = H5I_INVALID_HID;
    return rc >= 0;
  }
  void reset() { close(); }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// Throws vit::Error naming `what` and HDF5's reason when `id` is invalid.
inline H5Handle checked(hid_t id, const std::string& what) {
  if (id < 0) VIT_THROW("HDF5: ", what, " failed: ", last_error_text());
  return H5Handle(id);
}
inline void check_status(herr_t rc, const std::string& what) {
  if (rc < 0) VIT_THROW("HDF5: ", what, " failed: ", last_error_text());
}

// A variable-length UTF-8 string type.
inline H5Handle vlen_string_type() {
  H5Handle t = checked(H5Tcopy(H5T_C_S1), "H5Tcopy");
  check_status(H5Tset_size(t.get(), H5T_VARIABLE), "H5Tset_size");
  check_status(H5Tset_cset(t.get(), H5T_CSET_UTF8), "H5Tset_cset");
  return t;
}

// ---- writing attributes -------------------------------------------------------

inline void write_attr_int64(hid_t obj, const char* name, int64_t value) {
  H5Handle space = checked(H5Screate(H5S_SCALAR), "H5Screate");
  H5Handle attr = checked(H5Acreate2(obj, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                          std::string("create attribute ") + name);
  check_status(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), std::string("write attribute ") + name);
}

inline void write_attr_string(hid_t obj, const char* name, const std::string& value) {
  H5Handle type = vlen_string_type();
  H5Handle space = checked(H5Screate(H5S_SCALAR), "H5Screate");
  H5Handle attr = checked(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                          std::string("create attribute ") + name);
  const char* p = value.c_str();
  check_status(H5Awrite(attr.get(), type.get(), &p), std::string("write attribute ") + name);
}

inline void write_attr_strings(hid_t obj, const char* name, const std::vector<std::string>& values) {
  H5Handle type = vlen_string_type();
  const hsize_t n = values.size();
  H5Handle space = checked(H5Screate_simple(1, &n, nullptr), "H5Screate_simple");
  H5Handle attr = checked(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                          std::string("create attribute ") + name);
  std::vector<const char*> ptrs;
  for (const auto& v : values) ptrs.push_back(v.c_str());
  check_status(H5Awrite(attr.get(), type.get(), ptrs.data()), std::string("write attribute ") + name);
}

// ---- reading attributes (nullopt-free: callers check H5Aexists first) ----------

inline bool has_attr(hid_t obj, const char* name) { return H5Aexists(obj, name) > 0; }

inline int64_t read_attr_int64(hid_t obj, const char* name) {
  H5Handle attr = checked(H5Aopen(obj, name, H5P_DEFAULT), std::string("open attribute ") + name);
  int64_t v = 0;
  check_status(H5Aread(attr.get(), H5T_NATIVE_INT64, &v), std::string("read attribute ") + name);
  return v;
}

// Reads a string or string-array attribute, fixed or variable length.
inline std::vector<std::string> read_attr_strings(hid_t obj, const char* name) {
  H5Handle attr = checked(H5Aopen(obj, name, H5P_DEFAULT), std::string("open attribute ") + name);
  H5Handle file_type = checked(H5Aget_type(attr.get()), "H5Aget_type");
  if (H5Tget_class(file_type.get()) != H5T_STRING) VIT_THROW("attribute ", name, " is not a string");
  H5Handle space = checked(H5Aget_space(attr.get()), "H5Aget_space");
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  std::vector<std::string> out;
  if (n <= 0) return out;
  if (H5Tis_variable_str(file_type.get()) > 0) {
    H5Handle type = vlen_string_type();
    std::vector<char*> ptrs(n, nullptr);
    check_status(H5Aread(attr.get(), type.get(), ptrs.data()), std::string("read attribute ") + name);
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    H5Dvlen_reclaim(type.get(), space.get(), H5P_DEFAULT, ptrs.data());
  } else {
    const size_t len = H5Tget_size(file_type.get());
    std::vector<char> buf(len * n);
    check_status(H5Aread(attr.get(), file_type.get(), buf.data()), std::string("read attribute ") + name);
    for (hssize_t i = 0; i < n; ++i) {
      const char* s = buf.data() + i * len;
      size_t l = 0;
      while (l < len && s[l] != '\0') ++l;
      out.emplace_back(s, l);
    }
  }
  return out;
}

inline std::string read_attr_string(hid_t obj, const char* name) {
  auto v = read_attr_strings(obj, name);
  if (v.size() != 1) VIT_THROW("attribute ", name, " holds ", v.size(), " strings, expected 1");
  return v[0];
}

}  // namespace vit::data::h5
