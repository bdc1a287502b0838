#include "controller/core.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "controller/core_impl.h"
#include "controller/sqlite_store.h"
#include "controller/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace strait::controller {
namespace {

using strait::v1::WatchTunnelsEvent;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kPskA[] = "first secret key 0123456789";
constexpr char kPskB[] = "second secret key 0123456789";

std::string NewTestDir() {
  static std::atomic<int> counter{0};
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/core-", getpid(), "-", counter++);
}

strait::v1::Tunnel MakeTunnel(const std::string& name, const std::string& node,
                              const std::string& local_ts, const std::string& remote_ts,
                              const std::string& psk = kPskA) {
  strait::v1::Tunnel t;
  t.set_kind("Tunnel");
  t.mutable_metadata()->set_name(name);
  strait::v1::TunnelSpec* spec = t.mutable_spec();
  spec->set_node(node);
  spec->mutable_local()->set_address("192.0.2.1");
  spec->mutable_local()->add_traffic_selectors(local_ts);
  spec->mutable_remote()->set_address("192.0.2.100");
  spec->mutable_remote()->add_traffic_selectors(remote_ts);
  spec->mutable_auth()->mutable_psk()->set_value(psk);
  spec->mutable_ike()->add_proposals("aes256gcm16-prfsha384-ecp384");
  spec->mutable_esp()->add_proposals("aes256gcm16-ecp384");
  return t;
}

strait::v1::Tunnel NodeToNode(const std::string& name, const std::string& a, const std::string& b) {
  strait::v1::Tunnel t = MakeTunnel(name, a, "10.1.0.0/24", "10.2.0.0/24", kPskB);
  t.mutable_spec()->mutable_remote()->set_node(b);
  t.mutable_spec()->mutable_remote()->set_address("192.0.2.2");
  return t;
}

strait::v1::ApplyTunnelRequest ApplyRequest(const strait::v1::Tunnel& tunnel,
                                            bool dry_run = false) {
  strait::v1::ApplyTunnelRequest request;
  *request.mutable_tunnel() = tunnel;
  request.set_dry_run(dry_run);
  return request;
}

// Records the snapshots pushed to one session.
class FakeListener : public SnapshotListener {
 public:
  void OnSnapshot(std::shared_ptr<const strait::v1::Snapshot> snapshot) override {
    absl::MutexLock lock(&mu_);
    snapshots_.push_back(std::move(snapshot));
  }
  int count() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(snapshots_.size());
  }
  std::shared_ptr<const strait::v1::Snapshot> last() {
    absl::MutexLock lock(&mu_);
    return snapshots_.empty() ? nullptr : snapshots_.back();
  }

 private:
  absl::Mutex mu_;
  std::vector<std::shared_ptr<const strait::v1::Snapshot>> snapshots_ ABSL_GUARDED_BY(mu_);
};

// Passes everything to a real store, and fails commits on request.
class FailingStore : public Store {
 public:
  explicit FailingStore(StorePtr store, bool* fail) : store_(std::move(store)), fail_(fail) {}
  absl::StatusOr<State> Load() override { return store_->Load(); }
  absl::Status Commit(const Change& change) override {
    if (*fail_) {
      return absl::UnavailableError("disk on fire");
    }
    return store_->Commit(change);
  }

 private:
  StorePtr store_;
  bool* fail_;
};

double MetricValue(prometheus::Registry& registry, const std::string& name,
                   const std::string& node = "") {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != name) {
      continue;
    }
    for (const prometheus::ClientMetric& metric : family.metric) {
      bool match = node.empty();
      for (const prometheus::ClientMetric::Label& label : metric.label) {
        if (label.name == "node" && label.value == node) {
          match = true;
        }
      }
      if (!match) {
        continue;
      }
      if (family.type == prometheus::MetricType::Counter) {
        return metric.counter.value;
      }
      return metric.gauge.value;
    }
  }
  return -1;
}

class CoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTestDir();
    Open();
  }

  void Open() {
    core_.reset();
    registry_ = std::make_unique<prometheus::Registry>();
    auto store = OpenSqliteStore(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    CoreOptions options;
    options.clock = &clock_;
    options.registry = registry_.get();
    auto core = CreateCore(*std::move(store), options);
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = *std::move(core);
  }

  strait::v1::ApplyTunnelResponse MustApply(const strait::v1::Tunnel& tunnel) {
    auto response = core_->Apply(ApplyRequest(tunnel));
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *response : strait::v1::ApplyTunnelResponse();
  }

  std::string CurrentVersion(const std::string& node) {
    const strait::v1::ListNodesResponse nodes = core_->ListNodes();
    for (const strait::v1::Node& n : nodes.nodes()) {
      if (n.name() == node) {
        return n.current_version();
      }
    }
    return "";
  }

  std::string StoreId() {
    std::string version = CurrentVersion("node-a");
    if (version.empty()) {
      int64_t id;
      FakeListener listener;
      auto snapshot = core_->Connect("probe", "", "peer", &listener, &id);
      core_->Disconnect(id);
      version = snapshot->version();
    }
    return version.substr(version.find('.') + 1);
  }

  std::string dir_;
  FakeClock clock_;
  std::unique_ptr<prometheus::Registry> registry_;
  CorePtr core_;
};

TEST_F(CoreTest, ApplyReturnsStoredTunnelWithoutPsk) {
  int64_t session;
  FakeListener listener;
  core_->Connect("node-a", "", "10.0.0.1:1234", &listener, &session);
  std::vector<WatchTunnelsEvent> initial;
  std::vector<WatchTunnelsEvent> events;
  core_->AddWatcher([&](const WatchTunnelsEvent& e) { events.push_back(e); }, &initial);

  strait::v1::Tunnel tunnel = MakeTunnel("t1", "node-a", "10.1.0.0/24", "10.100.0.0/16");
  (*tunnel.mutable_metadata()->mutable_labels())["env"] = "test";
  auto response = core_->Apply(ApplyRequest(tunnel));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_TRUE(response->changed());
  EXPECT_EQ(response->revision(), 1);
  const strait::v1::Tunnel& stored = response->tunnel();
  EXPECT_EQ(stored.kind(), "Tunnel");
  EXPECT_EQ(stored.metadata().generation(), 1);
  EXPECT_EQ(stored.metadata().revision(), 1);
  EXPECT_EQ(stored.metadata().labels().at("env"), "test");
  EXPECT_EQ(stored.metadata().create_time().seconds(), absl::ToUnixSeconds(clock_.Now()));
  EXPECT_EQ(stored.spec().esp().replay_window(), 64u);  // defaults applied
  EXPECT_TRUE(stored.spec().auth().psk().value().empty());
  const std::string fingerprint = stored.spec().auth().psk().fingerprint();
  EXPECT_TRUE(absl::StartsWith(fingerprint, "sha256:")) << fingerprint;
  EXPECT_EQ(fingerprint.size(), 15u);
  // One status entry per managed end, empty until the agent reports.
  ASSERT_EQ(stored.status().ends_size(), 1);
  EXPECT_EQ(stored.status().ends(0).node(), "node-a");
  EXPECT_EQ(stored.status().ends(0).phase(), strait::v1::TUNNEL_PHASE_UNSPECIFIED);

  auto got = core_->Get("t1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->spec().auth().psk().fingerprint(), fingerprint);
  ASSERT_EQ(events.size(), 1u);

  // The key is nowhere in what the admin API returns...
  for (const std::string& bytes :
       {response->SerializeAsString(), got->SerializeAsString(),
        core_->List(strait::v1::ListTunnelsRequest()).SerializeAsString(),
        events[0].SerializeAsString(), core_->ListNodes().SerializeAsString()}) {
    EXPECT_FALSE(absl::StrContains(bytes, kPskA));
  }
  std::vector<WatchTunnelsEvent> later_initial;
  int64_t watcher = core_->AddWatcher([](const WatchTunnelsEvent&) {}, &later_initial);
  core_->RemoveWatcher(watcher);
  ASSERT_EQ(later_initial.size(), 1u);
  EXPECT_FALSE(absl::StrContains(later_initial[0].SerializeAsString(), kPskA));

  // ...but the agent gets it.
  ASSERT_EQ(listener.count(), 1);
  ASSERT_EQ(listener.last()->tunnels_size(), 1);
  EXPECT_EQ(listener.last()->tunnels(0).spec().auth().psk().value(), kPskA);
  EXPECT_TRUE(listener.last()->tunnels(0).spec().auth().psk().fingerprint().empty());

  // A different key has a different fingerprint; the same key the same one.
  auto other =
      core_->Apply(ApplyRequest(MakeTunnel("t2", "node-b", "10.1.0.0/24", "10.100.0.0/16", kPskB)));
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->tunnel().spec().auth().psk().fingerprint(), fingerprint);
}

TEST_F(CoreTest, DryRunStoresNothing) {
  int64_t session;
  FakeListener listener;
  core_->Connect("node-a", "", "peer", &listener, &session);
  std::vector<WatchTunnelsEvent> events;
  core_->AddWatcher([&](const WatchTunnelsEvent& e) { events.push_back(e); }, nullptr);

  auto response =
      core_->Apply(ApplyRequest(MakeTunnel("t1", "node-a", "10.1.0.0/24", "10.100.0.0/16"), true));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_TRUE(response->changed());
  EXPECT_EQ(response->revision(), 0);
  EXPECT_EQ(response->tunnel().metadata().generation(), 1);
  EXPECT_TRUE(response->tunnel().spec().auth().psk().value().empty());
  EXPECT_FALSE(response->tunnel().spec().auth().psk().fingerprint().empty());
  EXPECT_FALSE(absl::StrContains(response->SerializeAsString(), kPskA));

  EXPECT_EQ(core_->Get("t1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(core_->List(strait::v1::ListTunnelsRequest()).tunnels_size(), 0);
  EXPECT_EQ(listener.count(), 0);
  EXPECT_TRUE(events.empty());

  // Invalid input fails a dry run as it would fail a real one.
  strait::v1::Tunnel bad = MakeTunnel("t1", "node-a", "10.1.0.0/24", "10.100.0.0/16");
  bad.mutable_spec()->mutable_ike()->set_proposals(0, "3des-md5-modp1024");
  auto rejected = core_->Apply(ApplyRequest(bad, true));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rejected.status().message(), HasSubstr("spec.ike.proposals"));

  Open();
  EXPECT_EQ(core_->List(strait::v1::ListTunnelsRequest()).revision(), 0);
  EXPECT_EQ(core_->List(strait::v1::ListTunnelsRequest()).tunnels_size(), 0);
}

TEST_F(CoreTest, IdenticalReapplyIsANoOp) {
  int64_t session;
  FakeListener listener;
  core_->Connect("node-a", "", "peer", &listener, &session);
  strait::v1::Tunnel tunnel = MakeTunnel("t1", "node-a", "10.1.0.0/24", "10.100.0.0/16");
  MustApply(tunnel);
  ASSERT_EQ(listener.count(), 1);
  std::vector<WatchTunnelsEvent> events;
  core_->AddWatcher([&](const WatchTunnelsEvent& e) { events.push_back(e); }, nullptr);

  clock_.Advance(absl::Minutes(1));
  auto again = core_->Apply(ApplyRequest(tunnel));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->changed());
  EXPECT_EQ(again->revision(), 1);
  EXPECT_EQ(again->tunnel().metadata().generation(), 1);

  // Spelling out the defaults is the same spec.
  strait::v1::Tunnel explicit_defaults = tunnel;
  explicit_defaults.mutable_spec()->mutable_esp()->set_replay_window(64);
  explicit_defaults.mutable_spec()->mutable_dpd()->set_action(strait::v1::DPD_ACTION_RESTART);
  explicit_defaults.mutable_spec()->mutable_dpd()->mutable_interval()->set_seconds(30);
  EXPECT_FALSE(core_->Apply(ApplyRequest(explicit_defaults))->changed());

  // As is what Get returns (fingerprint, no key, output-only fields).
  auto got = core_->Get("t1");
  ASSERT_TRUE(got.ok());
  auto round_trip = core_->Apply(ApplyRequest(*got));
  ASSERT_TRUE(round_trip.ok()) << round_trip.status();
  EXPECT_FALSE(round_trip->changed());

  EXPECT_EQ(listener.count(), 1);
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_store_revision"), 1);
}

TEST_F(CoreTest, PskIsRequiredUnlessTheFingerprintMatches) {
  MustApply(MakeTunnel("t1", "node-a", "10.1.0.0/24", "10.100.0.0/16"));
  auto got = core_->Get("t1");
  ASSERT_TRUE(got.ok());

  // A read-back tunnel with a changed spec keeps its key.
  strait::v1::Tunnel edited = *got;
  edited.mutable_spec()->mutable_remote()->set_traffic_selectors(0, "10.101.0.0/16");
  auto response = core_->Apply(ApplyRequest(edited));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_TRUE(response->changed());
  EXPECT_EQ(response->tunnel().spec().auth().psk().fingerprint(),
            got->spec().auth().psk().fingerprint());
  int64_t session;
  FakeListener listener;
  auto snapshot = core_->Connect("node-a", "", "peer", &listener, &session);
  ASSERT_NE(snapshot, nullptr);
  EXPECT_EQ(snapshot->tunnels(0).spec().auth().psk().value(), kPskA);

  // A fingerprint that is not the stored key's.
  strait::v1::Tunnel wrong = edited;
  wrong.mutable_spec()->mutable_auth()->mutable_psk()->set_fingerprint("sha256:00000000");
  auto rejected = core_->Apply(ApplyRequest(wrong));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rejected.status().message(), HasSubstr("spec.auth.psk"));

  // A fingerprint cannot carry a key over to another tunnel.
  strait::v1::Tunnel copy = edited;
  copy.mutable_metadata()->set_name("t2");
  copy.mutable_spec()->set_node("node-b");
  EXPECT_EQ(core_->Apply(ApplyRequest(copy)).status().code(), absl::StatusCode::kInvalidArgument);

  // No key at all.
  strait::v1::Tunnel none = edited;
  none.mutable_spec()->clear_auth();
  EXPECT_EQ(core_->Apply(ApplyRequest(none)).status().code(), absl::StatusCode::kInvalidArgument);

  // A new key replaces the old one.
  strait::v1::Tunnel rekeyed = edited;
  rekeyed.mutable_spec()->mutable_auth()->mutable_psk()->set_value(kPskB);
  auto changed = core_->Apply(ApplyRequest(rekeyed));
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_TRUE(changed->changed());
  EXPECT_NE(changed->tunnel().spec().auth().psk().fingerprint(),
            got->spec().auth().psk().fingerprint());
  EXPECT_EQ(listener.last()->tunnels(0).spec().auth().psk().value(), kPskB);
}

TEST_F(CoreTest, GenerationAndRevisionRules) {
  const absl::Time created = clock_.Now();
  strait::v1::Tunnel tunnel = MakeTunnel("t1", "node-a", "10.1.0.0/24", "10.100.0.0/16");
  MustApply(tunnel);
  MustApply(MakeTunnel("other", "node-b", "10.1.0.0/24", "10.100.0.0/16"));

  int64_t session;
  FakeListener listener;
  core_->Connect("node-a", "", "peer", &listener, &session);
  const std::string version_after_create = CurrentVersion("node-a");
  EXPECT_EQ(version_after_create, absl::StrCat("1.", StoreId()));

  // A spec change: new generation and revision.
  clock_.Advance(absl::Minutes(5));
  tunnel.mutable_spec()->mutable_remote()->add_traffic_selectors("10.101.0.0/16");
  strait::v1::ApplyTunnelResponse response = MustApply(tunnel);
  EXPECT_TRUE(response.changed());
  EXPECT_EQ(response.revision(), 3);
  EXPECT_EQ(response.tunnel().metadata().generation(), 2);
  EXPECT_EQ(response.tunnel().metadata().revision(), 3);
  EXPECT_EQ(response.tunnel().metadata().create_time().seconds(), absl::ToUnixSeconds(created));
  EXPECT_EQ(response.tunnel().metadata().update_time().seconds(),
            absl::ToUnixSeconds(clock_.Now()));
  EXPECT_EQ(listener.count(), 1);
  EXPECT_EQ(listener.last()->version(), absl::StrCat("3.", StoreId()));
  EXPECT_EQ(listener.last()->tunnels(0).generation(), 2);

  // A labels-only change: new revision, same generation, no push.
  clock_.Advance(absl::Minutes(5));
  (*tunnel.mutable_metadata()->mutable_labels())["team"] = "net";
  response = MustApply(tunnel);
  EXPECT_TRUE(response.changed());
  EXPECT_EQ(response.revision(), 4);
  EXPECT_EQ(response.tunnel().metadata().generation(), 2);
  EXPECT_EQ(response.tunnel().metadata().revision(), 4);
  EXPECT_EQ(response.tunnel().metadata().labels().at("team"), "net");
  EXPECT_EQ(listener.count(), 1);
  EXPECT_EQ(CurrentVersion("node-a"), absl::StrCat("3.", StoreId()));
  // Output-only metadata in the request is ignored.
  strait::v1::Tunnel bogus = tunnel;
  bogus.mutable_metadata()->set_generation(99);
  bogus.mutable_metadata()->set_revision(99);
  EXPECT_FALSE(MustApply(bogus).changed());
  EXPECT_EQ(core_->Get("t1")->metadata().generation(), 2);
}

TEST_F(CoreTest, DeleteRemovesAndPushes) {
  MustApply(MakeTunnel("t1", "node-a", "10.1.0.0/24", "10.100.0.0/16"));
  MustApply(MakeTunnel("t2", "node-a", "10.2.0.0/24", "10.100.0.0/16"));
  int64_t session;
  FakeListener listener;
  core_->Connect("node-a", absl::StrCat("2.", StoreId()), "peer", &listener, &session);
  std::vector<WatchTunnelsEvent> events;
  core_->AddWatcher([&](const WatchTunnelsEvent& e) { events.push_back(e); }, nullptr);

  EXPECT_EQ(core_->Delete("nope").status().code(), absl::StatusCode::kNotFound);
  auto deleted = core_->Delete("t1");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->revision(), 3);
  EXPECT_EQ(core_->Get("t1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(core_->Delete("t1").status().code(), absl::StatusCode::kNotFound);

  ASSERT_EQ(listener.count(), 1);
  EXPECT_EQ(listener.last()->version(), absl::StrCat("3.", StoreId()));
  ASSERT_EQ(listener.last()->tunnels_size(), 1);
  EXPECT_EQ(listener.last()->tunnels(0).name(), "t2");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type(), WatchTunnelsEvent::TYPE_DELETED);
  EXPECT_EQ(events[0].revision(), 3);
  EXPECT_EQ(events[0].tunnel().metadata().name(), "t1");
  EXPECT_FALSE(absl::StrContains(events[0].SerializeAsString(), kPskA));

  // The last tunnel of a node: the node gets an empty snapshot, and stays
  // listed.
  ASSERT_TRUE(core_->Delete("t2").ok());
  EXPECT_EQ(listener.count(), 2);
  EXPECT_EQ(listener.last()->tunnels_size(), 0);
  EXPECT_EQ(listener.last()->version(), absl::StrCat("4.", StoreId()));
  auto nodes = core_->ListNodes();
  ASSERT_EQ(nodes.nodes_size(), 1);
  EXPECT_EQ(nodes.nodes(0).tunnel_count(), 0);

  // Really gone from the store.
  Open();
  EXPECT_EQ(core_->List(strait::v1::ListTunnelsRequest()).tunnels_size(), 0);
  EXPECT_EQ(core_->List(strait::v1::ListTunnelsRequest()).revision(), 4);
  EXPECT_EQ(CurrentVersion("node-a"), absl::StrCat("4.", StoreId()));
}

TEST_F(CoreTest, OnlyAffectedNodesArePushed) {
  std::map<std::string, FakeListener> listeners;
  for (const char* node : {"node-a", "node-b", "node-c"}) {
    int64_t session;
    EXPECT_NE(core_->Connect(node, "", "peer", &listeners[node], &session), nullptr);
  }
  MustApply(MakeTunnel("a1", "node-a", "10.1.0.0/24", "10.100.0.0/16"));
  EXPECT_EQ(listeners["node-a"].count(), 1);
  EXPECT_EQ(listeners["node-b"].count(), 0);
  EXPECT_EQ(listeners["node-c"].count(), 0);

  MustApply(MakeTunnel("b1", "node-b", "10.1.0.0/24", "10.100.0.0/16"));
  EXPECT_EQ(listeners["node-a"].count(), 1);
  EXPECT_EQ(listeners["node-b"].count(), 1);

  // Moving a tunnel pushes the node it left and the node it joined.
  MustApply(MakeTunnel("a1", "node-c", "10.1.0.0/24", "10.100.0.0/16"));
  EXPECT_EQ(listeners["node-a"].count(), 2);
  EXPECT_EQ(listeners["node-a"].last()->tunnels_size(), 0);
  EXPECT_EQ(listeners["node-b"].count(), 1);
  EXPECT_EQ(listeners["node-c"].count(), 1);
  EXPECT_EQ(listeners["node-c"].last()->tunnels(0).name(), "a1");

  auto filtered = core_->List([] {
    strait::v1::ListTunnelsRequest r;
    r.set_node("node-c");
    return r;
  }());
  ASSERT_EQ(filtered.tunnels_size(), 1);
  EXPECT_EQ(filtered.tunnels(0).metadata().name(), "a1");
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_snapshot_pushes_total"), 3 + 4);
}

TEST_F(CoreTest, NodeToNodeTunnelPushesBothNodesMirrored) {
  std::map<std::string, FakeListener> listeners;
  for (const char* node : {"node-a", "node-b", "node-c"}) {
    int64_t session;
    core_->Connect(node, "", "peer", &listeners[node], &session);
  }
  MustApply(NodeToNode("a-to-b", "node-a", "node-b"));
  ASSERT_EQ(listeners["node-a"].count(), 1);
  ASSERT_EQ(listeners["node-b"].count(), 1);
  EXPECT_EQ(listeners["node-c"].count(), 0);

  const strait::v1::TunnelSpec& a = listeners["node-a"].last()->tunnels(0).spec();
  const strait::v1::TunnelSpec& b = listeners["node-b"].last()->tunnels(0).spec();
  EXPECT_EQ(a.node(), "node-a");
  EXPECT_EQ(a.local().address(), "192.0.2.1");
  EXPECT_THAT(a.local().traffic_selectors(), ElementsAre("10.1.0.0/24"));
  EXPECT_EQ(a.remote().node(), "node-b");
  EXPECT_EQ(b.node(), "node-b");
  EXPECT_EQ(b.local().address(), "192.0.2.2");
  EXPECT_TRUE(b.local().node().empty());
  EXPECT_THAT(b.local().traffic_selectors(), ElementsAre("10.2.0.0/24"));
  EXPECT_EQ(b.remote().node(), "node-a");
  EXPECT_EQ(b.remote().address(), "192.0.2.1");
  EXPECT_THAT(b.remote().traffic_selectors(), ElementsAre("10.1.0.0/24"));
  EXPECT_EQ(b.auth().psk().value(), kPskB);

  auto got = core_->Get("a-to-b");
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->status().ends_size(), 2);
  EXPECT_EQ(got->status().ends(0).node(), "node-a");
  EXPECT_EQ(got->status().ends(1).node(), "node-b");

  // A labels-only change pushes nobody; a spec change pushes both.
  strait::v1::Tunnel tunnel = NodeToNode("a-to-b", "node-a", "node-b");
  (*tunnel.mutable_metadata()->mutable_labels())["x"] = "y";
  MustApply(tunnel);
  EXPECT_EQ(listeners["node-a"].count(), 1);
  EXPECT_EQ(listeners["node-b"].count(), 1);
  tunnel.mutable_spec()->mutable_remote()->add_traffic_selectors("10.22.0.0/24");
  MustApply(tunnel);
  EXPECT_EQ(listeners["node-a"].count(), 2);
  EXPECT_EQ(listeners["node-b"].count(), 2);
  EXPECT_EQ(listeners["node-c"].count(), 0);

  // The remote node's selectors count in overlap checks on that node.
  auto clash =
      core_->Apply(ApplyRequest(MakeTunnel("b-to-gw", "node-b", "10.22.0.0/24", "10.1.0.0/16")));
  EXPECT_EQ(clash.status().code(), absl::StatusCode::kInvalidArgument) << clash.status();
}

TEST_F(CoreTest, ConnectResumesWithoutPush) {
  MustApply(MakeTunnel("t1", "node-a", "10.1.0.0/24", "10.100.0.0/16"));
  const std::string current = CurrentVersion("node-a");

  int64_t s1;
  FakeListener l1;
  EXPECT_EQ(core_->Connect("node-a", current, "peer-1", &l1, &s1), nullptr);
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_snapshot_pushes_total"), 0);

  int64_t s2;
  FakeListener l2;
  auto snapshot = core_->Connect("node-a", "0.stale", "peer-2", &l2, &s2);
  ASSERT_NE(snapshot, nullptr);
  EXPECT_EQ(snapshot->version(), current);
  EXPECT_EQ(snapshot->tunnels_size(), 1);
  EXPECT_NE(s1, s2);

  // A node without tunnels gets an empty snapshot with a version.
  int64_t s3;
  FakeListener l3;
  auto empty = core_->Connect("node-z", "", "peer-3", &l3, &s3);
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->version(), absl::StrCat("0.", StoreId()));
  EXPECT_EQ(empty->tunnels_size(), 0);
  int64_t s4;
  EXPECT_EQ(core_->Connect("node-z", empty->version(), "peer-3", &l3, &s4), nullptr);
  core_->Disconnect(s4);

  // Both sessions of node-a get pushes.
  MustApply(MakeTunnel("t2", "node-a", "10.2.0.0/24", "10.100.0.0/16"));
  EXPECT_EQ(l1.count(), 1);
  EXPECT_EQ(l2.count(), 1);

  auto nodes = core_->ListNodes();
  ASSERT_EQ(nodes.nodes_size(), 2);
  EXPECT_EQ(nodes.nodes(0).name(), "node-a");
  EXPECT_TRUE(nodes.nodes(0).connected());
  EXPECT_EQ(nodes.nodes(0).peer(), "peer-2");
  EXPECT_EQ(nodes.nodes(0).acked_version(), "0.stale");
  EXPECT_EQ(nodes.nodes(0).tunnel_count(), 2);
  EXPECT_EQ(nodes.nodes(0).last_seen().seconds(), absl::ToUnixSeconds(clock_.Now()));
  EXPECT_EQ(nodes.nodes(1).name(), "node-z");
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_agents_connected"), 2);

  // No push reaches a disconnected session.
  core_->Disconnect(s1);
  MustApply(MakeTunnel("t3", "node-a", "10.3.0.0/24", "10.100.0.0/16"));
  EXPECT_EQ(l1.count(), 1);
  EXPECT_EQ(l2.count(), 2);
  core_->Disconnect(s2);
  core_->Disconnect(s3);
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_agents_connected"), 0);
  nodes = core_->ListNodes();
  ASSERT_EQ(nodes.nodes_size(), 1);  // node-z has neither a share nor a session
  EXPECT_FALSE(nodes.nodes(0).connected());
}

TEST_F(CoreTest, ReopenKeepsTunnelsAndVersions) {
  MustApply(MakeTunnel("t1", "node-a", "10.1.0.0/24", "10.100.0.0/16"));
  MustApply(NodeToNode("a-to-b", "node-a", "node-b"));
  MustApply(MakeTunnel("t2", "node-c", "10.1.0.0/24", "10.100.0.0/16"));
  ASSERT_TRUE(core_->Delete("t2").ok());
  const auto nodes_before = core_->ListNodes();
  const auto tunnels_before = core_->List(strait::v1::ListTunnelsRequest());
  const std::string version_a = CurrentVersion("node-a");

  Open();
  const auto nodes_after = core_->ListNodes();
  const auto tunnels_after = core_->List(strait::v1::ListTunnelsRequest());
  EXPECT_EQ(tunnels_after.SerializeAsString(), tunnels_before.SerializeAsString());
  ASSERT_EQ(nodes_after.nodes_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(nodes_after.nodes(i).name(), nodes_before.nodes(i).name());
    EXPECT_EQ(nodes_after.nodes(i).current_version(), nodes_before.nodes(i).current_version());
  }
  int64_t session;
  FakeListener listener;
  EXPECT_EQ(core_->Connect("node-a", version_a, "peer", &listener, &session), nullptr);
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_snapshot_pushes_total"), 0);
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_store_revision"), 4);
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_tunnels"), 2);
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_node_current_revision", "node-c"), 4);
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_node_acked_revision", "node-a"), 2);

  // The fingerprint key survives too.
  EXPECT_EQ(core_->Get("t1")->spec().auth().psk().fingerprint(),
            tunnels_before.tunnels(1).spec().auth().psk().fingerprint());
}

TEST_F(CoreTest, OverlappingSelectorsAreRejected) {
  MustApply(MakeTunnel("t1", "node-a", "10.1.0.0/24", "10.100.0.0/16"));
  auto clash =
      core_->Apply(ApplyRequest(MakeTunnel("t2", "node-a", "10.1.0.128/25", "10.100.5.0/24")));
  ASSERT_EQ(clash.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(clash.status().message(), HasSubstr("t1"));
  EXPECT_FALSE(absl::StrContains(clash.status().message(), kPskA));
  // The same selectors on another node are fine, and so is replacing t1.
  MustApply(MakeTunnel("t2", "node-b", "10.1.0.128/25", "10.100.5.0/24"));
  MustApply(MakeTunnel("t1", "node-a", "10.1.0.128/25", "10.100.5.0/24"));
  EXPECT_EQ(core_->List(strait::v1::ListTunnelsRequest()).revision(), 3);
}

TEST_F(CoreTest, WatchSeesChangesInOrder) {
  MustApply(MakeTunnel("b", "node-a", "10.2.0.0/24", "10.100.0.0/16"));
  MustApply(MakeTunnel("a", "node-a", "10.1.0.0/24", "10.100.0.0/16"));
  std::vector<WatchTunnelsEvent> initial;
  std::vector<WatchTunnelsEvent> events;
  int64_t id =
      core_->AddWatcher([&](const WatchTunnelsEvent& e) { events.push_back(e); }, &initial);
  ASSERT_EQ(initial.size(), 2u);
  EXPECT_EQ(initial[0].tunnel().metadata().name(), "a");
  EXPECT_EQ(initial[1].tunnel().metadata().name(), "b");
  EXPECT_EQ(initial[0].type(), WatchTunnelsEvent::TYPE_ADDED);
  EXPECT_EQ(initial[0].revision(), 2);

  MustApply(MakeTunnel("c", "node-a", "10.3.0.0/24", "10.100.0.0/16"));
  MustApply(MakeTunnel("a", "node-a", "10.4.0.0/24", "10.100.0.0/16"));
  ASSERT_TRUE(core_->Delete("b").ok());
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].type(), WatchTunnelsEvent::TYPE_ADDED);
  EXPECT_EQ(events[0].revision(), 3);
  EXPECT_EQ(events[1].type(), WatchTunnelsEvent::TYPE_MODIFIED);
  EXPECT_EQ(events[1].revision(), 4);
  EXPECT_EQ(events[1].tunnel().metadata().generation(), 2);
  EXPECT_EQ(events[2].type(), WatchTunnelsEvent::TYPE_DELETED);
  EXPECT_EQ(events[2].revision(), 5);
  core_->RemoveWatcher(id);
  MustApply(MakeTunnel("d", "node-a", "10.5.0.0/24", "10.100.0.0/16"));
  EXPECT_EQ(events.size(), 3u);
}

// Watchers that join while a writer runs see every change exactly once:
// in their initial list or as an event, never both, never neither.
TEST_F(CoreTest, WatchRegistrationIsAtomicWithWrites) {
  constexpr int kTunnels = 40;
  std::thread writer([&] {
    for (int i = 0; i < kTunnels; ++i) {
      MustApply(MakeTunnel(absl::StrCat("t", i), absl::StrCat("node-", i % 4),
                           absl::StrCat("10.", i, ".0.0/24"), "10.200.0.0/16"));
    }
  });
  struct Watch {
    absl::Mutex mu;
    std::vector<WatchTunnelsEvent> events;
    std::vector<WatchTunnelsEvent> initial;
  };
  std::vector<std::unique_ptr<Watch>> watches;
  for (int i = 0; i < 20; ++i) {
    auto watch = std::make_unique<Watch>();
    Watch* w = watch.get();
    core_->AddWatcher(
        [w](const WatchTunnelsEvent& e) {
          absl::MutexLock lock(&w->mu);
          w->events.push_back(e);
        },
        &w->initial);
    watches.push_back(std::move(watch));
    absl::SleepFor(absl::Microseconds(500));
  }
  writer.join();
  for (const auto& w : watches) {
    absl::MutexLock lock(&w->mu);
    std::set<std::string> seen;
    int64_t last_revision = w->initial.empty() ? 0 : w->initial[0].revision();
    for (const auto& e : w->initial) {
      seen.insert(e.tunnel().metadata().name());
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), last_revision);
    for (const auto& e : w->events) {
      EXPECT_EQ(e.revision(), last_revision + 1);
      last_revision = e.revision();
      EXPECT_TRUE(seen.insert(e.tunnel().metadata().name()).second);
    }
    EXPECT_EQ(seen.size(), static_cast<size_t>(kTunnels));
  }
}

TEST_F(CoreTest, AcksNacksAndStatus) {
  MustApply(NodeToNode("a-to-b", "node-a", "node-b"));
  MustApply(MakeTunnel("b-only", "node-b", "10.9.0.0/24", "10.100.0.0/16"));
  int64_t session;
  FakeListener listener;
  auto snapshot = core_->Connect("node-a", "", "peer", &listener, &session);
  ASSERT_NE(snapshot, nullptr);

  strait::v1::Nack nack;
  nack.set_version(snapshot->version());
  nack.set_error("cannot install policy: EINVAL");
  core_->OnNack(session, nack);
  auto nodes = core_->ListNodes();
  ASSERT_EQ(nodes.nodes(0).name(), "node-a");
  EXPECT_EQ(nodes.nodes(0).last_error(), "cannot install policy: EINVAL");
  EXPECT_EQ(nodes.nodes(0).acked_version(), "");
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_nacks_total", "node-a"), 1);

  strait::v1::Ack ack;
  ack.set_version(snapshot->version());
  core_->OnAck(session, ack);
  nodes = core_->ListNodes();
  EXPECT_EQ(nodes.nodes(0).last_error(), "");
  EXPECT_EQ(nodes.nodes(0).acked_version(), snapshot->version());
  EXPECT_EQ(nodes.nodes(0).acked_version(), nodes.nodes(0).current_version());
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_node_acked_revision", "node-a"), 1);

  clock_.Advance(absl::Seconds(10));
  strait::v1::StatusReport report;
  auto* end = report.add_tunnels();
  end->set_name("a-to-b");
  end->mutable_status()->set_phase(strait::v1::TUNNEL_PHASE_ESTABLISHED);
  end->mutable_status()->set_node("node-z");  // the session's node wins
  end->mutable_status()->set_observed_generation(1);
  auto* foreign = report.add_tunnels();  // node-a has no end of it
  foreign->set_name("b-only");
  foreign->mutable_status()->set_phase(strait::v1::TUNNEL_PHASE_ESTABLISHED);
  auto* unknown = report.add_tunnels();
  unknown->set_name("gone");
  core_->OnStatus(session, report);

  auto got = core_->Get("a-to-b");
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->status().ends_size(), 2);
  EXPECT_EQ(got->status().ends(0).node(), "node-a");
  EXPECT_EQ(got->status().ends(0).phase(), strait::v1::TUNNEL_PHASE_ESTABLISHED);
  EXPECT_EQ(got->status().ends(0).report_time().seconds(), absl::ToUnixSeconds(clock_.Now()));
  EXPECT_EQ(got->status().ends(1).node(), "node-b");
  EXPECT_EQ(got->status().ends(1).phase(), strait::v1::TUNNEL_PHASE_UNSPECIFIED);
  EXPECT_EQ(core_->Get("b-only")->status().ends(0).phase(), strait::v1::TUNNEL_PHASE_UNSPECIFIED);

  // Status survives a spec change of the tunnel, but not its deletion.
  strait::v1::Tunnel changed = NodeToNode("a-to-b", "node-a", "node-b");
  changed.mutable_spec()->mutable_local()->add_traffic_selectors("10.11.0.0/24");
  MustApply(changed);
  EXPECT_EQ(core_->Get("a-to-b")->status().ends(0).phase(), strait::v1::TUNNEL_PHASE_ESTABLISHED);
  ASSERT_TRUE(core_->Delete("a-to-b").ok());
  MustApply(NodeToNode("a-to-b", "node-a", "node-b"));
  EXPECT_EQ(core_->Get("a-to-b")->status().ends(0).phase(), strait::v1::TUNNEL_PHASE_UNSPECIFIED);

  // Unknown sessions are ignored.
  core_->OnAck(12345, ack);
  core_->OnNack(12345, nack);
  core_->OnStatus(12345, report);
  core_->Disconnect(12345);
}

TEST_F(CoreTest, FailedCommitChangesNothing) {
  bool fail = false;
  core_.reset();
  auto real = OpenSqliteStore(dir_);
  ASSERT_TRUE(real.ok());
  CoreOptions options;
  options.clock = &clock_;
  registry_ = std::make_unique<prometheus::Registry>();
  options.registry = registry_.get();
  auto core = CreateCore(std::make_unique<FailingStore>(*std::move(real), &fail), options);
  ASSERT_TRUE(core.ok());
  core_ = *std::move(core);

  MustApply(MakeTunnel("t1", "node-a", "10.1.0.0/24", "10.100.0.0/16"));
  int64_t session;
  FakeListener listener;
  core_->Connect("node-a", CurrentVersion("node-a"), "peer", &listener, &session);
  std::vector<WatchTunnelsEvent> events;
  core_->AddWatcher([&](const WatchTunnelsEvent& e) { events.push_back(e); }, nullptr);

  fail = true;
  auto response =
      core_->Apply(ApplyRequest(MakeTunnel("t2", "node-a", "10.2.0.0/24", "10.0.0.0/8")));
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnavailable) << response.status();
  EXPECT_EQ(core_->Delete("t1").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(core_->Get("t2").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(core_->Get("t1").ok());
  EXPECT_EQ(listener.count(), 0);
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(MetricValue(*registry_, "strait_controller_store_commit_errors_total"), 2);

  fail = false;
  auto ok = core_->Apply(ApplyRequest(MakeTunnel("t2", "node-a", "10.2.0.0/24", "10.0.0.0/8")));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->revision(), 2);
  EXPECT_EQ(listener.count(), 1);
}

// 10,000 tunnels on 1,000 nodes: loading, a change and the reads stay fast,
// and a change recomputes only its node.
TEST_F(CoreTest, ScalesToTenThousandTunnels) {
  core_.reset();
  {
    auto store = OpenSqliteStore(dir_);
    ASSERT_TRUE(store.ok());
    Store::Change change;
    change.revision = 1;
    for (int i = 0; i < 10000; ++i) {
      strait::v1::Tunnel t =
          MakeTunnel(absl::StrCat("t", i), absl::StrCat("node-", i % 1000),
                     absl::StrCat("10.", i / 256, ".", i % 256, ".0/24"), "172.16.0.0/16");
      t.mutable_metadata()->set_generation(1);
      t.mutable_metadata()->set_revision(1);
      change.puts.push_back(std::move(t));
    }
    for (int n = 0; n < 1000; ++n) {
      change.node_share_revisions[absl::StrCat("node-", n)] = 1;
    }
    ASSERT_TRUE((*store)->Commit(change).ok());
  }
  absl::Time start = absl::Now();
  Open();
  const absl::Duration load = absl::Now() - start;

  std::map<std::string, FakeListener> listeners;
  for (int n = 0; n < 1000; ++n) {
    const std::string node = absl::StrCat("node-", n);
    int64_t session;
    EXPECT_EQ(
        core_->Connect(node, absl::StrCat("1.", StoreId()), "peer", &listeners[node], &session),
        nullptr);
  }
  start = absl::Now();
  MustApply(MakeTunnel("t5", "node-5", "10.0.5.0/24", "172.17.0.0/16"));
  const absl::Duration apply = absl::Now() - start;
  int pushed = 0;
  for (auto& [node, listener] : listeners) {
    pushed += listener.count();
  }
  EXPECT_EQ(pushed, 1);
  EXPECT_EQ(listeners["node-5"].count(), 1);
  EXPECT_EQ(listeners["node-5"].last()->tunnels_size(), 10);

  start = absl::Now();
  auto list = core_->List(strait::v1::ListTunnelsRequest());
  const absl::Duration list_time = absl::Now() - start;
  EXPECT_EQ(list.tunnels_size(), 10000);
  start = absl::Now();
  EXPECT_EQ(core_->ListNodes().nodes_size(), 1000);
  const absl::Duration nodes_time = absl::Now() - start;
  std::cerr << "load " << load << " apply " << apply << " list " << list_time << " nodes "
            << nodes_time << "\n";
  // Generous bounds: this is about complexity, not a benchmark.
  EXPECT_LT(load, absl::Seconds(10));
  EXPECT_LT(apply, absl::Seconds(1));
}

}  // namespace
}  // namespace strait::controller
