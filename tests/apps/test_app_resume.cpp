// mcdistil_train end to end on a small Fashion-MNIST subset: a run interrupted several times
// (in different stages, mid-epoch) and resumed ends with exactly the weights of an
// uninterrupted run; a corrupt or mismatched checkpoint gives a clear error and is left as
// it was.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <mcd/engine/safetensors.h>

#ifndef MCD_APP
#error "MCD_APP must name the mcdistil_train binary"
#endif

namespace fs = std::filesystem;

namespace {

const std::string kArgs =
    "--no-progress --threads 2 --set data.limit_train=640 --set data.batch_size=64 "
    "--set data.eval_batch_size=1000 --set teacher.arch=resnet10_xxs --set teacher.epochs=1 "
    "--set 'students.archs=[\"resnet10_xxxs\",\"resnet10_xxs\"]' --set "
    "students.warm_start_epochs=1 "
    "--set distill.epochs=2 --set distill.meta_interval=3 --set distill.meta_batch_size=32 "
    "--set cnet.backbone=resnet10_xxxs --set 'run.methods=[\"kd\",\"mcdistil\"]'";

int run_app(const std::string& args, const fs::path& log) {
  const std::string cmd = fmt::format("{} {} > {} 2>&1", MCD_APP, args, log.string());
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void require_same_tensors(const fs::path& a, const fs::path& b) {
  INFO(a.string() << " vs " << b.string());
  const auto fa = mcd::load_safetensors(a.string()), fb = mcd::load_safetensors(b.string());
  REQUIRE(fa.tensors.size() == fb.tensors.size());
  for (const auto& [key, t] : fa.tensors) {
    INFO(key);
    REQUIRE(fb.tensors.count(key) == 1);
    CHECK(t.to_doubles() == fb.tensors.at(key).to_doubles());  // bit-identical values
  }
}

// Runs the app straight through and, in another directory, interrupted in several stages and
// resumed each time; requires the same weights in every checkpoint. Returns the resumed run's
// directory (under `root`).
fs::path check_resume(const fs::path& root, const std::string& args) {
  const fs::path straight = root / "straight", resumed = root / "resumed";
  REQUIRE(run_app(fmt::format("{} --run-dir {}", args, straight.string()), root / "straight.log") ==
          0);

  // Interrupt in the teacher stage, twice in the warm start/KD stages and in MC-Distil.
  REQUIRE(run_app(fmt::format("{} --run-dir {} --stop-after-steps 5", args, resumed.string()),
                  root / "r0.log") == 130);
  int status = 130, attempts = 0;
  while (status == 130 && attempts++ < 20)
    status = run_app(
        fmt::format("--run-dir {} --resume --no-progress --stop-after-steps 7", resumed.string()),
        root / fmt::format("r{}.log", attempts));
  REQUIRE(status == 0);
  REQUIRE(attempts > 3);  // it really was interrupted several times

  for (const char* stage : {"teacher", "warmstart", "kd", "mcdistil"})
    require_same_tensors(straight / fmt::format("{}_last.safetensors", stage),
                         resumed / fmt::format("{}_last.safetensors", stage));
  for (const auto& entry : fs::directory_iterator(straight)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with("_best.safetensors")) require_same_tensors(entry.path(), resumed / name);
  }
  return resumed;
}

fs::path fresh_root(const std::string& tag) {
  const fs::path root = fs::temp_directory_path() / fmt::format("mcd_{}_{}", tag, ::getpid());
  fs::remove_all(root);
  fs::create_directories(root);
  return root;
}

bool have_fashion_mnist() {
  if (fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) return true;
  WARN("Fashion-MNIST is not installed; apt-get install dataset-fashion-mnist");
  return false;
}

}  // namespace

TEST_CASE("an interrupted and resumed run ends with the same weights", "[app][resume]") {
  if (!have_fashion_mnist()) return;
  const fs::path root = fresh_root("resume");
  const fs::path resumed = check_resume(root, kArgs);

  SECTION("a corrupt checkpoint is reported and left untouched") {
    const fs::path last = resumed / "mcdistil_last.safetensors";
    fs::remove(resumed / "mcdistil_done.json");
    fs::resize_file(last, fs::file_size(last) / 2);
    const std::string before = slurp(last);
    REQUIRE(run_app(fmt::format("--run-dir {} --resume --no-progress", resumed.string()),
                    root / "corrupt.log") == 1);
    const std::string log = slurp(root / "corrupt.log");
    INFO(log);
    CHECK(log.find("mcdistil_last.safetensors") != std::string::npos);
    CHECK(slurp(last) == before);
  }
  SECTION("a checkpoint that does not match the configuration is rejected") {
    fs::remove(resumed / "kd_done.json");
    std::string config = slurp(resumed / "config.toml");
    const auto at = config.find("\"resnet10_xxs\"]");
    REQUIRE(at != std::string::npos);
    config.replace(at, 15, "\"resnet10_xs\"]");
    std::ofstream(resumed / "config.toml") << config;
    REQUIRE(run_app(fmt::format("--run-dir {} --resume --no-progress", resumed.string()),
                    root / "mismatch.log") == 1);
    const std::string log = slurp(root / "mismatch.log");
    INFO(log);
    CHECK(log.find("resnet10_xs") != std::string::npos);
  }
  fs::remove_all(root);
}

// Data parallelism with two replicas as threads on the CPU: the replicas' checkpoint (replica
// 0's, with every replica's meters) resumes them all, so the interrupted run still ends with the
// uninterrupted one's weights; the replicas drop no step and report every image.
TEST_CASE("two replicas: an interrupted and resumed run ends with the same weights",
          "[app][resume][parallel]") {
  if (!have_fashion_mnist()) return;
  const fs::path root = fresh_root("resume_replicas");
  const fs::path resumed = check_resume(root, kArgs + R"( --set 'run.devices=["cpu","cpu"]')");
  std::ifstream metrics(resumed / "metrics.jsonl");
  std::string line, last_kd;
  while (std::getline(metrics, line))
    if (line.find("\"stage\":\"kd\"") != std::string::npos) last_kd = line;
  INFO(last_kd);
  // 640 training images in batches of 64 shared by two replicas: the epoch's meters count every
  // image once (images_per_second * train_seconds), also after a resume in that epoch.
  auto number = [&](const std::string& key) {
    const auto at = last_kd.find("\"" + key + "\":");
    REQUIRE(at != std::string::npos);
    return std::stod(last_kd.substr(at + key.size() + 3));
  };
  CHECK(number("images_per_second") * number("train_seconds") == Approx(640.0).epsilon(1e-9));
  fs::remove_all(root);
}

TEST_CASE("Ctrl-C writes a checkpoint and exits with status 130", "[app][resume]") {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) {
    WARN("Fashion-MNIST is not installed; apt-get install dataset-fashion-mnist");
    return;
  }
  const fs::path root = fs::temp_directory_path() / fmt::format("mcd_sigint_{}", ::getpid());
  fs::remove_all(root);
  fs::create_directories(root);
  const fs::path run = root / "run";
  // A teacher stage long enough to be interrupted in the middle of an epoch.
  const std::string cmd = fmt::format(
      "sh -c '{} --no-progress --run-dir {} --set teacher.epochs=50 --set "
      "teacher.arch=resnet10_xxs "
      "> {} 2>&1 & pid=$!; sleep 4; kill -INT $pid; wait $pid; echo $? > {}'",
      MCD_APP, run.string(), (root / "log").string(), (root / "status").string());
  REQUIRE(std::system(cmd.c_str()) == 0);
  const std::string status = slurp(root / "status");
  const std::string log = slurp(root / "log");
  INFO(log);
  CHECK(std::stoi(status) == 130);
  CHECK(log.find("interrupted: checkpoint written") != std::string::npos);
  REQUIRE(fs::exists(run / "teacher_last.safetensors"));
  // The checkpoint is complete and loadable, and the run resumes from it.
  CHECK(mcd::load_safetensors((run / "teacher_last.safetensors").string()).tensors.size() > 10);
  CHECK(
      run_app(fmt::format("--run-dir {} --resume --no-progress --stop-after-steps 1", run.string()),
              root / "resume.log") == 130);
  CHECK(slurp(root / "resume.log").find("resuming at epoch") != std::string::npos);
  fs::remove_all(root);
}
