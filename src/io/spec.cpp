// Loading, validating and printing the experiment spec (see spec.h).
//
// Everything here is driven by the schema table (spec_schema.cpp): a value
// is text until the table says which member it fills and how to read it, so
// `lr: "2e-4"` and `--set train.lr=2e-4` go through the same parser, and a
// default is parsed exactly like a user's value.
//
// Messages: every problem is collected (not just the first), one line each,
// shaped `<where>: <dotted.field>: <what is wrong> (<what is allowed>)`; the
// caller gets them all at once in one vit::UserError. Cross-field rules run
// only once every single field is valid, so one typo does not cascade into
// a page of follow-up complaints.
//
// Line numbers: yaml-cpp marks are 0-based; a key with no value (`lr:`) has
// its value's mark on the NEXT line, so messages about a value use the key's
// line.
#include "io/spec.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "core/error.h"

namespace vit {

// ---------------------------------------------------------------------------
// Schema helpers
// ---------------------------------------------------------------------------

namespace {

// Shortest "%g" text that reads back to the same double; floats keep a '.'
// so that they look like floats to a reader ("2.0", not "2").
std::string format_number(double v) {
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  if (std::isfinite(v) && s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

// Integral bounds print without ".0" ("> 0", "[0, 1]").
std::string format_bound(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e18) {
    return std::to_string(static_cast<long long>(v));
  }
  return format_number(v);
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

constexpr const char* kNameRule = "one or more letters, digits, '.', '_', '-'";

}  // namespace

const char* field_type_name(FieldType type) {
  switch (type) {
    case FieldType::Int: return "int";
    case FieldType::Float: return "float";
    case FieldType::Bool: return "bool";
    case FieldType::String: return "string";
    case FieldType::Name: return "name";
    case FieldType::Choice: return "choice";
  }
  return "?";
}

bool FieldRange::contains(double v) const {
  const bool lo_ok = lo_open ? v > lo : v >= lo;
  const bool hi_ok = hi_open ? v < hi : v <= hi;
  return lo_ok && hi_ok;
}

std::string FieldRange::describe(bool integer) const {
  const bool has_lo = std::isfinite(lo), has_hi = std::isfinite(hi);
  if (has_lo && has_hi) {
    if (integer && !lo_open && !hi_open) return str_cat(format_bound(lo), " to ", format_bound(hi));
    return str_cat(lo_open ? "(" : "[", format_bound(lo), ", ", format_bound(hi), hi_open ? ")" : "]");
  }
  if (has_lo) return str_cat(lo_open ? "> " : ">= ", format_bound(lo));
  if (has_hi) return str_cat(hi_open ? "< " : "<= ", format_bound(hi));
  return "any";
}

std::string FieldInfo::section() const {
  const std::string p = path;
  return p.substr(0, p.find('.'));
}

std::string FieldInfo::key() const {
  const std::string p = path;
  return p.substr(p.find('.') + 1);
}

const FieldInfo* find_field(const std::string& dotted_path) {
  for (const FieldInfo& f : spec_schema()) {
    if (dotted_path == f.path) return &f;
  }
  return nullptr;
}

std::string SpecOrigin::locate(const std::string& dotted_path) const {
  const auto it = where.find(dotted_path);
  if (it != where.end()) return it->second;
  return file.empty() ? "<defaults>" : file;
}

// ---------------------------------------------------------------------------
// Reading one value
// ---------------------------------------------------------------------------

namespace {

// A value as the parser saw it: scalar text, or what it was instead.
struct RawValue {
  enum Kind { Scalar, Null, Mapping, Sequence } kind = Scalar;
  std::string text;

  std::string got() const {
    switch (kind) {
      case Null: return "nothing";
      case Mapping: return "a mapping";
      case Sequence: return "a sequence";
      case Scalar: break;
    }
    return "'" + text + "'";
  }
};

RawValue raw_from_node(const YAML::Node& node) {
  if (node.IsMap()) return {RawValue::Mapping, ""};
  if (node.IsSequence()) return {RawValue::Sequence, ""};
  if (node.IsScalar()) return {RawValue::Scalar, node.Scalar()};
  return {RawValue::Null, ""};
}

template <typename T>
T& member(ExperimentSpec& spec, const FieldInfo& f) {
  return *static_cast<T*>(f.at(spec));
}
template <typename T>
const T& member(const ExperimentSpec& spec, const FieldInfo& f) {
  // The accessor only takes an address; it never writes.
  return *static_cast<const T*>(f.at(const_cast<ExperimentSpec&>(spec)));
}

std::string out_of_range(const FieldInfo& f, const std::string& text) {
  return str_cat(text, " is out of range (allowed: ", f.range.describe(f.type == FieldType::Int), ")");
}

// Parses `v` into the member of `f`. Returns "" on success, else the problem
// ("<what is wrong> (<what is allowed>)"); the member is then left unchanged.
std::string assign(ExperimentSpec& spec, const FieldInfo& f, const RawValue& v) {
  const bool scalar = v.kind == RawValue::Scalar;
  const std::string& t = v.text;
  switch (f.type) {
    case FieldType::Int: {
      if (!scalar || t.empty()) return "expected an integer, got " + v.got();
      const char* b = t.data() + (t[0] == '+' ? 1 : 0);
      const char* e = t.data() + t.size();
      long long x = 0;
      const auto [ptr, ec] = std::from_chars(b, e, x);
      if (ptr != e || (ec != std::errc() && ec != std::errc::result_out_of_range)) {
        return "expected an integer, got " + v.got();
      }
      if (ec == std::errc::result_out_of_range || x < INT_MIN || x > INT_MAX) {
        return str_cat(t, " is out of range (allowed: ", f.range.describe(true), ", at most ", INT_MAX, ")");
      }
      if (!f.range.contains(static_cast<double>(x))) return out_of_range(f, t);
      member<int>(spec, f) = static_cast<int>(x);
      return "";
    }
    case FieldType::Float: {
      if (!scalar || t.empty()) return "expected a number, got " + v.got();
      const char* b = t.data() + (t[0] == '+' ? 1 : 0);
      const char* e = t.data() + t.size();
      double x = 0;
      const auto [ptr, ec] = std::from_chars(b, e, x);
      if (ptr != e || ec != std::errc() || !std::isfinite(x)) return "expected a number, got " + v.got();
      if (!f.range.contains(x)) return out_of_range(f, t);
      member<double>(spec, f) = x;
      return "";
    }
    case FieldType::Bool: {
      std::string lower = t;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (scalar && (lower == "true" || lower == "yes" || lower == "on")) {
        member<bool>(spec, f) = true;
        return "";
      }
      if (scalar && (lower == "false" || lower == "no" || lower == "off")) {
        member<bool>(spec, f) = false;
        return "";
      }
      return "expected true or false, got " + v.got();
    }
    case FieldType::String: {
      // `pretrained:` (no value) means the empty string.
      if (v.kind == RawValue::Mapping || v.kind == RawValue::Sequence) return "expected a string, got " + v.got();
      member<std::string>(spec, f) = t;
      return "";
    }
    case FieldType::Name: {
      if (v.kind == RawValue::Mapping || v.kind == RawValue::Sequence) return "expected a name, got " + v.got();
      if (t.empty() || !std::all_of(t.begin(), t.end(), is_name_char)) {
        return str_cat("'", t, "' is not allowed (allowed: ", kNameRule, ")");
      }
      member<std::string>(spec, f) = t;
      return "";
    }
    case FieldType::Choice: {
      if (v.kind == RawValue::Mapping || v.kind == RawValue::Sequence) {
        return str_cat("expected one of ", join(f.choices, ", "), ", got ", v.got());
      }
      if (std::find(f.choices.begin(), f.choices.end(), t) == f.choices.end()) {
        return str_cat("'", t, "' is not allowed (allowed: ", join(f.choices, ", "), ")");
      }
      member<std::string>(spec, f) = t;
      return "";
    }
  }
  return "unknown field type";
}

// The value as YAML text that assign() reads back unchanged.
std::string render(const ExperimentSpec& spec, const FieldInfo& f) {
  switch (f.type) {
    case FieldType::Int: return std::to_string(member<int>(spec, f));
    case FieldType::Float: return format_number(member<double>(spec, f));
    case FieldType::Bool: return member<bool>(spec, f) ? "true" : "false";
    case FieldType::Choice: return member<std::string>(spec, f);
    case FieldType::String:
    case FieldType::Name: {
      // Always double-quoted: a path may hold ': ', '#', or read as null/bool.
      std::string out = "\"";
      for (const char c : member<std::string>(spec, f)) {
        if (c == '"' || c == '\\') {
          out += '\\';
          out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
          char esc[8];
          std::snprintf(esc, sizeof(esc), "\\x%02x", static_cast<unsigned char>(c));
          out += esc;
        } else {
          out += c;
        }
      }
      return out + "\"";
    }
  }
  return "";
}

// The value as text for messages: "0.5", "true", and "2" rather than "2.0"
// (reads better in a sentence).
std::string value_text(const ExperimentSpec& spec, const std::string& path) {
  const FieldInfo* f = find_field(path);
  VIT_CHECK(f != nullptr, "no field ", path);
  if (f->type == FieldType::Float) {
    const double x = member<double>(spec, *f);
    if (x == std::floor(x) && std::fabs(x) < 1e15) return std::to_string(static_cast<long long>(x));
  }
  return render(spec, *f);
}

// What print_schema says a field accepts.
std::string describe_type(const FieldInfo& f) {
  switch (f.type) {
    case FieldType::Int:
    case FieldType::Float: {
      const std::string r = f.range.describe(f.type == FieldType::Int);
      return r == "any" ? field_type_name(f.type) : str_cat(field_type_name(f.type), ", ", r);
    }
    case FieldType::Choice: return "choice: " + join(f.choices, " | ");
    case FieldType::Name: return "name (letters, digits, '.', '_', '-')";
    default: return field_type_name(f.type);
  }
}

// ---------------------------------------------------------------------------
// Nearest valid name
// ---------------------------------------------------------------------------

// Edit distance counting a swap of neighbours as one edit ("trian" -> "train").
size_t edit_distance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

// How far the user's key is from a valid key: edit distance, but a key that
// is a prefix of the other ("warmup" of "warmup_ratio") counts as one edit.
size_t key_distance(const std::string& typed, const std::string& valid) {
  const std::string& shorter = typed.size() < valid.size() ? typed : valid;
  const std::string& longer = typed.size() < valid.size() ? valid : typed;
  if (shorter.size() >= 2 && shorter != longer && longer.compare(0, shorter.size(), shorter) == 0) return 1;
  return edit_distance(typed, valid);
}

// The valid name nearest to what the user wrote, or "" when none is close.
// `section` is "" for a top-level key. A field found under another section
// costs one more edit than a same-section match, so `model.lr` suggests
// `train.lr` while `model.hiden` stays in `model`.
std::string nearest_name(const std::string& section, const std::string& key) {
  const std::string typed = section.empty() ? key : section + "." + key;
  size_t best = SIZE_MAX;
  std::string best_name;
  auto consider = [&](size_t d, const std::string& name) {
    if (d < best) {
      best = d;
      best_name = name;
    }
  };
  if (section.empty()) {
    for (const std::string& s : spec_sections()) consider(key_distance(key, s), s);
  }
  for (const FieldInfo& f : spec_schema()) {
    const bool same_section = f.section() == section;
    consider(key_distance(key, f.key()) + (same_section ? 0 : 1), f.path);
    consider(edit_distance(typed, f.path), f.path);
  }
  const size_t allowed = std::max<size_t>(1, (key.size() + 2) / 3);
  return best <= allowed ? best_name : "";
}

std::string fields_of(const std::string& section) {
  std::vector<std::string> keys;
  for (const FieldInfo& f : spec_schema()) {
    if (f.section() == section) keys.push_back(f.key());
  }
  return join(keys, ", ");
}

std::string unknown_field_message(const std::string& section, const std::string& key) {
  const std::string near = nearest_name(section, key);
  if (!near.empty()) return str_cat("unknown field (did you mean '", near, "'?)");
  return str_cat("unknown field (allowed in ", section, ": ", fields_of(section), ")");
}

std::string unknown_section_message(const std::string& key) {
  const std::string near = nearest_name("", key);
  if (!near.empty()) return str_cat("unknown section (did you mean '", near, "'?)");
  return str_cat("unknown section (allowed: ", join(spec_sections(), ", "), ")");
}

bool is_section(const std::string& name) {
  const auto& s = spec_sections();
  return std::find(s.begin(), s.end(), name) != s.end();
}

// ---------------------------------------------------------------------------
// Collecting problems
// ---------------------------------------------------------------------------

struct Problems {
  std::vector<std::string> lines;

  void add(const std::string& where, const std::string& field, const std::string& what) {
    lines.push_back(str_cat(where, ": ", field, ": ", what));
  }
  void throw_if_any() const {
    if (!lines.empty()) throw UserError(join(lines, "\n"));
  }
};

// ---------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------

std::string at_line(const std::string& file, const YAML::Mark& mark) {
  return str_cat(file, ":", mark.line >= 0 ? mark.line + 1 : 1);
}

void load_section(ExperimentSpec& spec, const std::string& label, const std::string& section,
                  const YAML::Node& key_node, const YAML::Node& body, Problems& problems) {
  if (body.IsNull()) return;  // `eval:` with nothing under it
  if (!body.IsMap()) {
    problems.add(at_line(label, key_node.Mark()), section,
                 str_cat("expected a mapping of ", section, " fields, got ", raw_from_node(body).got(),
                         " (allowed: ", fields_of(section), ")"));
    return;
  }
  std::map<std::string, int> first_line;
  for (auto it = body.begin(); it != body.end(); ++it) {
    const std::string key = it->first.IsScalar() ? it->first.Scalar() : "?";
    const std::string path = section + "." + key;
    const std::string where = at_line(label, it->first.Mark());
    const FieldInfo* f = find_field(path);
    if (f == nullptr) {
      problems.add(where, path, unknown_field_message(section, key));
      continue;
    }
    const int line = it->first.Mark().line + 1;
    if (first_line.count(key)) {
      problems.add(where, path, str_cat("set twice (first at line ", first_line[key], "; allowed: once)"));
      continue;
    }
    first_line[key] = line;
    const std::string problem = assign(spec, *f, raw_from_node(it->second));
    if (!problem.empty()) {
      problems.add(where, path, problem);
      continue;
    }
    spec.origin.where[path] = where;
  }
}

// YAML indents with spaces only; yaml-cpp reports a tab there as "illegal
// map value" or "illegal tab when looking for indentation". Finds the first
// tab in the leading whitespace of line `error_line` (0-based), or failing
// that of an earlier line: {line, column}, 1-based; {0, 0} when none.
std::pair<int, int> indentation_tab(const std::string& text, int error_line) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  auto tab_in_indent = [&](int i) {
    const std::string& l = lines[static_cast<size_t>(i)];
    for (size_t c = 0; c < l.size() && (l[c] == ' ' || l[c] == '\t'); ++c) {
      if (l[c] == '\t') return static_cast<int>(c) + 1;
    }
    return 0;
  };
  const int last = std::min(error_line, static_cast<int>(lines.size()) - 1);
  if (last >= 0) {
    if (const int col = tab_in_indent(last)) return {last + 1, col};
  }
  for (int i = 0; i < last; ++i) {
    if (const int col = tab_in_indent(i)) return {i + 1, col};
  }
  return {0, 0};
}

void load_document(ExperimentSpec& spec, const std::string& label, const std::string& text,
                   Problems& problems) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::ParserException& e) {
    const auto [tab_line, tab_column] = indentation_tab(text, e.mark.line);
    if (tab_line > 0) {
      problems.lines.push_back(str_cat(label, ":", tab_line, ":", tab_column,
                                       ": a tab in the indentation (YAML indents with spaces only: "
                                       "replace the tab with spaces)"));
      return;
    }
    problems.lines.push_back(str_cat(at_line(label, e.mark), ": YAML syntax error: ", e.msg,
                                     " (at column ", e.mark.column + 1, ")"));
    return;
  }
  if (docs.empty()) return;  // an empty file: every default
  if (docs.size() > 1) {
    problems.lines.push_back(str_cat(at_line(label, docs[1].Mark()),
                                     ": a second YAML document (allowed: one document per spec file)"));
    return;
  }
  const YAML::Node& root = docs[0];
  if (root.IsNull()) return;  // only comments
  if (!root.IsMap()) {
    problems.lines.push_back(str_cat(at_line(label, root.Mark()), ": expected a mapping of sections, got ",
                                     raw_from_node(root).got(), " (allowed: ", join(spec_sections(), ", "), ")"));
    return;
  }
  std::map<std::string, int> first_line;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string key = it->first.IsScalar() ? it->first.Scalar() : "?";
    const std::string where = at_line(label, it->first.Mark());
    if (!is_section(key)) {
      problems.add(where, key, unknown_section_message(key));
      continue;
    }
    if (first_line.count(key)) {
      problems.add(where, key, str_cat("section written twice (first at line ", first_line[key],
                                       "; allowed: once, with all its fields)"));
      continue;
    }
    first_line[key] = it->first.Mark().line + 1;
    load_section(spec, label, key, it->first, it->second, problems);
  }
}

// ---------------------------------------------------------------------------
// --set overrides
// ---------------------------------------------------------------------------

void apply_override(ExperimentSpec& spec, const std::string& arg, Problems& problems) {
  const std::string where = "--set " + arg;
  const size_t eq = arg.find('=');
  const std::string path = arg.substr(0, eq);
  if (eq == std::string::npos || path.empty()) {
    problems.add(where, path.empty() ? "?" : path, "expected section.field=value (allowed: e.g. --set train.lr=1e-4)");
    return;
  }
  const RawValue value{RawValue::Scalar, arg.substr(eq + 1)};
  const FieldInfo* f = find_field(path);
  if (f == nullptr) {
    const size_t dot = path.find('.');
    if (dot == std::string::npos) {
      if (is_section(path)) {
        problems.add(where, path, str_cat("a section, not a field (allowed: ", fields_of(path), ")"));
      } else {
        problems.add(where, path, unknown_section_message(path));
      }
      return;
    }
    const std::string section = path.substr(0, dot), key = path.substr(dot + 1);
    if (is_section(section)) {
      problems.add(where, path, unknown_field_message(section, key));
    } else {
      const std::string near = nearest_name(section, key);
      problems.add(where, path,
                   near.empty() ? str_cat("unknown field (allowed sections: ", join(spec_sections(), ", "), ")")
                                : str_cat("unknown field (did you mean '", near, "'?)"));
    }
    return;
  }
  const std::string problem = assign(spec, *f, value);
  if (!problem.empty()) {
    problems.add(where, path, problem);
    return;
  }
  spec.origin.where[path] = where;
}

// ---------------------------------------------------------------------------
// Cross-field rules
// ---------------------------------------------------------------------------

// world_size <= 0: the rules that need no world size only.
void check_cross_fields(const ExperimentSpec& s, int world_size, Problems& problems) {
  const SpecOrigin& o = s.origin;
  auto add = [&](const std::string& field, const std::string& what) {
    problems.add(o.locate(field), field, what);
  };
  const std::string& plugin = s.plugin.name;
  const bool hybrid = plugin == "hybrid_parallel";

  // Model shapes.
  if (s.model.hidden % s.model.heads != 0) {
    add("model.heads", str_cat(s.model.heads, " does not divide model.hidden ", s.model.hidden,
                               " (allowed: a divisor of model.hidden)"));
  }
  if (s.model.image_size % s.model.patch_size != 0) {
    add("model.patch_size", str_cat(s.model.patch_size, " does not divide model.image_size ", s.model.image_size,
                                    " (allowed: a divisor of model.image_size)"));
  }

  // Precision belongs to the plugin.
  if (plugin == "torch_ddp" && s.plugin.precision != "fp32") {
    add("plugin.precision", str_cat(s.plugin.precision, " needs mixed precision, which torch_ddp does not do ",
                                    "(allowed: fp32 with torch_ddp; use torch_ddp_fp16 for ", s.plugin.precision, ")"));
  }
  if (plugin == "torch_ddp_fp16" && s.plugin.precision == "fp32") {
    add("plugin.precision", "fp32 with torch_ddp_fp16 (allowed: fp16 or bf16; use torch_ddp for fp32)");
  }
  // The CPU computes in fp32 only (whether `auto` means the CPU is known
  // only where the run starts: the preflight checks that case).
  if (s.run.device == "cpu" && s.plugin.precision != "fp32") {
    add("plugin.precision", str_cat(s.plugin.precision, " needs a GPU, but run.device is cpu (allowed on the CPU: "
                                    "fp32, with plugin.name torch_ddp)"));
  }
  // fp16 loss scaling: the start must lie inside the clamp.
  if (s.plugin.min_scale > s.plugin.max_scale) {
    add("plugin.min_scale", str_cat(format_number(s.plugin.min_scale), " is above plugin.max_scale ",
                                    format_number(s.plugin.max_scale), " (allowed: <= plugin.max_scale)"));
  } else if (s.plugin.initial_scale < s.plugin.min_scale || s.plugin.initial_scale > s.plugin.max_scale) {
    add("plugin.initial_scale",
        str_cat(format_number(s.plugin.initial_scale), " is outside [plugin.min_scale, plugin.max_scale] (allowed: ",
                format_number(s.plugin.min_scale), " to ", format_number(s.plugin.max_scale), ")"));
  }

  // Options that only one plugin reads: silently ignoring them would run a
  // different experiment from the one written down.
  auto only_with = [&](const std::string& field, bool set, const std::string& needed, const std::string& allowed) {
    if (set && plugin != needed) {
      add(field, str_cat(value_text(s, field), " needs plugin.name ", needed, ", not ", plugin,
                         " (allowed: ", allowed, " with ", plugin, ")"));
    }
  };
  only_with("plugin.tp_size", s.plugin.tp_size > 1, "hybrid_parallel", "1");
  only_with("plugin.pp_size", s.plugin.pp_size > 1, "hybrid_parallel", "1");
  only_with("plugin.zero_stage", s.plugin.zero_stage > 0, "hybrid_parallel", "0");
  only_with("plugin.offload_optim_frac", s.plugin.offload_optim_frac > 0, "gemini", "0");
  only_with("plugin.offload_param_frac", s.plugin.offload_param_frac > 0, "gemini", "0");
  only_with("plugin.cpu_update", s.plugin.cpu_update != "auto", "gemini", "auto");
  if (plugin == "gemini" && s.plugin.reduce_dtype != "fp32") {
    add("plugin.reduce_dtype", str_cat(s.plugin.reduce_dtype, " with plugin.name gemini, whose chunks are reduced "
                                       "in fp32 (allowed: fp32 with gemini; bf16 with torch_ddp, torch_ddp_fp16, "
                                       "low_level_zero or hybrid_parallel)"));
  }
  if (plugin == "gemini" && s.plugin.offload_param_frac > s.plugin.offload_optim_frac) {
    add("plugin.offload_param_frac",
        str_cat(format_number(s.plugin.offload_param_frac), " is above plugin.offload_optim_frac ",
                format_number(s.plugin.offload_optim_frac),
                " (allowed: at most plugin.offload_optim_frac; offloaded parameters are updated on the host)"));
  }
  if (s.plugin.num_microbatches > 1 && !(hybrid && s.plugin.pp_size > 1)) {
    add("plugin.num_microbatches",
        str_cat(s.plugin.num_microbatches,
                " micro-batches need pipeline stages (allowed: 1 unless plugin.name is hybrid_parallel "
                "with plugin.pp_size > 1)"));
  }
  if (s.train.batch_size % s.plugin.num_microbatches != 0) {
    add("plugin.num_microbatches", str_cat(s.plugin.num_microbatches, " does not divide train.batch_size ",
                                           s.train.batch_size, " (allowed: a divisor of train.batch_size)"));
  }
  if (hybrid && s.model.heads % s.plugin.tp_size != 0) {
    add("plugin.tp_size", str_cat(s.plugin.tp_size, " does not divide model.heads ", s.model.heads,
                                  " (allowed: a divisor of model.heads)"));
  }
  if (hybrid && s.model.mlp_dim % s.plugin.tp_size != 0) {
    add("plugin.tp_size", str_cat(s.plugin.tp_size, " does not divide model.mlp_dim ", s.model.mlp_dim,
                                  " (allowed: a divisor of model.mlp_dim)"));
  }
  if (hybrid && s.model.depth % s.plugin.pp_size != 0) {
    add("plugin.pp_size", str_cat(s.plugin.pp_size, " does not divide model.depth ", s.model.depth,
                                  " (allowed: a divisor of model.depth, so every stage holds as many blocks)"));
  }

  // Data augmentation.
  if (s.data.crop_ratio_min > s.data.crop_ratio_max) {
    add("data.crop_ratio_max", str_cat(format_number(s.data.crop_ratio_max), " is below data.crop_ratio_min ",
                                       format_number(s.data.crop_ratio_min), " (allowed: >= data.crop_ratio_min)"));
  }

  // The training recipe.
  if (s.eval.keep_best && !s.eval.enabled) {
    add("eval.keep_best", "true needs the validation of eval.enabled (allowed: false when eval.enabled is false)");
  }
  if (s.model.pretrained_dropout && s.model.pretrained.empty()) {
    add("model.pretrained_dropout", "true needs model.pretrained (allowed: false without a pretrained checkpoint)");
  }
  if (s.model.pretrained_dropout && s.model.hidden_dropout > 0) {
    add("model.hidden_dropout", str_cat(format_number(s.model.hidden_dropout),
                                        " and model.pretrained_dropout both set the dropout (allowed: 0 when "
                                        "model.pretrained_dropout is true)"));
  }

  // Checkpoints need somewhere to live.
  if (s.checkpoint.dir.empty() && s.checkpoint.resume == "true") {
    add("checkpoint.resume", "true needs checkpoint.dir (allowed: auto or false when checkpoint.dir is empty)");
  }
  for (const auto& [field, value] : {std::pair<const char*, int>{"checkpoint.every_steps", s.checkpoint.every_steps},
                                     {"checkpoint.every_epochs", s.checkpoint.every_epochs},
                                     {"checkpoint.stop_after_steps", s.checkpoint.stop_after_steps}}) {
    if (s.checkpoint.dir.empty() && value > 0) {
      add(field, str_cat(value, " needs checkpoint.dir (allowed: 0 when checkpoint.dir is empty)"));
    }
  }

  // The world.
  if (world_size > 0) {
    const int model_ranks = s.plugin.tp_size * s.plugin.pp_size;
    if (world_size % model_ranks != 0) {
      const std::string field = s.plugin.tp_size > 1 ? "plugin.tp_size" : "plugin.pp_size";
      add(field, str_cat("tp_size ", s.plugin.tp_size, " x pp_size ", s.plugin.pp_size, " = ", model_ranks,
                         " does not divide the world size ", world_size,
                         " (allowed: a number of ranks that is a multiple of ", model_ranks, ")"));
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

ExperimentSpec::ExperimentSpec() {
  for (const FieldInfo& f : spec_schema()) {
    const std::string problem = assign(*this, f, RawValue{RawValue::Scalar, f.default_text});
    VIT_CHECK(problem.empty(), "the schema default of ", f.path, " is invalid: ", problem);
  }
}

ExperimentSpec load_spec_text(const std::string& yaml_text, const std::string& file_label,
                              const std::vector<std::string>& overrides) {
  ExperimentSpec spec;
  spec.origin.file = file_label;
  Problems problems;
  load_document(spec, file_label, yaml_text, problems);
  for (const std::string& arg : overrides) apply_override(spec, arg, problems);
  problems.throw_if_any();
  check_cross_fields(spec, 0, problems);
  problems.throw_if_any();
  return spec;
}

ExperimentSpec load_spec(const std::string& path, const std::vector<std::string>& overrides) {
  if (path.empty()) return load_spec_text("", "", overrides);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    // An ifstream opens a folder and reads nothing: that would be the defaults.
    throw UserError(str_cat(path, ": is a folder, not a spec file (give the YAML file, e.g. configs/quickstart.yaml)"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw UserError(str_cat(path, ": cannot open the spec file (", std::strerror(errno), ")"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return load_spec_text(text.str(), path, overrides);
}

void validate_layout(const ExperimentSpec& spec, int world_size) {
  VIT_CHECK(world_size >= 1, "world size ", world_size);
  Problems problems;
  check_cross_fields(spec, world_size, problems);
  problems.throw_if_any();
}

std::string resolved_yaml(const ExperimentSpec& spec) {
  std::ostringstream out;
  std::string section;
  for (const FieldInfo& f : spec_schema()) {
    if (f.section() != section) {
      section = f.section();
      out << section << ":\n";
    }
    const std::string line = str_cat("  ", f.key(), ": ", render(spec, f));
    out << line;
    const auto it = spec.origin.where.find(f.path);
    if (it != spec.origin.where.end()) {
      out << std::string(line.size() < 40 ? 40 - line.size() : 1, ' ') << "# " << it->second;
    }
    out << "\n";
  }
  return out.str();
}

std::string print_schema() {
  const ExperimentSpec defaults;
  std::ostringstream out;
  out << "# vit_hpc experiment spec: every field at its default, with its type and meaning.\n"
         "# Write any subset in a YAML file (vit_hpc SPEC); override any field with\n"
         "# --set section.field=value; check a spec with vit_hpc SPEC --check.\n";
  std::string section;
  for (const FieldInfo& f : spec_schema()) {
    if (f.section() != section) {
      section = f.section();
      out << "\n" << section << ":\n";
    }
    out << "  # " << describe_type(f) << ". " << f.meaning << "\n";
    out << "  " << f.key() << ": " << render(defaults, f) << "\n";
  }
  return out.str();
}

nlohmann::json spec_to_json(const ExperimentSpec& spec) {
  nlohmann::json j = nlohmann::json::object();
  for (const FieldInfo& f : spec_schema()) {
    nlohmann::json& slot = j[f.section()][f.key()];
    switch (f.type) {
      case FieldType::Int: slot = member<int>(spec, f); break;
      case FieldType::Float: slot = member<double>(spec, f); break;
      case FieldType::Bool: slot = member<bool>(spec, f); break;
      case FieldType::String:
      case FieldType::Name:
      case FieldType::Choice: slot = member<std::string>(spec, f); break;
    }
  }
  return j;
}

}  // namespace vit
