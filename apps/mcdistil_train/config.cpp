// Reading, validating and writing the mcdistil_train configuration. Every key lives in one
// table (key_table) that parsing, validation, to_toml, to_json and describe_keys all walk, and
// every default is read from a default-constructed Config, so neither can drift from the other.
#include "config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <string_view>
#include <variant>

#include <fmt/format.h>
#include <toml++/toml.h>

namespace mcd::app {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Where a value came from, for error messages: a file (with the value's line) or the command
// line.
struct Source {
  std::string name;
  std::int64_t line = 0;  // 0: not known
};

template <class... Args>
[[noreturn]] void config_fail(const Source& src, fmt::format_string<Args...> f, Args&&... args) {
  std::string msg = fmt::format("{}: {}", src.name, fmt::format(f, std::forward<Args>(args)...));
  if (src.line > 0) msg += fmt::format(" (line {})", src.line);
  throw ConfigError(msg);
}

using FieldRef =
    std::variant<bool*, std::int64_t*, double*, std::string*, std::vector<std::string>*>;

// What a key accepts beyond its type. Bounds apply to numbers; `choices`, `non_empty` and
// `distinct` to strings and to the items of string lists.
struct Check {
  double lo = -kInf, hi = kInf;
  bool lo_open = false, hi_open = false;
  std::vector<std::string_view> choices;  // empty: any string
  bool non_empty = false;
  bool distinct = false;
  // When set, a string is valid when this accepts it; `choices` then only describe the values.
  bool (*accepts)(std::string_view) = nullptr;
};

Check any_value() {
  return {};
}
Check at_least(double lo) {
  Check c;
  c.lo = lo;
  return c;
}
Check positive() {
  Check c;
  c.lo = 0.0;
  c.lo_open = true;
  return c;
}
Check between(double lo, double hi, bool hi_open) {
  Check c;
  c.lo = lo;
  c.hi = hi;
  c.hi_open = hi_open;
  return c;
}
Check non_empty() {
  Check c;
  c.non_empty = true;
  return c;
}
Check one_of(std::initializer_list<std::string_view> choices) {
  Check c;
  c.choices = choices;
  return c;
}
// "cpu", "cuda" (GPU 0) or "cuda:N".
bool is_device_name(std::string_view v) {
  if (v == "cpu" || v == "cuda") return true;
  constexpr std::string_view prefix = "cuda:";
  if (!v.starts_with(prefix)) return false;
  const std::string_view index = v.substr(prefix.size());
  return !index.empty() && index.size() <= 4 &&
         std::all_of(index.begin(), index.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}
Check device_name() {
  Check c;
  c.choices = {"cpu", "cuda", "cuda:N"};
  c.accepts = &is_device_name;
  return c;
}
// A non-empty list of distinct strings, each one of `choices` (any string when empty).
Check distinct_list(std::initializer_list<std::string_view> choices) {
  Check c;
  c.choices = choices;
  c.non_empty = true;
  c.distinct = true;
  return c;
}

struct KeySpec {
  std::string_view section;
  std::string_view name;
  std::function<FieldRef(Config&)> field;
  Check check;
  std::string_view help;
};

std::vector<KeySpec> trainer_keys(std::string_view section,
                                  std::function<TrainerConfig&(Config&)> sel) {
  auto ref = [sel](auto member) {
    return [sel, member](Config& c) -> FieldRef { return &(sel(c).*member); };
  };
  return {
      {section, "lr", ref(&TrainerConfig::lr), positive(), "initial SGD learning rate"},
      {section, "momentum", ref(&TrainerConfig::momentum), between(0.0, 1.0, true), "SGD momentum"},
      {section, "weight_decay", ref(&TrainerConfig::weight_decay), at_least(0.0),
       "SGD weight decay (L2)"},
      {section, "nesterov", ref(&TrainerConfig::nesterov), any_value(), "Nesterov momentum"},
      {section, "schedule", ref(&TrainerConfig::schedule), one_of({"cosine", "step", "constant"}),
       "learning-rate schedule over the epochs"},
      {section, "step_size", ref(&TrainerConfig::step_size), at_least(1.0),
       "epochs between decays (step schedule)"},
      {section, "gamma", ref(&TrainerConfig::gamma), positive(), "decay factor (step schedule)"},
  };
}

#define MCD_KEY(section, name, member, check, help)                             \
  KeySpec {                                                                     \
    section, name, [](Config& c) -> FieldRef { return &c.member; }, check, help \
  }

std::vector<KeySpec> make_key_table() {
  std::vector<KeySpec> keys = {
      MCD_KEY("run", "dir", run.dir, any_value(), "run directory; empty: runs/<time>-<method>"),
      MCD_KEY("run", "seed", run.seed, at_least(0.0),
              "seed for initialisation, the split, shuffling and augmentation"),
      MCD_KEY("run", "threads", run.threads, at_least(0.0), "CPU threads; 0: all cores"),
      MCD_KEY("run", "progress", run.progress, any_value(), "draw the progress bar"),
      MCD_KEY("run", "device", run.device, device_name(),
              "where to train: cpu, or cuda (GPU 0) or cuda:N (GPU N); the CPU, with a message, "
              "when no GPU or no CUDA backend is available"),
      MCD_KEY("run", "devices", run.devices, device_name(),
              "data parallelism: one replica of every model per entry, each trained on its "
              "share of every batch (all \"cpu\", replicas as threads, or distinct GPUs, "
              "averaged through NCCL); run.device is then the first; empty: one, on run.device"),
      MCD_KEY("run", "student_streams", run.student_streams, any_value(),
              "cuda: run the teacher and each student on a stream of their own, side by side "
              "(same results; false: everything on one stream)"),
      MCD_KEY("run", "shared_student_streams", run.shared_student_streams, at_least(0.0),
              "cuda, with student_streams: 0 gives each student a stream of its own (so does any "
              "n >= the number of students); 1 <= n < students puts the students on n streams, "
              "balanced by size, with the teacher and the C-Net on the lightest (students "
              "sharing a stream share its memory: less memory, less overlap)"),
      MCD_KEY("run", "cuda_graphs", run.cuda_graphs, any_value(),
              "cuda: capture a repeated training step, and the repeated meta step, once as CUDA "
              "graphs and replay each with one launch (same results; the first of each kind, and "
              "the first step of each epoch, run eagerly)"),
      MCD_KEY("run", "methods", run.methods,
              distinct_list({"ce", "kd", "takd", "dgkd", "mcdistil"}),
              "distillation methods, run in turn from the same warm-started students"),

      MCD_KEY("data", "dataset", data.dataset,
              one_of({"fashion-mnist", "mnist", "cifar10", "cifar100", "cifar100-coarse",
                      "tiny-imagenet", "imagefolder"}),
              "dataset format"),
      MCD_KEY("data", "path", data.path, non_empty(), "dataset directory"),
      MCD_KEY("data", "val_fraction", data.val_fraction, between(0.0, 0.9, true),
              "fraction of the training set held out for validation and meta batches"),
      MCD_KEY("data", "limit_train", data.limit_train, at_least(0.0),
              "use only the first N training images of the split; 0: all"),
      MCD_KEY("data", "batch_size", data.batch_size, positive(), "training batch size"),
      MCD_KEY("data", "eval_batch_size", data.eval_batch_size, positive(), "evaluation batch size"),
      MCD_KEY("data", "crop_padding", data.crop_padding, at_least(0.0),
              "random-crop padding in pixels; 0: no crop"),
      MCD_KEY("data", "flip", data.flip, any_value(), "random horizontal flip"),
      MCD_KEY("data", "resized_crop", data.resized_crop, any_value(),
              "random resized crop (scale 0.08-1, ratio 3/4-4/3) instead of the padded crop"),
      MCD_KEY("data", "jitter", data.jitter, at_least(0.0),
              "colour jitter factor for brightness, contrast and saturation; 0: off"),
      MCD_KEY("data", "cutout", data.cutout, at_least(0.0),
              "cutout: side of one square hole, zeroed after normalisation; 0: off"),
      MCD_KEY("data", "loader_threads", data.loader_threads, at_least(0.0),
              "threads building batches ahead of the trainer; 0: built in the trainer"),
      MCD_KEY("data", "skip_bad_images", data.skip_bad_images, any_value(),
              "skip and count undecodable images instead of stopping"),
      MCD_KEY("data", "label_noise", data.label_noise, one_of({"none", "symmetric", "instance"}),
              "label noise on the training split (the validation split stays clean)"),
      MCD_KEY("data", "noise_rate", data.noise_rate, between(0.0, 1.0, true), "label-noise rate"),

      MCD_KEY("teacher", "arch", teacher.arch, non_empty(),
              "teacher architecture (see --list-models)"),
      MCD_KEY("teacher", "checkpoint", teacher.checkpoint, any_value(),
              "safetensors state dict to load instead of training; empty: train"),
      MCD_KEY("teacher", "epochs", teacher.epochs, at_least(0.0), "teacher training epochs"),
  };
  auto add = [&keys](std::vector<KeySpec> more) {
    for (auto& k : more)
      keys.push_back(std::move(k));
  };
  add(trainer_keys("teacher", [](Config& c) -> TrainerConfig& { return c.teacher.optim; }));
  add({
      MCD_KEY("students", "archs", students.archs, distinct_list({}),
              "student architectures, one student each"),
      MCD_KEY("students", "warm_start_epochs", students.warm_start_epochs, at_least(0.0),
              "cross-entropy epochs before distilling"),
      MCD_KEY("students", "checkpoint_dir", students.checkpoint_dir, any_value(),
              "directory with student_<arch>.safetensors to load instead of warm-starting; "
              "empty: warm-start"),
  });
  add(trainer_keys("students", [](Config& c) -> TrainerConfig& { return c.students.optim; }));
  add({
      MCD_KEY("distill", "epochs", distill.epochs, at_least(0.0),
              "distillation epochs of each method"),
      MCD_KEY("distill", "tau", distill.tau, positive(), "softmax temperature"),
      MCD_KEY("distill", "kd_alpha", distill.kd_alpha, between(0.0, 1.0, false),
              "KD weight a in (1 - a) CE + a tau^2 KL"),
      MCD_KEY("distill", "dgkd_drop", distill.dgkd_drop, at_least(0.0),
              "DGKD: guides (teacher and larger students) dropped at random each iteration; at "
              "least one always stays"),
      MCD_KEY("distill", "meta_interval", distill.meta_interval, at_least(1.0),
              "iterations between C-Net meta steps (L)"),
      MCD_KEY("distill", "meta_batch_size", distill.meta_batch_size, positive(),
              "meta batch size (from the validation split)"),

      MCD_KEY("cnet", "input", cnet.input, one_of({"image", "image+students"}),
              "C-Net input: the image, or the image and per-student signals"),
      MCD_KEY("cnet", "head", cnet.head, one_of({"sigmoid", "official"}),
              "sigmoid: linear layer and sigmoid; official: pooled ReLU features as released"),
      MCD_KEY("cnet", "backbone", cnet.backbone, non_empty(), "C-Net backbone architecture"),
      MCD_KEY("cnet", "lr", cnet.lr, positive(), "Adam learning rate"),
      MCD_KEY("cnet", "weight_decay", cnet.weight_decay, at_least(0.0), "Adam weight decay"),
      MCD_KEY("cnet", "batchnorm_train", cnet.batchnorm_train, any_value(),
              "C-Net BatchNorm uses batch statistics when it computes the weights"),
  });
  return keys;
}

#undef MCD_KEY

const std::vector<KeySpec>& key_table() {
  static const std::vector<KeySpec> table = make_key_table();
  return table;
}

// Section names in table order.
std::vector<std::string_view> section_names() {
  std::vector<std::string_view> out;
  for (const auto& k : key_table())
    if (std::find(out.begin(), out.end(), k.section) == out.end()) out.push_back(k.section);
  return out;
}

FieldRef field_of(const KeySpec& k, const Config& c) {
  // The table's accessors take a mutable Config; callers of field_of only read through them.
  return k.field(const_cast<Config&>(c));
}

// ---- formatting values as TOML

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (u < 0x20 || u == 0x7f)
          out += fmt::format("\\u{:04X}", u);
        else
          out += ch;
    }
  }
  return out + "\"";
}

// Shortest text that reads back to the same double, always with a '.' or exponent so that
// TOML reads a float.
std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string format_value(const FieldRef& f) {
  return std::visit(
      [](const auto* p) -> std::string {
        using T = std::remove_cvref_t<decltype(*p)>;
        if constexpr (std::is_same_v<T, bool>) {
          return *p ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          return fmt::format("{}", *p);
        } else if constexpr (std::is_same_v<T, double>) {
          return format_double(*p);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return quote(*p);
        } else {
          std::string out = "[";
          for (std::size_t i = 0; i < p->size(); ++i)
            out += (i ? ", " : "") + quote((*p)[i]);
          return out + "]";
        }
      },
      f);
}

// A parsed TOML node as the user wrote it, for "got ..." in messages.
std::string describe_node(const toml::node& n) {
  if (n.is_table()) return "a table";
  if (const auto* s = n.as_string()) return quote(s->get());
  if (const auto* i = n.as_integer()) return fmt::format("{}", i->get());
  if (const auto* d = n.as_floating_point()) return format_double(d->get());
  if (const auto* b = n.as_boolean()) return b->get() ? "true" : "false";
  if (const auto* a = n.as_array()) {
    std::string out = "[";
    for (std::size_t i = 0; i < a->size(); ++i)
      out += (i ? ", " : "") + describe_node(*a->get(i));
    return out + "]";
  }
  return "a date or time";
}

// ---- what a key accepts, in words

std::string format_bound(double v) {
  return fmt::format("{}", v);
}

// "" (unbounded), ">= 0", "> 0", "in [0, 0.9)".
std::string range_text(const Check& c) {
  const bool has_lo = c.lo > -kInf, has_hi = c.hi < kInf;
  if (has_lo && has_hi)
    return fmt::format("in {}{}, {}{}", c.lo_open ? "(" : "[", format_bound(c.lo),
                       format_bound(c.hi), c.hi_open ? ")" : "]");
  if (has_lo) return fmt::format("{} {}", c.lo_open ? ">" : ">=", format_bound(c.lo));
  if (has_hi) return fmt::format("{} {}", c.hi_open ? "<" : "<=", format_bound(c.hi));
  return "";
}

std::string choices_text(const Check& c, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < c.choices.size(); ++i)
    out += fmt::format("{}{}", i ? sep : "", c.choices[i]);
  return out;
}

// The phrase after "expected" in error messages.
std::string expected_text(const KeySpec& k) {
  const Check& c = k.check;
  const bool is_positive = c.lo == 0.0 && c.lo_open && c.hi == kInf;
  Config scratch;
  return std::visit(
      [&](const auto* p) -> std::string {
        using T = std::remove_cvref_t<decltype(*p)>;
        if constexpr (std::is_same_v<T, bool>) {
          return "a boolean (true or false)";
        } else if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, double>) {
          const char* noun = std::is_same_v<T, double> ? "number" : "integer";
          const char* article = std::is_same_v<T, double> ? "a" : "an";
          if (is_positive) return fmt::format("a positive {}", noun);
          const std::string r = range_text(c);
          return r.empty() ? fmt::format("{} {}", article, noun)
                           : fmt::format("{} {} {}", article, noun, r);
        } else if constexpr (std::is_same_v<T, std::string>) {
          if (!c.choices.empty()) return "one of " + choices_text(c, ", ");
          return c.non_empty ? "a non-empty string" : "a string";
        } else {
          std::string out = c.non_empty ? "a non-empty list of " : "a list of ";
          if (c.distinct) out += "distinct ";
          if (!c.choices.empty()) return out + "names from " + choices_text(c, ", ");
          return out + "strings";
        }
      },
      k.field(scratch));
}

// The type column of describe_keys.
std::string type_text(const KeySpec& k) {
  const Check& c = k.check;
  Config scratch;
  return std::visit(
      [&](const auto* p) -> std::string {
        using T = std::remove_cvref_t<decltype(*p)>;
        if constexpr (std::is_same_v<T, bool>) {
          return "bool";
        } else if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, double>) {
          const std::string r = range_text(c);
          const char* noun = std::is_same_v<T, double> ? "float" : "int";
          return r.empty() ? noun : fmt::format("{} {}", noun, r);
        } else if constexpr (std::is_same_v<T, std::string>) {
          if (!c.choices.empty()) return choices_text(c, "|");
          return c.non_empty ? "non-empty string" : "string";
        } else {
          if (!c.choices.empty()) return "list of " + choices_text(c, "|");
          return c.non_empty ? "non-empty list of strings" : "list of strings";
        }
      },
      k.field(scratch));
}

// ---- setting a value

[[noreturn]] void fail_expected(const Source& src, const KeySpec& k, const std::string& got,
                                std::string_view why = {}) {
  config_fail(src, "{}.{}: expected {}, got {}{}", k.section, k.name, expected_text(k), got, why);
}

void check_number(const Source& src, const KeySpec& k, double v, const std::string& got) {
  const Check& c = k.check;
  const bool low_ok = c.lo_open ? v > c.lo : v >= c.lo;
  const bool high_ok = c.hi_open ? v < c.hi : v <= c.hi;
  if (!std::isfinite(v) || !low_ok || !high_ok) fail_expected(src, k, got);
}

void check_string(const Source& src, const KeySpec& k, const std::string& v,
                  const std::string& got) {
  const Check& c = k.check;
  if (c.non_empty && v.empty()) fail_expected(src, k, got);
  if (c.accepts != nullptr) {
    if (!c.accepts(v)) fail_expected(src, k, got);
    return;
  }
  if (!c.choices.empty() && std::find(c.choices.begin(), c.choices.end(), v) == c.choices.end())
    fail_expected(src, k, got);
}

// Converts `node` to the key's type, validates it and stores it in `cfg`.
void set_value(Config& cfg, const KeySpec& k, const toml::node& node, const Source& src) {
  const std::string got = describe_node(node);
  std::visit(
      [&](auto* p) {
        using T = std::remove_cvref_t<decltype(*p)>;
        if constexpr (std::is_same_v<T, bool>) {
          const auto* b = node.as_boolean();
          if (!b) fail_expected(src, k, got);
          *p = b->get();
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          const auto* i = node.as_integer();
          if (!i) fail_expected(src, k, got);
          check_number(src, k, static_cast<double>(i->get()), got);
          *p = i->get();
        } else if constexpr (std::is_same_v<T, double>) {
          // An integer is a number too: tau = 4 means 4.0.
          double v = 0.0;
          if (const auto* d = node.as_floating_point())
            v = d->get();
          else if (const auto* i = node.as_integer())
            v = static_cast<double>(i->get());
          else
            fail_expected(src, k, got);
          check_number(src, k, v, got);
          *p = v;
        } else if constexpr (std::is_same_v<T, std::string>) {
          const auto* s = node.as_string();
          if (!s) fail_expected(src, k, got);
          check_string(src, k, s->get(), got);
          *p = s->get();
        } else {
          const auto* a = node.as_array();
          if (!a) fail_expected(src, k, got);
          std::vector<std::string> items;
          for (const auto& item : *a) {
            const auto* s = item.as_string();
            if (!s) fail_expected(src, k, got);
            const bool known = k.check.accepts != nullptr
                                   ? k.check.accepts(s->get())
                                   : k.check.choices.empty() ||
                                         std::find(k.check.choices.begin(), k.check.choices.end(),
                                                   s->get()) != k.check.choices.end();
            if (!known)
              fail_expected(src, k, got, fmt::format(" ({} is not one of them)", quote(s->get())));
            if (s->get().empty()) fail_expected(src, k, got, " (an empty name)");
            if (k.check.distinct && std::find(items.begin(), items.end(), s->get()) != items.end())
              fail_expected(src, k, got, fmt::format(" ({} appears twice)", quote(s->get())));
            items.push_back(s->get());
          }
          if (k.check.non_empty && items.empty()) fail_expected(src, k, got);
          *p = std::move(items);
        }
      },
      k.field(cfg));
}

// ---- finding keys

void fail_unknown_section(const Source& src, std::string_view shown) {
  std::string known;
  for (const auto s : section_names())
    known += (known.empty() ? "" : ", ") + std::string(s);
  config_fail(src, "{}: unknown section (known sections: {})", shown, known);
}

bool is_section(std::string_view section) {
  const auto names = section_names();
  return std::find(names.begin(), names.end(), section) != names.end();
}

const KeySpec& find_key(const Source& src, std::string_view section, std::string_view name) {
  if (!is_section(section)) fail_unknown_section(src, fmt::format("{}.{}", section, name));
  std::string known;
  for (const auto& k : key_table()) {
    if (k.section != section) continue;
    if (k.name == name) return k;
    known += (known.empty() ? "" : ", ") + std::string(k.name);
  }
  config_fail(src, "{}.{}: unknown key (known keys in [{}]: {})", section, name, section, known);
}

// ---- the two sources

std::int64_t line_of(const toml::node& n) {
  return static_cast<std::int64_t>(n.source().begin.line);
}

void apply_file(Config& cfg, const std::string& path) {
  const Source file{path, 0};
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    config_fail(file, "is a directory, expected a TOML configuration file");
  if (!std::ifstream(path)) config_fail(file, "cannot open the configuration file");
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& at = e.source().begin;
    throw ConfigError(
        fmt::format("{}:{}:{}: invalid TOML: {}", path, at.line, at.column, e.description()));
  }
  for (const auto& [section_key, section_node] : root) {
    const std::string section(section_key.str());
    const Source here{path, line_of(section_node)};
    if (!is_section(section)) fail_unknown_section(here, fmt::format("[{}]", section));
    const auto* table = section_node.as_table();
    if (!table)
      config_fail(here, "{}: expected a table [{}], got {}", section, section,
                  describe_node(section_node));
    for (const auto& [key, node] : *table) {
      const Source at{path, line_of(node)};
      set_value(cfg, find_key(at, section, key.str()), node, at);
    }
  }
}

std::string_view trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

// `text` as a TOML value, or nothing when it is not exactly one valid value.
std::optional<toml::table> parse_toml_value(std::string_view text) {
  if (text.find_first_of("\r\n") != std::string_view::npos) return std::nullopt;
  try {
    toml::table t = toml::parse(fmt::format("value = {}", text));
    if (t.size() != 1 || !t.contains("value")) return std::nullopt;
    return t;
  } catch (const toml::parse_error&) {
    return std::nullopt;
  }
}

// A bare list such as `a,b` or `[a, b]`: comma-separated names, quotes optional.
toml::array bare_list(std::string_view text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']')
    text = trim(text.substr(1, text.size() - 2));
  toml::array out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    std::string_view item = trim(text.substr(0, comma));
    if (item.size() >= 2 && (item.front() == '"' || item.front() == '\'') &&
        item.back() == item.front())
      item = item.substr(1, item.size() - 2);
    out.push_back(std::string(item));
    if (comma == std::string_view::npos) break;
    text = text.substr(comma + 1);
  }
  return out;
}

void apply_override(Config& cfg, std::string_view text) {
  const Source cli{"command line", 0};
  const auto eq = text.find('=');
  const std::string_view key = trim(text.substr(0, eq));
  const auto dot = key.find('.');
  if (eq == std::string_view::npos || dot == std::string_view::npos || dot == 0 ||
      dot + 1 == key.size())
    config_fail(cli, "'{}': expected section.key=value (e.g. distill.tau=4)", text);
  const KeySpec& k = find_key(cli, key.substr(0, dot), key.substr(dot + 1));
  const std::string_view value = trim(text.substr(eq + 1));

  const std::optional<toml::table> parsed = parse_toml_value(value);
  const toml::node* node = parsed ? parsed->get("value") : nullptr;
  FieldRef probe = k.field(cfg);
  // Strings and lists of names may be written bare: teacher.arch=resnet10_l.
  if (std::holds_alternative<std::string*>(probe) && !(node && node->is_string())) {
    set_value(cfg, k, toml::value<std::string>(std::string(value)), cli);
    return;
  }
  if (std::holds_alternative<std::vector<std::string>*>(probe) && !(node && node->is_array())) {
    set_value(cfg, k, bare_list(value), cli);
    return;
  }
  if (!node) fail_expected(cli, k, std::string(value));
  set_value(cfg, k, *node, cli);
}

}  // namespace

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  Config cfg;
  if (!path.empty()) apply_file(cfg, path);
  for (const auto& o : overrides)
    apply_override(cfg, o);
  return cfg;
}

std::string to_toml(const Config& c) {
  std::string out = "# mcdistil_train configuration: every key with its effective value.\n";
  std::string_view section;
  for (const auto& k : key_table()) {
    if (k.section != section) {
      section = k.section;
      out += fmt::format("\n[{}]\n", section);
    }
    out += fmt::format("{} = {}\n", k.name, format_value(field_of(k, c)));
  }
  return out;
}

nlohmann::json to_json(const Config& c) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& k : key_table()) {
    auto& slot = j[std::string(k.section)][std::string(k.name)];
    std::visit([&](const auto* p) { slot = *p; }, field_of(k, c));
  }
  return j;
}

std::string describe_keys() {
  const Config defaults;
  struct Row {
    std::string name, kind, help;
  };
  std::vector<Row> rows;
  std::size_t name_w = 0, kind_w = 0;
  for (const auto& k : key_table()) {
    Row r{fmt::format("{}.{}", k.section, k.name),
          fmt::format("({}, {})", type_text(k), format_value(field_of(k, defaults))),
          std::string(k.help)};
    name_w = std::max(name_w, r.name.size());
    // A long default (a list) overflows its column rather than pushing every help text right.
    if (r.kind.size() <= 40) kind_w = std::max(kind_w, r.kind.size());
    rows.push_back(std::move(r));
  }
  std::string out;
  for (const auto& r : rows)
    out += fmt::format("{:<{}}  {:<{}}  {}\n", r.name, name_w, r.kind, kind_w, r.help);
  return out;
}

}  // namespace mcd::app
