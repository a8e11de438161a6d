// The trainer on CUDA with every student on a stream of its own and repeated steps replayed as
// CUDA graphs, against the same iterations with all work on one stream and no graphs. All
// schedules start from the same models and see the same batches; lanes and graphs change only
// when and how kernels are launched, never what they compute, so a missing wait (a lane
// reading a tensor before it is written, memory reused while another lane still reads it), a
// replay reading a stale input or writing memory that something else holds shows as a
// difference. The comparison is at 1e-6 normwise, not bit for bit: cuBLAS documents that it
// may pick other kernels while several streams are active.
//
// Seven MC-Distil iterations (L = 3: meta steps at 0, 3 and 6; the meta step eager at 0 as the
// first of its kind, captured at 3 and replayed at 6; the step eager at 0, captured at 1 and
// replayed from then on, after the meta step's replays too) and then three KD iterations
// (eager, captured, replayed), so the meta step's order against the lanes and the two graphs'
// order are both exercised; the graph schedules must really replay. Checked:
// every student parameter, momentum buffer and BatchNorm statistic, the C-Net's parameters
// and the epoch meters (the graph runs with deferred meters, read a step late, as the app does).
// Also with the three students on two streams, two of them sharing one with the teacher and the
// C-Net (Trainer::set_shared_student_streams).
// The reference (one stream) is itself checked against the CPU by the
// MC-Distil iteration test. Then DGKD with two guides (their mixture made on the device), its
// step captured and replayed on lanes against one stream without graphs; and a meta step every
// iteration with a learning-rate change (the meta step's graph captured first, both graphs
// captured again sharing one memory pool).
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <mcd/data/loader.h>
#include <mcd/distill/trainer.h>
#include <mcd/engine/generator.h>
#include <mcd/kernels/cuda/backend.h>
#include <mcd/kernels/cuda/library_handles.h>
#include <mcd/kernels/cuda/nccl_collectives.h>
#include <mcd/models/cnet.h>
#include <mcd/models/registry.h>

#include "cuda/nccl_test_support.h"
#include "cuda/test_cuda_nn_parity.h"
#include "support/random_dataset.h"
#include "support/test_files.h"

using namespace mcd;
namespace kcu = mcd::kernels::cuda;

namespace {

constexpr std::int64_t kClasses = 10, kSize = 16, kBatch = 24, kImages = 96;

data::Dataset synthetic_images() {
  return mcd::testing::random_dataset(
      kImages, 3, kSize, kSize, kClasses, 5,
      [](std::int64_t, Generator& gen) { return static_cast<std::int64_t>(gen.below(kClasses)); });
}

struct Run {
  std::vector<distill::Student> students;
  std::shared_ptr<nn::CNet> cnet;
  std::int64_t replayed = 0, meta_replayed = 0, captured = 0;
};

const nn::ModelConfig kModels{3, kClasses, kSize};

// Students of `archs` on the GPU, SGD with momentum 0.9 (and, with `decay`, Nesterov and weight
// decay).
std::vector<distill::Student> make_students(const std::vector<const char*>& archs, Generator& gen,
                                            bool decay) {
  std::vector<distill::Student> students;
  for (const char* arch : archs) {
    distill::Student s;
    s.name = arch;
    s.model = nn::make_model(arch, kModels, gen);
    s.model->to(Device::cuda());
    optim::SgdOptions so;
    so.lr = 0.05;
    so.momentum = 0.9;
    if (decay) {
      so.weight_decay = 5e-4;
      so.nesterov = true;
    }
    s.optimizer = std::make_unique<optim::Sgd>(s.model->parameters(), so);
    students.push_back(std::move(s));
  }
  return students;
}

std::shared_ptr<nn::CNet> make_cnet(std::int64_t students, nn::CNetInput input, Generator& gen) {
  nn::CNetConfig cc;
  cc.num_students = students;
  cc.backbone = "resnet10_xxxs";
  cc.input = input;
  cc.image = {3, 0, kSize};
  auto cnet = std::make_shared<nn::CNet>(cc, gen);
  cnet->to(Device::cuda());
  return cnet;
}

data::LoaderOptions loader_options() {
  data::LoaderOptions lo;
  lo.batch_size = kBatch;
  lo.normalization = {{127.5f, 127.5f, 127.5f}, {64.0f, 64.0f, 64.0f}};
  return lo;
}

// The next batch, the next epoch's first when one ends.
data::Batch next_batch(data::BatchIterator& batches) {
  data::Batch b;
  if (!batches.next(b)) {
    batches.start_epoch(batches.epoch() + 1);
    REQUIRE(batches.next(b));
  }
  return b;
}

// `shared_lanes`: Trainer::set_shared_student_streams (0: a stream per student); `collective`:
// Trainer::set_collective (a replica of data-parallel training).
Run train(const data::Dataset& data, nn::CNetInput input, bool concurrent, bool graphs,
          std::size_t shared_lanes = 0, Collective* collective = nullptr) {
  Generator gen(3);
  auto teacher = nn::make_model("resnet10_xs", kModels, gen);
  teacher->to(Device::cuda());
  Run r;
  r.students = make_students({"resnet10_xxxs", "resnet10_xxs", "resnet10_xs"}, gen, true);
  r.cnet = make_cnet(3, input, gen);
  const data::LoaderOptions lo = loader_options();
  data::BatchIterator batches(data, mcd::testing::iota(kImages), lo);
  auto next = [&] { return next_batch(batches); };
  {
    distill::Trainer mcdistil(r.students, teacher,
                              std::make_unique<distill::CNetWeighting>(
                                  r.cnet, optim::AdamOptions{}, 3,
                                  data::BatchIterator(data, mcd::testing::iota(kImages), lo), true),
                              4.0);
    mcdistil.set_concurrent_students(concurrent);
    mcdistil.set_graphs(graphs);
    mcdistil.set_shared_student_streams(shared_lanes);
    mcdistil.set_collective(collective);
    // The graph runs read their meters a step late, as the app does.
    mcdistil.set_deferred_meters(graphs);
    for (int i = 0; i < 7; ++i)
      mcdistil.step(next());
    mcdistil.flush_meters();
    r.replayed += mcdistil.replayed_steps();
    r.meta_replayed += mcdistil.replayed_meta_steps();
    r.captured += mcdistil.captured_graphs();
  }
  distill::Trainer kd(r.students, teacher, distill::kd_weighting(0.5), 4.0);
  kd.set_concurrent_students(concurrent);
  kd.set_graphs(graphs);
  kd.set_shared_student_streams(shared_lanes);
  kd.set_collective(collective);
  kd.set_deferred_meters(graphs);
  for (int i = 0; i < 3; ++i)
    kd.step(next());
  kd.flush_meters();
  r.replayed += kd.replayed_steps();
  r.captured += kd.captured_graphs();
  return r;
}

// A meta step every iteration (L = 1: the meta step's graph is captured before the step's, in
// the same iteration) and a learning-rate change after three iterations (both graphs captured
// again, each sharing the other's memory pool): 6 MC-Distil iterations.
Run train_meta_first(const data::Dataset& data, bool concurrent, bool graphs) {
  Generator gen(9);
  auto teacher = nn::make_model("resnet10_xs", kModels, gen);
  teacher->to(Device::cuda());
  Run r;
  r.students = make_students({"resnet10_xxxs", "resnet10_xxs"}, gen, false);
  r.cnet = make_cnet(2, nn::CNetInput::Image, gen);
  const data::LoaderOptions lo = loader_options();
  data::BatchIterator batches(data, mcd::testing::iota(kImages), lo);
  distill::Trainer mcdistil(r.students, teacher,
                            std::make_unique<distill::CNetWeighting>(
                                r.cnet, optim::AdamOptions{}, 1,
                                data::BatchIterator(data, mcd::testing::iota(kImages), lo), true),
                            4.0);
  mcdistil.set_concurrent_students(concurrent);
  mcdistil.set_graphs(graphs);
  for (int i = 0; i < 6; ++i) {
    if (i == 3)
      for (distill::Student& s : r.students)
        s.optimizer->set_lr(0.02);
    mcdistil.step(next_batch(batches));
  }
  r.replayed = mcdistil.replayed_steps();
  r.meta_replayed = mcdistil.replayed_meta_steps();
  r.captured = mcdistil.captured_graphs();
  return r;
}

// DGKD with two guides and none dropped: the teachers' targets are a mixture, made on the
// device, so the step is captured and replayed like any other.
Run train_dgkd(const data::Dataset& data, bool concurrent, bool graphs) {
  Generator gen(7);
  std::vector<std::shared_ptr<nn::Module>> guides;
  for (const char* arch : {"resnet10_xs", "resnet10_xxs"}) {
    guides.push_back(nn::make_model(arch, kModels, gen));
    guides.back()->to(Device::cuda());
  }
  Run r;
  r.students = make_students({"resnet10_xxxs"}, gen, false);
  data::BatchIterator batches(data, mcd::testing::iota(kImages), loader_options());
  distill::Trainer dgkd(r.students, guides, std::make_unique<distill::DgkdWeighting>(0.5, 0, 1),
                        4.0);
  dgkd.set_concurrent_students(concurrent);
  dgkd.set_graphs(graphs);
  for (int i = 0; i < 3; ++i)
    dgkd.step(next_batch(batches));
  r.replayed = dgkd.replayed_steps();
  r.captured = dgkd.captured_graphs();
  return r;
}

void require_same(const std::string& what, const Tensor& lanes, const Tensor& serial) {
  REQUIRE(lanes.defined() == serial.defined());
  if (!serial.defined()) return;
  mcd::testing::require_close<double>(what, mcd::testing::host_values(lanes),
                                      mcd::testing::host_values(serial), 1e-6);
}

void require_same_state(const Run& lanes, const Run& serial) {
  for (std::size_t k = 0; k < serial.students.size(); ++k) {
    const auto& a = lanes.students[k];
    const auto& b = serial.students[k];
    const std::string who = "student " + b.name + " ";
    const auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
    for (std::size_t i = 0; i < pb.size(); ++i) {
      require_same(who + pb[i].first, pa[i].second, pb[i].second);
      require_same(who + pb[i].first + " momentum", a.optimizer->momentum_buffer(i),
                   b.optimizer->momentum_buffer(i));
    }
    const auto ba = a.model->named_buffers(), bb = b.model->named_buffers();
    for (std::size_t i = 0; i < bb.size(); ++i)
      require_same(who + bb[i].first, ba[i].second, bb[i].second);
    mcd::testing::require_close<double>(who + "meters", a.meters.to_vector(), b.meters.to_vector(),
                                        1e-6);
  }
  if (!serial.cnet) return;
  const auto ca = lanes.cnet->named_parameters(), cb = serial.cnet->named_parameters();
  for (std::size_t i = 0; i < cb.size(); ++i)
    require_same("C-Net " + cb[i].first, ca[i].second, cb[i].second);
  const auto na = lanes.cnet->named_buffers(), nb = serial.cnet->named_buffers();
  for (std::size_t i = 0; i < nb.size(); ++i)
    require_same("C-Net " + nb[i].first, na[i].second, nb[i].second);
}

}  // namespace

// Both C-Net inputs: image+students (every student's forward before the weights, the meta
// step's forwards on the lanes before the C-Net) and image (the weights on the policy's lane
// beside the students; one student at a time without lanes).
TEST_CASE("CUDA trainer: lanes and graphs match one stream without graphs", "[cuda][trainer]") {
  REQUIRE(kcu::install_cuda_backend());
  // Deterministic convolution algorithms, so every schedule runs the same kernels.
  kcu::set_conv_deterministic(true);
  const data::Dataset data = synthetic_images();
  for (const nn::CNetInput input : {nn::CNetInput::ImageStudents, nn::CNetInput::Image}) {
    INFO("C-Net input " << nn::to_string(input));
    const Run serial = train(data, input, false, false);
    CHECK(serial.replayed == 0);
    const Run lanes = train(data, input, true, false);
    require_same_state(lanes, serial);
    const Run graphs = train(data, input, false, true);
    CHECK(graphs.captured == 3);       // the MC-Distil step and meta step, the KD step
    CHECK(graphs.replayed == 8);       // MC-Distil iterations 1 to 6, KD iterations 1 and 2
    CHECK(graphs.meta_replayed == 2);  // MC-Distil iterations 3 and 6
    require_same_state(graphs, serial);
    const Run both = train(data, input, true, true);
    CHECK(both.captured == 3);
    CHECK(both.replayed == 8);
    CHECK(both.meta_replayed == 2);
    require_same_state(both, serial);
    // Three students on two streams (two sharing one, with the teacher and the C-Net).
    const Run shared = train(data, input, true, true, 2);
    CHECK(shared.captured == 3);
    CHECK(shared.replayed == 8);
    CHECK(shared.meta_replayed == 2);
    require_same_state(shared, serial);
  }
  kcu::set_conv_deterministic(false);
}

// Data parallelism with one replica: NCCL's averaging over one GPU leaves every value as it is,
// so the replica must train as the trainer alone, with the averages (the students' gradients on
// their lanes, the meta step's, the buffers) captured into the graphs and replayed.
TEST_CASE("CUDA trainer: one NCCL replica, its averages inside the graphs, trains as one trainer",
          "[cuda][trainer][nccl]") {
  REQUIRE(kcu::install_cuda_backend());
  if (!mcd::testing::nccl_here()) return;
  kcu::set_conv_deterministic(true);
  const data::Dataset data = synthetic_images();
  kcu::NcclCollectives nccl({0});
  const Run serial = train(data, nn::CNetInput::Image, false, false);
  const Run replica = train(data, nn::CNetInput::Image, true, true, 0, &nccl.replica(0));
  CHECK(replica.captured == 3);
  CHECK(replica.replayed == 8);
  CHECK(replica.meta_replayed == 2);
  require_same_state(replica, serial);
  kcu::set_conv_deterministic(false);
}

TEST_CASE("CUDA trainer: DGKD with two guides replays as a graph", "[cuda][trainer]") {
  REQUIRE(kcu::install_cuda_backend());
  kcu::set_conv_deterministic(true);
  const data::Dataset data = synthetic_images();
  const Run serial = train_dgkd(data, false, false);
  const Run both = train_dgkd(data, true, true);
  CHECK(both.captured == 1);
  CHECK(both.replayed == 2);
  require_same_state(both, serial);
  kcu::set_conv_deterministic(false);
}

TEST_CASE("CUDA trainer: the meta step's graph first, and both recaptured sharing one pool",
          "[cuda][trainer]") {
  REQUIRE(kcu::install_cuda_backend());
  kcu::set_conv_deterministic(true);
  const data::Dataset data = synthetic_images();
  const Run serial = train_meta_first(data, false, false);
  const Run both = train_meta_first(data, true, true);
  CHECK(both.captured == 4);       // both graphs at iterations 1 and 4
  CHECK(both.replayed == 4);       // iterations 1, 2, 4, 5
  CHECK(both.meta_replayed == 4);  // the same
  require_same_state(both, serial);
  kcu::set_conv_deterministic(false);
}
