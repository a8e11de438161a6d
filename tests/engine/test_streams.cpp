// Engine streams (engine/stream.h) and the trainer's lanes (distill/student_streams.h), checked
// on the CPU against a fake backend that lends numbered streams and logs every call, so the
// tests see which stream is current and which waits were issued. The GPU test binary checks
// the CUDA backend's streams and a concurrent training step against a serial one.
#include <map>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <mcd/distill/student_streams.h>
#include <mcd/engine/device_backend.h>
#include <mcd/engine/error.h>
#include <mcd/engine/graph.h>
#include <mcd/engine/stream.h>

using namespace mcd;
using Catch::Matchers::Contains;

namespace {

// Streams are numbered from 1 (1 is each device's default); no memory is ever allocated.
class FakeStreams final : public DeviceBackend {
 public:
  explicit FakeStreams(bool streams) : streams_(streams) {}
  const char* name() const override { return "fake"; }
  int device_count() const override { return 2; }
  void* allocate(std::size_t, int) override { return nullptr; }
  void deallocate(void*, std::size_t, int) override {}
  void copy(void*, Device, const void*, Device, std::size_t) override {}
  void synchronize(int) override {}

  std::uintptr_t acquire_stream(int device) override {
    if (!streams_) return 0;
    log.push_back(fmt::format("acquire {}", next_));
    lent.insert(next_);
    (void)device;
    return next_++;
  }
  void release_stream(int, std::uintptr_t s) override {
    if (!streams_) return;
    log.push_back(fmt::format("release {}", s));
    lent.erase(s);
  }
  std::uintptr_t current_stream(int device) override {
    if (!streams_) return 0;
    auto it = current.find(device);
    return it == current.end() ? 1 : it->second;
  }
  void set_current_stream(int device, std::uintptr_t s) override {
    if (streams_) current[device] = s;
  }
  void stream_wait(int device, std::uintptr_t waiter, std::uintptr_t producer) override {
    log.push_back(fmt::format("dev{}: {} waits {}", device, waiter, producer));
  }
  // "Capture" runs the code once and logs it; a replay is a log line.
  std::uintptr_t capture_graph(int device, std::uintptr_t stream,
                               const std::function<void()>& record, std::uintptr_t) override {
    if (!streams_) return 0;
    log.push_back(fmt::format("dev{}: capture on {}", device, stream));
    record();
    return ++graphs;
  }
  void replay_graph(int device, std::uintptr_t graph, std::uintptr_t stream) override {
    log.push_back(fmt::format("dev{}: replay {} on {}", device, graph, stream));
  }
  void destroy_graph(int device, std::uintptr_t graph) override {
    log.push_back(fmt::format("dev{}: destroy {}", device, graph));
  }

  std::vector<std::string> log;
  std::set<std::uintptr_t> lent;
  std::map<int, std::uintptr_t> current;
  std::uintptr_t graphs = 0;

 private:
  bool streams_;
  std::uintptr_t next_ = 2;
};

struct FakeStreamsScope {
  FakeStreams backend;
  explicit FakeStreamsScope(bool streams = true) : backend(streams) {
    register_device_backend(DeviceType::CUDA, &backend);
  }
  ~FakeStreamsScope() { register_device_backend(DeviceType::CUDA, nullptr); }
};

}  // namespace

TEST_CASE("streams on the CPU are the one in-order queue", "[engine][stream]") {
  const StreamRef cpu = current_stream(Device::cpu());
  CHECK(cpu == StreamRef{});
  const PooledStream lane(Device::cpu());
  CHECK(lane.ref() == cpu);
  const StreamGuard on(lane.ref());
  CHECK(current_stream(Device::cpu()) == cpu);
  stream_wait(lane.ref(), cpu);  // nothing to order
}

TEST_CASE("stream guards nest and restore, pooled streams go back", "[engine][stream]") {
  FakeStreamsScope fake;
  const Device d = Device::cuda(1);
  CHECK(current_stream(d).handle == 1);
  {
    const PooledStream a(d), b(d);
    CHECK(a.ref().handle == 2);
    CHECK(b.ref().handle == 3);
    CHECK(fake.backend.lent == std::set<std::uintptr_t>{2, 3});
    {
      const StreamGuard on_a(a.ref());
      CHECK(current_stream(d) == a.ref());
      {
        const StreamGuard on_b(b.ref());
        CHECK(current_stream(d) == b.ref());
        CHECK(current_stream(Device::cuda(0)).handle == 1);  // other devices keep theirs
      }
      CHECK(current_stream(d) == a.ref());
    }
    CHECK(current_stream(d).handle == 1);
    stream_wait(a.ref(), b.ref());
    stream_wait(a.ref(), a.ref());  // a stream is ordered after itself: no call
    CHECK(fake.backend.log.back() == "dev1: 2 waits 3");
  }
  CHECK(fake.backend.lent.empty());
}

TEST_CASE("a stream cannot wait for another device's stream", "[engine][stream]") {
  FakeStreamsScope fake;
  const StreamRef a = current_stream(Device::cuda(0)), b = current_stream(Device::cuda(1));
  CHECK_THROWS_WITH(stream_wait(a, b),
                    Contains("stream_wait") && Contains("cuda:0") && Contains("cuda:1"));
  CHECK_THROWS_WITH(stream_wait(a, current_stream(Device::cpu())), Contains("cpu"));
}

TEST_CASE("student lanes fork from and join to the step's main stream", "[distill][stream]") {
  FakeStreamsScope fake;
  const Device d = Device::cuda(0);
  SECTION("concurrent: a lane for the teachers, one per student, one for the policy") {
    distill::StudentStreams lanes(d, 3, true);
    REQUIRE(lanes.concurrent());
    std::set<std::uintptr_t> handles = {lanes.main().handle, lanes.teacher().handle,
                                        lanes.policy().handle};
    for (std::size_t k = 0; k < 3; ++k)
      handles.insert(lanes.student(k).handle);
    CHECK(handles.size() == 6);  // all distinct

    fake.backend.log.clear();
    lanes.begin_step();
    lanes.fork(lanes.teacher());
    lanes.fork_students();
    lanes.join(lanes.teacher());
    lanes.join_students();
    CHECK(fake.backend.log == std::vector<std::string>{"dev0: 2 waits 1", "dev0: 3 waits 1",
                                                       "dev0: 4 waits 1", "dev0: 5 waits 1",
                                                       "dev0: 1 waits 2", "dev0: 1 waits 3",
                                                       "dev0: 1 waits 4", "dev0: 1 waits 5"});

    // The main stream is whatever the caller has current when a step begins.
    const PooledStream caller(d);
    const StreamGuard on(caller.ref());
    lanes.begin_step();
    CHECK(lanes.main() == caller.ref());
  }
  SECTION("serial: every lane is the main stream and nothing waits") {
    distill::StudentStreams lanes(d, 3, false);
    CHECK_FALSE(lanes.concurrent());
    CHECK(lanes.teacher() == lanes.main());
    CHECK(lanes.student(2) == lanes.main());
    CHECK(lanes.policy() == lanes.main());
    fake.backend.log.clear();
    lanes.fork_students();
    lanes.join_students();
    lanes.fork(lanes.teacher());
    CHECK(fake.backend.log.empty());
  }
  CHECK(fake.backend.lent.empty());  // every lane went back to the pool
}

TEST_CASE("students balanced over fewer lanes: largest first, to the least loaded",
          "[distill][stream]") {
  // The reference students' step peaks (MB), as a cost: the largest alone on one lane.
  CHECK(distill::balance_lanes({622, 144, 239, 283, 313}, 2) ==
        std::vector<std::size_t>{0, 0, 1, 1, 1});
  CHECK(distill::balance_lanes({3, 3, 3}, 2) == std::vector<std::size_t>{0, 1, 0});  // ties: lower
  // Equal loads: the lane with fewer students first, so zero costs still spread.
  CHECK(distill::balance_lanes({0, 0, 0}, 2) == std::vector<std::size_t>{0, 1, 0});
  CHECK_THROWS_WITH(distill::balance_lanes({1, -1}, 2), Contains("a cost of -1"));
  CHECK(distill::balance_lanes({1, 2}, 1) == std::vector<std::size_t>{0, 0});
  CHECK(distill::balance_lanes({}, 3).empty());
  CHECK_THROWS_WITH(distill::balance_lanes({1}, 0), Contains("no lanes"));

  FakeStreamsScope fake;
  const Device d = Device::cuda(0);
  SECTION("three students on two lanes; the teachers and the policy on the lighter one") {
    distill::StudentStreams lanes(d, 3, true, 2, {1.0, 5.0, 2.0});
    REQUIRE(lanes.concurrent());
    const StreamRef heavy = lanes.student(1), light = lanes.student(0);
    CHECK(heavy != light);
    CHECK(lanes.student(2) == light);
    CHECK(lanes.teacher() == light);
    CHECK(lanes.policy() == light);
    CHECK(light != lanes.main());
    CHECK(heavy != lanes.main());
    // Queued first: the student whose lane holds neither the teachers nor the policy.
    CHECK(lanes.queue_order() == std::vector<std::size_t>{1, 0, 2});
    fake.backend.log.clear();
    lanes.fork_students();  // each lane once, in the order of the students using them
    lanes.join_students();
    CHECK(fake.backend.log ==
          std::vector<std::string>{fmt::format("dev0: {} waits 1", light.handle),
                                   fmt::format("dev0: {} waits 1", heavy.handle),
                                   fmt::format("dev0: 1 waits {}", light.handle),
                                   fmt::format("dev0: 1 waits {}", heavy.handle)});
  }
  SECTION("as many lanes as students or more: a lane each, as by default") {
    distill::StudentStreams lanes(d, 2, true, 2, {1.0, 1.0});
    CHECK(lanes.queue_order() == std::vector<std::size_t>{0, 1});
    std::set<std::uintptr_t> handles = {lanes.main().handle, lanes.teacher().handle,
                                        lanes.policy().handle, lanes.student(0).handle,
                                        lanes.student(1).handle};
    CHECK(handles.size() == 5);
  }
  SECTION("the costs must come with the students") {
    CHECK_THROWS_WITH(distill::StudentStreams(d, 3, true, 2, {1.0}), Contains("1 costs"));
  }
  CHECK(fake.backend.lent.empty());
}

TEST_CASE("a backend without streams gives no lanes", "[distill][stream]") {
  FakeStreamsScope fake(/*streams=*/false);
  distill::StudentStreams lanes(Device::cuda(0), 4, true);
  CHECK_FALSE(lanes.concurrent());
  CHECK(lanes.student(3) == lanes.main());
  distill::StudentStreams on_cpu(Device::cpu(), 4, true);
  CHECK_FALSE(on_cpu.concurrent());
}

TEST_CASE("device graphs: captured once, replayed, destroyed with the object", "[engine][graph]") {
  int runs = 0;
  const auto record = [&] { ++runs; };
  CHECK(DeviceGraph::capture(current_stream(Device::cpu()), record) == nullptr);
  CHECK(runs == 0);  // no graphs on the CPU: the code is not run
  {
    FakeStreamsScope no_graphs(/*streams=*/false);
    CHECK(DeviceGraph::capture(current_stream(Device::cuda(0)), record) == nullptr);
    CHECK(runs == 0);
  }
  FakeStreamsScope fake;
  const Device d = Device::cuda(1);
  {
    const PooledStream lane(d);
    auto graph = DeviceGraph::capture(lane.ref(), record);
    REQUIRE(graph != nullptr);
    CHECK(runs == 1);
    graph->replay(current_stream(d));
    graph->replay(lane.ref());
    CHECK_THROWS_WITH(graph->replay(current_stream(Device::cuda(0))),
                      Contains("cuda:1") && Contains("cuda:0"));
  }
  CHECK(fake.backend.log == std::vector<std::string>{"acquire 2", "dev1: capture on 2",
                                                     "dev1: replay 1 on 1", "dev1: replay 1 on 2",
                                                     "dev1: destroy 1", "release 2"});
  CHECK_THROWS_WITH(DeviceGraph::capture(current_stream(d), [] { mcd::fail("broken step"); }),
                    Contains("broken step"));
}
