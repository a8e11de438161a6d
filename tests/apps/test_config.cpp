// mcdistil_train configuration: defaults, files, command-line overrides (applied after the file,
// in order), every kind of bad input with a message naming the source and the key, the to_toml
// round trip, and the example files under apps/mcdistil_train/configs/.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "config.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using Catch::Matchers::Equals;
using Catch::Matchers::StartsWith;
using mcd::app::Config;
using mcd::app::ConfigError;
using mcd::app::load_config;

namespace {

constexpr std::size_t kKeyCount = 57;

fs::path scratch_dir() {
  static const fs::path dir = [] {
    fs::path d =
        fs::temp_directory_path() / fs::path("mcd_test_config_" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

std::string write_file(const std::string& name, const std::string& text) {
  const fs::path p = scratch_dir() / name;
  std::ofstream(p) << text;
  return p.string();
}

// The message of the ConfigError that `f` must throw.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  FAIL("no ConfigError was thrown");
  return {};
}

std::string cli_error(const std::string& override_text) {
  return error_of([&] { load_config("", {override_text}); });
}

std::string file_error(const std::string& text) {
  const std::string path = write_file("bad.toml", text);
  return error_of([&] { load_config(path, {}); });
}

// Every "section.key" of a TOML document.
std::set<std::string> keys_of(const toml::table& root) {
  std::set<std::string> out;
  for (const auto& [section, node] : root) {
    REQUIRE(node.is_table());
    for (const auto& [key, value] : *node.as_table())
      out.insert(std::string(section.str()) + "." + std::string(key.str()));
  }
  return out;
}

}  // namespace

TEST_CASE("config: no file and no overrides give the documented defaults", "[config]") {
  const Config c = load_config("", {});
  CHECK(c == Config{});

  CHECK(c.run.dir.empty());
  CHECK(c.run.seed == 0);
  CHECK(c.run.threads == 0);
  CHECK(c.run.student_streams);
  CHECK(c.run.shared_student_streams == 0);
  CHECK(c.run.progress);
  CHECK(c.run.methods == std::vector<std::string>{"ce", "kd", "mcdistil"});

  CHECK(c.data.dataset == "fashion-mnist");
  CHECK(c.data.path == "/usr/share/datasets/fashion-mnist");
  CHECK(c.data.val_fraction == 0.1);
  CHECK(c.data.limit_train == 0);
  CHECK(c.data.batch_size == 128);
  CHECK(c.data.eval_batch_size == 500);
  CHECK(c.data.crop_padding == 2);
  CHECK(c.data.flip);

  CHECK(c.teacher.arch == "resnet10_m");
  CHECK(c.teacher.checkpoint.empty());
  CHECK(c.teacher.epochs == 4);
  CHECK(c.teacher.optim.lr == 0.1);
  CHECK(c.teacher.optim.momentum == 0.9);
  CHECK(c.teacher.optim.weight_decay == 5e-4);
  CHECK_FALSE(c.teacher.optim.nesterov);
  CHECK(c.teacher.optim.schedule == "cosine");
  CHECK(c.teacher.optim.step_size == 30);
  CHECK(c.teacher.optim.gamma == 0.1);

  CHECK(c.students.archs == std::vector<std::string>{"resnet10_xxs", "resnet10_xs", "resnet10_s"});
  CHECK(c.students.warm_start_epochs == 1);
  CHECK(c.students.checkpoint_dir.empty());
  CHECK(c.students.optim.lr == 0.05);
  CHECK(c.students.optim.momentum == 0.9);
  CHECK(c.students.optim.weight_decay == 5e-4);
  CHECK_FALSE(c.students.optim.nesterov);
  CHECK(c.students.optim.schedule == "cosine");
  CHECK(c.students.optim.step_size == 30);
  CHECK(c.students.optim.gamma == 0.1);

  CHECK(c.distill.epochs == 3);
  CHECK(c.distill.tau == 2.0);
  CHECK(c.distill.kd_alpha == 0.5);
  CHECK(c.distill.meta_interval == 20);
  CHECK(c.distill.meta_batch_size == 128);

  CHECK(c.cnet.input == "image");
  CHECK(c.cnet.head == "sigmoid");
  CHECK(c.cnet.backbone == "resnet10_s");
  CHECK(c.cnet.lr == 1e-3);
  CHECK(c.cnet.weight_decay == 1e-4);
  CHECK(c.cnet.batchnorm_train);
}

TEST_CASE("config: a file overrides only the keys it names", "[config]") {
  const std::string path = write_file("some.toml", R"(
[distill]
tau = 4          # an integer is accepted for a float key
kd_alpha = 0.9

[students]
lr = 0.01
nesterov = true
archs = ["resnet10_s"]

[data]
flip = false
dataset = "mnist"

teacher.epochs = 0   # dotted keys at the top level name the same table
)");
  // The dotted key above sits inside [data]'s scope in TOML, so state it in its own file.
  const std::string dotted = write_file("dotted.toml", "teacher.epochs = 7\nrun.seed = 5\n");

  SECTION("keys of the file") {
    const std::string good = write_file("good.toml", R"(
[distill]
tau = 4
kd_alpha = 0.9

[students]
lr = 0.01
nesterov = true
archs = ["resnet10_s"]

[data]
flip = false
dataset = "mnist"
)");
    const Config c = load_config(good, {});
    CHECK(c.distill.tau == 4.0);
    CHECK(c.distill.kd_alpha == 0.9);
    CHECK(c.students.optim.lr == 0.01);
    CHECK(c.students.optim.nesterov);
    CHECK(c.students.archs == std::vector<std::string>{"resnet10_s"});
    CHECK_FALSE(c.data.flip);
    CHECK(c.data.dataset == "mnist");

    Config expected;
    expected.distill.tau = 4.0;
    expected.distill.kd_alpha = 0.9;
    expected.students.optim.lr = 0.01;
    expected.students.optim.nesterov = true;
    expected.students.archs = {"resnet10_s"};
    expected.data.flip = false;
    expected.data.dataset = "mnist";
    CHECK(c == expected);
    // The teacher's optimiser keys are separate from the students'.
    CHECK(c.teacher.optim == Config{}.teacher.optim);
  }
  SECTION("dotted keys") {
    const Config c = load_config(dotted, {});
    CHECK(c.teacher.epochs == 7);
    CHECK(c.run.seed == 5);
  }
  SECTION("a dotted key inside a table is a nested key, reported as unknown") {
    const std::string msg = error_of([&] { load_config(path, {}); });
    CHECK_THAT(msg, StartsWith(path + ": data.teacher: unknown key (known keys in [data]: "));
  }
}

TEST_CASE("config: command-line overrides apply after the file, in order", "[config]") {
  const std::string path =
      write_file("base.toml", "[distill]\ntau = 3.0\nepochs = 9\n[teacher]\nlr = 0.2\n");
  const Config c =
      load_config(path, {"distill.tau=4", "teacher.lr = 0.3", "distill.tau=5.5", "data.flip=false",
                         "run.progress=false", "students.momentum=0.5"});
  CHECK(c.distill.tau == 5.5);   // last one wins
  CHECK(c.distill.epochs == 9);  // from the file
  CHECK(c.teacher.optim.lr == 0.3);
  CHECK_FALSE(c.data.flip);
  CHECK_FALSE(c.run.progress);
  CHECK(c.students.optim.momentum == 0.5);
  CHECK(c.teacher.optim.momentum == 0.9);
}

TEST_CASE("config: list values", "[config]") {
  SECTION("TOML arrays") {
    const Config c = load_config(
        "", {R"(students.archs=["resnet10_xs","resnet10_s"])", R"(run.methods=['kd'])"});
    CHECK(c.students.archs == std::vector<std::string>{"resnet10_xs", "resnet10_s"});
    CHECK(c.run.methods == std::vector<std::string>{"kd"});
  }
  SECTION("bare lists") {
    const Config c =
        load_config("", {"students.archs=resnet10_xs, resnet10_s", "run.methods=[mcdistil, ce]"});
    CHECK(c.students.archs == std::vector<std::string>{"resnet10_xs", "resnet10_s"});
    CHECK(c.run.methods == std::vector<std::string>{"mcdistil", "ce"});
    CHECK(load_config("", {"students.archs=resnet10_l"}).students.archs ==
          std::vector<std::string>{"resnet10_l"});
  }
  SECTION("in a file, over several lines") {
    const std::string path = write_file("lists.toml", R"([students]
archs = [
  "resnet10_xxxs",  # smallest
  "resnet10_m",
]
)");
    CHECK(load_config(path, {}).students.archs ==
          std::vector<std::string>{"resnet10_xxxs", "resnet10_m"});
  }
}

TEST_CASE("config: strings may be bare on the command line", "[config]") {
  const Config c = load_config("", {"teacher.arch=resnet10_l", "run.dir=runs/exp 1",
                                    R"(teacher.checkpoint="/tmp/t.safetensors")",
                                    "cnet.input=image+students", "students.checkpoint_dir=2024"});
  CHECK(c.teacher.arch == "resnet10_l");
  CHECK(c.run.dir == "runs/exp 1");
  CHECK(c.teacher.checkpoint == "/tmp/t.safetensors");
  CHECK(c.cnet.input == "image+students");
  CHECK(c.students.checkpoint_dir == "2024");  // a string key takes the text, not the number
  CHECK(load_config("", {"run.device=cuda:1"}).run.device == "cuda:1");
  CHECK(load_config("", {"run.device=cuda"}).run.device == "cuda");
  CHECK(load_config("", {R"(run.devices=["cuda:0", "cuda:1"])"}).run.devices ==
        std::vector<std::string>{"cuda:0", "cuda:1"});
  CHECK(load_config("", {"run.devices=cpu,cpu"}).run.devices ==
        std::vector<std::string>{"cpu", "cpu"});
  CHECK(load_config("", {}).run.devices.empty());
  CHECK(load_config("", {"run.dir=runs/x", "run.dir="}).run.dir.empty());
}

TEST_CASE("config: unknown sections and keys", "[config]") {
  CHECK_THAT(cli_error("distill.taus=2"),
             Equals("command line: distill.taus: unknown key (known keys in [distill]: epochs, "
                    "tau, kd_alpha, dgkd_drop, meta_interval, meta_batch_size)"));
  CHECK_THAT(cli_error("optimizer.lr=0.1"),
             Equals("command line: optimizer.lr: unknown section (known sections: run, data, "
                    "teacher, students, distill, cnet)"));
  CHECK_THAT(cli_error("teacher.optim.lr=0.1"),
             StartsWith("command line: teacher.optim.lr: unknown key (known keys in [teacher]: "
                        "arch, checkpoint, epochs, lr, momentum, weight_decay, nesterov, "
                        "schedule, step_size, gamma)"));

  const std::string path = (scratch_dir() / "bad.toml").string();
  CHECK_THAT(file_error("[run]\nseed = 1\n\n[optimizer]\nlr = 0.1\n"),
             Equals(path + ": [optimizer]: unknown section (known sections: run, data, teacher, "
                           "students, distill, cnet) (line 4)"));
  CHECK_THAT(file_error("[cnet]\nlr = 0.1\nhaed = \"official\"\n"),
             Equals(path + ": cnet.haed: unknown key (known keys in [cnet]: input, head, "
                           "backbone, lr, weight_decay, batchnorm_train) (line 3)"));
  CHECK_THAT(file_error("distill = 3\n"),
             Equals(path + ": distill: expected a table [distill], got 3 (line 1)"));
  CHECK_THAT(file_error("[distill.extra]\nx = 1\n"),
             StartsWith(path + ": distill.extra: unknown key (known keys in [distill]: "));
}

TEST_CASE("config: wrong types", "[config]") {
  CHECK_THAT(cli_error("data.flip=3"),
             Equals("command line: data.flip: expected a boolean (true or false), got 3"));
  CHECK_THAT(cli_error("data.flip=yes"),
             Equals("command line: data.flip: expected a boolean (true or false), got yes"));
  CHECK_THAT(cli_error("distill.tau=abc"),
             Equals("command line: distill.tau: expected a positive number, got abc"));
  CHECK_THAT(cli_error(R"(distill.tau="2")"),
             Equals(R"(command line: distill.tau: expected a positive number, got "2")"));
  CHECK_THAT(cli_error("data.batch_size=2.5"),
             Equals("command line: data.batch_size: expected a positive integer, got 2.5"));
  CHECK_THAT(cli_error("run.seed=1.0"),
             Equals("command line: run.seed: expected an integer >= 0, got 1.0"));
  CHECK_THAT(cli_error("students.archs=[1, 2]"),
             Equals("command line: students.archs: expected a non-empty list of distinct "
                    "strings, got [1, 2]"));
  CHECK_THAT(cli_error("distill.tau=[2]"),
             Equals("command line: distill.tau: expected a positive number, got [2]"));
  CHECK_THAT(cli_error("distill.tau={a = 1}"),
             Equals("command line: distill.tau: expected a positive number, got a table"));

  const std::string path = (scratch_dir() / "bad.toml").string();
  CHECK_THAT(file_error("[teacher]\narch = 10\n"),
             Equals(path + ": teacher.arch: expected a non-empty string, got 10 (line 2)"));
  CHECK_THAT(file_error("[run]\nmethods = \"ce\"\n"),
             Equals(path + ": run.methods: expected a non-empty list of distinct names from ce, "
                           "kd, takd, dgkd, mcdistil, got \"ce\" (line 2)"));
  CHECK_THAT(file_error("[data]\nflip = 1979-05-27\n"),
             Equals(path + ": data.flip: expected a boolean (true or false), got a date or time "
                           "(line 2)"));
}

TEST_CASE("config: out-of-range values", "[config]") {
  const std::string path = (scratch_dir() / "bad.toml").string();
  CHECK_THAT(file_error("[distill]\n\ntau = -1\n"),
             Equals(path + ": distill.tau: expected a positive number, got -1 (line 3)"));
  CHECK_THAT(cli_error("distill.tau=0"),
             Equals("command line: distill.tau: expected a positive number, got 0"));
  CHECK_THAT(cli_error("distill.tau=inf"),
             Equals("command line: distill.tau: expected a positive number, got inf"));
  CHECK_THAT(cli_error("distill.tau=nan"),
             Equals("command line: distill.tau: expected a positive number, got nan"));
  CHECK_THAT(cli_error("data.val_fraction=0.9"),
             Equals("command line: data.val_fraction: expected a number in [0, 0.9), got 0.9"));
  CHECK_THAT(cli_error("data.val_fraction=-0.1"),
             Equals("command line: data.val_fraction: expected a number in [0, 0.9), got -0.1"));
  CHECK(load_config("", {"data.val_fraction=0"}).data.val_fraction == 0.0);
  CHECK_THAT(cli_error("distill.kd_alpha=1.5"),
             Equals("command line: distill.kd_alpha: expected a number in [0, 1], got 1.5"));
  CHECK(load_config("", {"distill.kd_alpha=1"}).distill.kd_alpha == 1.0);
  CHECK_THAT(cli_error("teacher.momentum=1"),
             Equals("command line: teacher.momentum: expected a number in [0, 1), got 1"));
  CHECK_THAT(cli_error("run.seed=-1"),
             Equals("command line: run.seed: expected an integer >= 0, got -1"));
  CHECK_THAT(cli_error("distill.meta_interval=0"),
             Equals("command line: distill.meta_interval: expected an integer >= 1, got 0"));
  CHECK_THAT(cli_error("data.batch_size=0"),
             Equals("command line: data.batch_size: expected a positive integer, got 0"));
  CHECK_THAT(cli_error("students.weight_decay=-1e-4"),
             Equals("command line: students.weight_decay: expected a number >= 0, got -0.0001"));
  CHECK_THAT(cli_error("cnet.lr=0"),
             Equals("command line: cnet.lr: expected a positive number, got 0"));
  CHECK_THAT(cli_error("run.shared_student_streams=-1"),
             Equals("command line: run.shared_student_streams: expected an integer >= 0, got -1"));
  CHECK(load_config("", {"run.shared_student_streams=2"}).run.shared_student_streams == 2);
  CHECK_THAT(cli_error("teacher.arch="),
             Equals("command line: teacher.arch: expected a non-empty string, got \"\""));
  // Zero is allowed where it means "all" or "none".
  const Config z = load_config("", {"data.limit_train=0", "teacher.epochs=0", "run.threads=0",
                                    "data.crop_padding=0", "students.warm_start_epochs=0"});
  CHECK(z.teacher.epochs == 0);
}

TEST_CASE("config: bad choices", "[config]") {
  CHECK_THAT(cli_error("teacher.schedule=linear"),
             Equals("command line: teacher.schedule: expected one of cosine, step, constant, got "
                    "\"linear\""));
  CHECK_THAT(cli_error("data.dataset=cifar1000"),
             Equals("command line: data.dataset: expected one of fashion-mnist, mnist, cifar10, "
                    "cifar100, cifar100-coarse, tiny-imagenet, imagefolder, got \"cifar1000\""));
  CHECK_THAT(cli_error("data.label_noise=pairflip"),
             StartsWith("command line: data.label_noise: expected one of none, symmetric, "
                        "instance"));
  CHECK_THAT(cli_error("cnet.head=linear"), StartsWith("command line: cnet.head: expected one of "
                                                       "sigmoid, official, got \"linear\""));
  CHECK_THAT(
      cli_error(R"(run.methods=["ce", "dkd"])"),
      Equals("command line: run.methods: expected a non-empty list of distinct names from "
             "ce, kd, takd, dgkd, mcdistil, got [\"ce\", \"dkd\"] (\"dkd\" is not one of them)"));
  CHECK_THAT(
      cli_error("run.methods=ce,kd,ce"),
      Equals("command line: run.methods: expected a non-empty list of distinct names from "
             "ce, kd, takd, dgkd, mcdistil, got [\"ce\", \"kd\", \"ce\"] (\"ce\" appears twice)"));
  CHECK_THAT(cli_error("students.archs=[]"),
             Equals("command line: students.archs: expected a non-empty list of distinct strings, "
                    "got []"));
  CHECK_THAT(cli_error("students.archs="), Contains("expected a non-empty list"));
  for (const char* bad : {"run.device=gpu", "run.device=cuda:", "run.device=cuda:x",
                          "run.device=cuda:-1", "run.device=cuda:N", "run.device=cuda1"})
    CHECK_THAT(cli_error(bad),
               StartsWith("command line: run.device: expected one of cpu, cuda, cuda:N, got"));
  CHECK_THAT(cli_error(R"(run.devices=["cuda:0", "gpu1"])"),
             Equals("command line: run.devices: expected a list of names from cpu, cuda, cuda:N, "
                    "got [\"cuda:0\", \"gpu1\"] (\"gpu1\" is not one of them)"));
  CHECK_THAT(cli_error(R"(students.archs=["resnet10_s", ""])"), Contains("(an empty name)"));
}

TEST_CASE("config: malformed overrides", "[config]") {
  CHECK_THAT(cli_error("distill.tau"),
             Equals("command line: 'distill.tau': expected section.key=value (e.g. "
                    "distill.tau=4)"));
  CHECK_THAT(cli_error("tau=2"), StartsWith("command line: 'tau=2': expected section.key=value"));
  CHECK_THAT(cli_error(".tau=2"), StartsWith("command line: '.tau=2': expected section.key=value"));
  CHECK_THAT(cli_error("distill.=2"),
             StartsWith("command line: 'distill.=2': expected section.key=value"));
  CHECK_THAT(cli_error("=2"), StartsWith("command line: '=2': expected section.key=value"));
  // One value, not a TOML fragment that smuggles in more keys.
  CHECK_THAT(cli_error("distill.tau=2\nepochs = 1"),
             StartsWith("command line: distill.tau: expected a positive number, got 2"));
}

TEST_CASE("config: unreadable files", "[config]") {
  const std::string path = (scratch_dir() / "bad.toml").string();
  const std::string msg = file_error("[run]\nseed = 1\ndir = = \"x\"\n");
  CHECK_THAT(msg, StartsWith(path + ":3:"));
  CHECK_THAT(msg, Contains("invalid TOML"));
  CHECK_THAT(file_error("[run]\nseed = 1\nseed = 2\n"), StartsWith(path + ":3:"));

  const std::string missing = (scratch_dir() / "missing.toml").string();
  CHECK_THAT(error_of([&] { load_config(missing, {}); }),
             Equals(missing + ": cannot open the configuration file"));
  CHECK_THAT(error_of([&] { load_config(scratch_dir().string(), {}); }),
             StartsWith(scratch_dir().string() + ": is a directory"));
  // A ConfigError is an mcd::Error, so callers may catch either.
  CHECK_THROWS_AS(load_config(missing, {}), mcd::Error);
}

TEST_CASE("config: to_toml writes every key and reads back equal", "[config]") {
  SECTION("defaults") {
    const std::string text = mcd::app::to_toml(Config{});
    const toml::table root = toml::parse(text);
    CHECK(keys_of(root).size() == kKeyCount);
    CHECK(load_config(write_file("defaults_out.toml", text), {}) == Config{});
  }
  SECTION("every key changed, awkward strings and numbers") {
    Config c;
    c.run.dir = R"(runs/"quoted" back\slash	tab é)";
    c.run.seed = 9007199254740993;  // not representable as a double
    c.run.threads = 3;
    c.run.progress = false;
    c.run.methods = {"mcdistil", "ce"};
    c.data.dataset = "mnist";
    c.data.path = "/data/mnist\n";
    c.data.val_fraction = 0.0;
    c.data.limit_train = 1000;
    c.data.batch_size = 7;
    c.data.eval_batch_size = 3;
    c.data.crop_padding = 0;
    c.data.flip = false;
    c.teacher.arch = "resnet10_l";
    c.teacher.checkpoint = "t.safetensors";
    c.teacher.epochs = 0;
    c.teacher.optim = {.lr = 0.1 + 0.2,
                       .momentum = 0.0,
                       .weight_decay = 1e-300,
                       .nesterov = true,
                       .schedule = "step",
                       .step_size = 1,
                       .gamma = 3.0};
    c.students.archs = {"a", "b\"c"};
    c.students.warm_start_epochs = 0;
    c.students.checkpoint_dir = "ckpt";
    c.students.optim = {.lr = 1.0 / 3.0,
                        .momentum = 0.95,
                        .weight_decay = 0.0,
                        .nesterov = false,
                        .schedule = "constant",
                        .step_size = 2,
                        .gamma = 1e20};
    c.distill = {
        .epochs = 11, .tau = 4.0, .kd_alpha = 1.0, .meta_interval = 1, .meta_batch_size = 1};
    c.cnet = {.input = "image+students",
              .head = "official",
              .backbone = "resnet10_xs",
              .lr = 2.5e-7,
              .weight_decay = 0.0,
              .batchnorm_train = false};

    const std::string text = mcd::app::to_toml(c);
    INFO(text);
    const Config back = load_config(write_file("roundtrip.toml", text), {});
    CHECK(back == c);
    CHECK(back.run.seed == 9007199254740993);
    CHECK(back.students.optim.lr == 1.0 / 3.0);
    // Floats are written as TOML floats, not integers.
    CHECK_THAT(text, Contains("tau = 4.0\n"));
    CHECK(mcd::app::to_toml(back) == text);
  }
}

TEST_CASE("config: to_json mirrors the keys", "[config]") {
  Config c;
  c.distill.tau = 3.5;
  c.students.archs = {"resnet10_s"};
  const nlohmann::json j = mcd::app::to_json(c);
  std::size_t count = 0;
  for (const auto& [section, keys] : j.items())
    count += keys.size();
  CHECK(count == kKeyCount);
  CHECK(j.at("distill").at("tau") == 3.5);
  CHECK(j.at("teacher").at("lr") == 0.1);
  CHECK(j.at("students").at("lr") == 0.05);
  CHECK(j.at("students").at("archs") == nlohmann::json::array({"resnet10_s"}));
  CHECK(j.at("data").at("flip") == true);
  CHECK(j.at("run").at("seed") == 0);
  CHECK(j.at("cnet").at("input") == "image");
}

TEST_CASE("config: describe_keys has one line per key", "[config]") {
  const std::string text = mcd::app::describe_keys();
  std::istringstream in(text);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  CHECK(lines.size() == kKeyCount);
  const auto line_of = [&](const std::string& key) {
    for (const auto& l : lines)
      if (l.rfind(key + " ", 0) == 0) return l;
    FAIL("no line for " << key);
    return std::string();
  };
  CHECK_THAT(line_of("distill.tau"), Contains("(float > 0, 2.0)"));
  CHECK_THAT(line_of("distill.tau"), Contains("softmax temperature"));
  CHECK_THAT(line_of("data.val_fraction"), Contains("(float in [0, 0.9), 0.1)"));
  CHECK_THAT(line_of("teacher.schedule"), Contains("(cosine|step|constant, \"cosine\")"));
  CHECK_THAT(line_of("run.methods"),
             Contains("(list of ce|kd|takd|dgkd|mcdistil, [\"ce\", \"kd\", \"mcdistil\"])"));
  CHECK_THAT(line_of("students.lr"), Contains("(float > 0, 0.05)"));
  CHECK_THAT(line_of("run.seed"), Contains("(int >= 0, 0)"));
  CHECK_THAT(line_of("data.flip"), Contains("(bool, true)"));
}

TEST_CASE("config: the example files load", "[config]") {
  const fs::path dir = MCD_CONFIG_EXAMPLES_DIR;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".toml") files.push_back(e.path());
  REQUIRE(files.size() >= 2);
  for (const auto& f : files) {
    INFO(f.string());
    CHECK_NOTHROW(load_config(f.string(), {}));
  }

  // default.toml documents exactly the embedded default, every key of it.
  const std::string default_toml = (dir / "default.toml").string();
  CHECK(load_config(default_toml, {}) == Config{});
  CHECK(keys_of(toml::parse_file(default_toml)) ==
        keys_of(toml::parse(mcd::app::to_toml(Config{}))));

  const Config fm = load_config((dir / "fashion_mnist_mcdistil.toml").string(), {"distill.tau=4"});
  CHECK(fm.data.dataset == "fashion-mnist");
  CHECK(fm.distill.tau == 4.0);
  CHECK(fm.run.methods == std::vector<std::string>{"ce", "kd", "mcdistil"});
}
