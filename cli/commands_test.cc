#include "cli/commands.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/strait/v1/admin.grpc.pb.h"

namespace strait::cli {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

using strait::v1::Tunnel;

constexpr char kPsk[] = "commands test key 0123456789";

std::string TunnelYaml(const std::string& name, const std::string& proposal = "aes256-sha256") {
  return absl::StrCat(R"(kind: Tunnel
metadata: {name: )",
                      name, R"(}
spec:
  node: node-a
  local: {address: 192.0.2.1, trafficSelectors: [10.1.0.0/24]}
  remote: {address: 192.0.2.2, trafficSelectors: [10.2.0.0/24]}
  auth: {psk: ")",
                      kPsk, R"("}
  ike: {proposals: [)",
                      proposal, R"(]}
  esp: {proposals: [aes256gcm16-ecp384]}
)");
}

// An AdminService with a small in-memory store; `Reject` makes ApplyTunnel
// fail for one name. Runs on gRPC's threads, hence the lock.
class FakeAdminService : public strait::v1::AdminService::Service {
 public:
  void Reject(const std::string& name, grpc::Status status) {
    absl::MutexLock lock(&mu_);
    rejections_[name] = std::move(status);
  }
  void AddNode(strait::v1::Node node) {
    absl::MutexLock lock(&mu_);
    *nodes_.add_nodes() = std::move(node);
  }
  void Put(Tunnel tunnel) {
    absl::MutexLock lock(&mu_);
    tunnels_[tunnel.metadata().name()] = std::move(tunnel);
  }
  // ListNodes waits this long (or until the client gives up).
  void SetListNodesDelay(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    list_nodes_delay_ = d;
  }
  std::vector<strait::v1::ApplyTunnelRequest> applies() {
    absl::MutexLock lock(&mu_);
    return applies_;
  }

  // AdminService
  grpc::Status ApplyTunnel(grpc::ServerContext*, const strait::v1::ApplyTunnelRequest* request,
                           strait::v1::ApplyTunnelResponse* response) override {
    absl::MutexLock lock(&mu_);
    applies_.push_back(*request);
    const std::string& name = request->tunnel().metadata().name();
    if (auto it = rejections_.find(name); it != rejections_.end()) return it->second;
    Tunnel stored = request->tunnel();
    stored.mutable_spec()->mutable_auth()->mutable_psk()->clear_value();
    stored.mutable_spec()->mutable_auth()->mutable_psk()->set_fingerprint("sha256:feedface");
    auto it = tunnels_.find(name);
    const bool changed = it == tunnels_.end() ||
                         it->second.spec().SerializeAsString() != stored.spec().SerializeAsString();
    int64_t generation = it == tunnels_.end() ? 0 : it->second.metadata().generation();
    if (changed) ++generation;
    stored.mutable_metadata()->set_generation(generation);
    if (changed && !request->dry_run()) {
      stored.mutable_metadata()->set_revision(++revision_);
      tunnels_[name] = stored;
    }
    *response->mutable_tunnel() = stored;
    response->set_changed(changed);
    response->set_revision(revision_);
    return grpc::Status::OK;
  }
  grpc::Status GetTunnel(grpc::ServerContext*, const strait::v1::GetTunnelRequest* request,
                         Tunnel* response) override {
    absl::MutexLock lock(&mu_);
    auto it = tunnels_.find(request->name());
    if (it == tunnels_.end()) return NotFound(request->name());
    *response = it->second;
    return grpc::Status::OK;
  }
  grpc::Status ListTunnels(grpc::ServerContext*, const strait::v1::ListTunnelsRequest*,
                           strait::v1::ListTunnelsResponse* response) override {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, tunnel] : tunnels_) *response->add_tunnels() = tunnel;
    response->set_revision(revision_);
    return grpc::Status::OK;
  }
  grpc::Status DeleteTunnel(grpc::ServerContext*, const strait::v1::DeleteTunnelRequest* request,
                            strait::v1::DeleteTunnelResponse* response) override {
    absl::MutexLock lock(&mu_);
    if (tunnels_.erase(request->name()) == 0) return NotFound(request->name());
    response->set_revision(++revision_);
    return grpc::Status::OK;
  }
  grpc::Status ListNodes(grpc::ServerContext* context, const strait::v1::ListNodesRequest*,
                         strait::v1::ListNodesResponse* response) override {
    absl::Duration delay;
    {
      absl::MutexLock lock(&mu_);
      delay = list_nodes_delay_;
      *response = nodes_;
    }
    const absl::Time until = absl::Now() + delay;
    while (absl::Now() < until && !context->IsCancelled()) absl::SleepFor(absl::Milliseconds(5));
    return grpc::Status::OK;
  }

 private:
  static grpc::Status NotFound(const std::string& name) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("tunnel \"", name, "\" not found"));
  }

  absl::Mutex mu_;
  absl::flat_hash_map<std::string, grpc::Status> rejections_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Tunnel> tunnels_ ABSL_GUARDED_BY(mu_);
  strait::v1::ListNodesResponse nodes_ ABSL_GUARDED_BY(mu_);
  std::vector<strait::v1::ApplyTunnelRequest> applies_ ABSL_GUARDED_BY(mu_);
  int64_t revision_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration list_nodes_delay_ ABSL_GUARDED_BY(mu_);
};

class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port, 0);
    address_ = absl::StrCat("127.0.0.1:", port);
    stub_ = strait::v1::AdminService::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override { server_->Shutdown(); }

  // Runs one command against the fake with `options` (the address filled
  // in), capturing stdout and stderr.
  int Run(const std::vector<std::string>& words, CommandOptions options = {},
          const std::string& stdin_text = "") {
    absl::StatusOr<Command> command = ParseCommand(words);
    EXPECT_TRUE(command.ok()) << command.status();
    if (!command.ok()) return -1;
    options.controller = address_;
    out_.str("");
    err_.str("");
    Commands commands(*stub_, options, out_, err_, clock_);
    std::istringstream in(stdin_text);
    return commands.Run(*command, in);
  }

  Tunnel StoredTunnel(const std::string& name) {
    Tunnel t;
    t.set_kind("Tunnel");
    t.mutable_metadata()->set_name(name);
    t.mutable_metadata()->set_generation(2);
    *t.mutable_metadata()->mutable_create_time() =
        google::protobuf::util::TimeUtil::SecondsToTimestamp(absl::ToUnixSeconds(clock_.Now()) -
                                                             90);
    t.mutable_spec()->set_node("node-a");
    t.mutable_spec()->mutable_local()->set_address("192.0.2.1");
    t.mutable_spec()->mutable_local()->add_traffic_selectors("10.1.0.0/24");
    t.mutable_spec()->mutable_remote()->set_node("node-b");
    t.mutable_spec()->mutable_remote()->set_address("192.0.2.2");
    t.mutable_spec()->mutable_remote()->add_traffic_selectors("10.2.0.0/24");
    t.mutable_spec()->mutable_auth()->mutable_psk()->set_fingerprint("sha256:feedface");
    auto* end = t.mutable_status()->add_ends();
    end->set_node("node-b");
    end->set_phase(strait::v1::TUNNEL_PHASE_ESTABLISHED);
    end->set_observed_generation(2);
    end = t.mutable_status()->add_ends();
    end->set_node("node-a");
    end->set_phase(strait::v1::TUNNEL_PHASE_PENDING);
    end->set_reason("AWAITING_IKE");
    end->set_observed_generation(1);
    return t;
  }

  FakeAdminService service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<strait::v1::AdminService::Stub> stub_;
  FakeClock clock_;
  std::ostringstream out_;
  std::ostringstream err_;
};

CommandOptions FromStdin() {
  CommandOptions options;
  options.filename = "-";
  return options;
}

TEST_F(CommandsTest, ApplyReportsCreatedConfiguredUnchanged) {
  EXPECT_EQ(Run({"apply"}, FromStdin(), TunnelYaml("one") + "---\n" + TunnelYaml("two")), kExitOk);
  EXPECT_EQ(out_.str(), "tunnel/one created (revision 1)\ntunnel/two created (revision 2)\n");
  EXPECT_THAT(err_.str(), IsEmpty());

  EXPECT_EQ(Run({"apply"}, FromStdin(),
                TunnelYaml("one", "aes256gcm16-prfsha384-ecp384") + "---\n" + TunnelYaml("two")),
            kExitOk);
  EXPECT_EQ(out_.str(), "tunnel/one configured (revision 3)\ntunnel/two unchanged (revision 3)\n");

  // The PSK reaches the server; nothing prints it.
  std::vector<strait::v1::ApplyTunnelRequest> applies = service_.applies();
  ASSERT_EQ(applies.size(), 4u);
  EXPECT_EQ(applies[0].tunnel().spec().auth().psk().value(), kPsk);
  EXPECT_FALSE(applies[0].dry_run());
}

TEST_F(CommandsTest, ApplyServerErrorNamesTheFieldAndGoesOn) {
  service_.Reject("bad",
                  grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               "spec.ike.proposals[0]: 3des is a weak encryption algorithm"));
  int code = Run({"apply"}, FromStdin(),
                 TunnelYaml("bad", "3des-sha256-modp2048") + "---\n" + TunnelYaml("good"));
  EXPECT_EQ(code, kExitFailure);
  EXPECT_EQ(err_.str(),
            "error: tunnel/bad: INVALID_ARGUMENT: spec.ike.proposals[0]: 3des is a weak "
            "encryption algorithm\n");
  EXPECT_EQ(out_.str(), "tunnel/good created (revision 1)\n");
  EXPECT_EQ(service_.applies().size(), 2u);
}

TEST_F(CommandsTest, DryRunSetsTheFlagAndStoresNothing) {
  CommandOptions options = FromStdin();
  options.dry_run = true;
  EXPECT_EQ(Run({"apply"}, options, TunnelYaml("one")), kExitOk);
  EXPECT_EQ(out_.str(), "tunnel/one valid (dry run)\n");
  std::vector<strait::v1::ApplyTunnelRequest> applies = service_.applies();
  ASSERT_EQ(applies.size(), 1u);
  EXPECT_TRUE(applies[0].dry_run());

  EXPECT_EQ(Run({"get", "tunnels"}), kExitOk);
  EXPECT_EQ(err_.str(), "No tunnels found.\n");
}

TEST_F(CommandsTest, YamlErrorFailsWithoutAnyRpc) {
  EXPECT_EQ(Run({"apply"}, FromStdin(), TunnelYaml("one") + "---\nkind: Tunnel\nspec: [oops\n"),
            kExitFailure);
  EXPECT_THAT(err_.str(), StartsWith("error: <stdin>: "));
  EXPECT_THAT(out_.str(), IsEmpty());
  EXPECT_THAT(service_.applies(), IsEmpty());

  EXPECT_EQ(Run({"apply"}, FromStdin(), "# nothing here\n"), kExitFailure);
  EXPECT_EQ(err_.str(), "error: <stdin>: no tunnels found\n");
}

TEST_F(CommandsTest, ApplyReadsFiles) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/tunnels.yaml");
  {
    std::ofstream file(path);
    file << TunnelYaml("from-file");
  }
  CommandOptions options;
  options.filename = path;
  EXPECT_EQ(Run({"apply"}, options), kExitOk);
  EXPECT_EQ(out_.str(), "tunnel/from-file created (revision 1)\n");

  options.filename = path + ".missing";
  EXPECT_EQ(Run({"apply"}, options), kExitFailure);
  EXPECT_THAT(err_.str(), StartsWith(absl::StrCat("error: cannot read ", path, ".missing: ")));
}

TEST_F(CommandsTest, GetTunnelsFormats) {
  service_.Put(StoredTunnel("a-to-b"));
  EXPECT_EQ(Run({"get", "tunnels"}), kExitOk);
  EXPECT_EQ(
      out_.str(),
      "NAME     NODE     REMOTE   LOCAL-TS      REMOTE-TS     PHASE                 GEN   AGE\n"
      "a-to-b   node-a   node-b   10.1.0.0/24   10.2.0.0/24   PENDING/ESTABLISHED   2     90s\n");

  CommandOptions json;
  json.output = OutputFormat::kJson;
  EXPECT_EQ(Run({"get", "tunnel"}, json), kExitOk);
  EXPECT_THAT(out_.str(), AllOf(StartsWith("{\n"), HasSubstr("\"tunnels\": ["),
                                HasSubstr("\"name\": \"a-to-b\"")));

  EXPECT_EQ(Run({"get", "tunnel", "a-to-b"}, json), kExitOk);
  EXPECT_THAT(out_.str(), AllOf(StartsWith("{\n"), HasSubstr("\"metadata\": {"),
                                Not(HasSubstr("\"tunnels\""))));

  CommandOptions yaml;
  yaml.output = OutputFormat::kYaml;
  EXPECT_EQ(Run({"get", "tunnel", "a-to-b"}, yaml), kExitOk);
  EXPECT_THAT(out_.str(), AllOf(HasSubstr("name: a-to-b"), HasSubstr("sha256:feedface")));
}

TEST_F(CommandsTest, DescribeShowsEachEnd) {
  service_.Put(StoredTunnel("a-to-b"));
  EXPECT_EQ(Run({"describe", "tunnel", "a-to-b"}), kExitOk);
  const std::string text = out_.str();
  EXPECT_THAT(
      text, AllOf(HasSubstr("Name:               a-to-b\n"),
                  HasSubstr("pre-shared key, fingerprint sha256:feedface\n"),
                  HasSubstr("  node-a (local):\n"), HasSubstr("    Reason:         AWAITING_IKE\n"),
                  HasSubstr("    Generation:     desired 2, observed 1 (behind)\n"),
                  HasSubstr("  node-b (remote):\n"), HasSubstr("    Phase:          ESTABLISHED\n"),
                  HasSubstr("    Generation:     desired 2, observed 2 (up to date)\n")));
  // The spec's order: the local end first.
  EXPECT_LT(text.find("node-a (local)"), text.find("node-b (remote)"));

  EXPECT_EQ(Run({"describe", "tunnel", "nope"}), kExitFailure);
  EXPECT_EQ(err_.str(), "error: NOT_FOUND: tunnel \"nope\" not found\n");
}

TEST_F(CommandsTest, DeleteAndNotFound) {
  service_.Put(StoredTunnel("a-to-b"));
  EXPECT_EQ(Run({"delete", "tunnel", "a-to-b"}), kExitOk);
  EXPECT_EQ(out_.str(), "tunnel/a-to-b deleted (revision 1)\n");

  EXPECT_EQ(Run({"delete", "tunnel", "a-to-b"}), kExitFailure);
  EXPECT_EQ(err_.str(), "error: NOT_FOUND: tunnel \"a-to-b\" not found\n");
  EXPECT_THAT(out_.str(), IsEmpty());
}

TEST_F(CommandsTest, GetNodes) {
  strait::v1::Node node;
  node.set_name("node-a");
  node.set_connected(true);
  node.set_current_version("3.x");
  node.set_acked_version("2.x");
  node.set_tunnel_count(1);
  service_.AddNode(node);
  EXPECT_EQ(Run({"get", "nodes"}), kExitOk);
  EXPECT_EQ(
      out_.str(),
      "NAME     CONNECTED   CURRENT-VERSION   ACKED-VERSION   IN-SYNC   TUNNELS   LAST-ERROR\n"
      "node-a   yes         3.x               2.x             no        1         -\n");
}

TEST_F(CommandsTest, DeadlineExceededSaysSo) {
  service_.SetListNodesDelay(absl::Seconds(30));
  CommandOptions options;
  options.timeout = absl::Milliseconds(100);
  EXPECT_EQ(Run({"get", "nodes"}, options), kExitFailure);
  EXPECT_THAT(err_.str(),
              AllOf(StartsWith("error: DEADLINE_EXCEEDED: "),
                    HasSubstr(absl::StrCat("no answer from ", address_, " within 100ms"))));
}

TEST(CommandsUnreachableTest, SaysCannotReach) {
  // Never created: nothing listens there.
  const std::string address = "unix:///nonexistent-strait-test-dir/controller.sock";
  auto stub = strait::v1::AdminService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  std::ostringstream out, err;
  CommandOptions options;
  options.controller = address;
  options.filename = "-";
  Commands commands(*stub, options, out, err);
  EXPECT_EQ(commands.GetNodes(), kExitFailure);
  EXPECT_THAT(err.str(),
              StartsWith(absl::StrCat("error: cannot reach controller at ", address, ": ")));

  // apply stops at the first unreachable RPC instead of repeating it.
  err.str("");
  std::istringstream in(TunnelYaml("one") + "---\n" + TunnelYaml("two"));
  EXPECT_EQ(commands.Run(Command{Verb::kApply, ""}, in), kExitFailure);
  const std::string errors = err.str();
  EXPECT_EQ(std::count(errors.begin(), errors.end(), '\n'), 1) << errors;
}

TEST(ParseCommandTest, AcceptsTheCommands) {
  auto parse = [](const std::vector<std::string>& words) { return ParseCommand(words); };
  EXPECT_EQ(parse({"apply"})->verb, Verb::kApply);
  EXPECT_EQ(parse({"get", "tunnels"})->verb, Verb::kGetTunnels);
  EXPECT_EQ(parse({"get", "tunnel"})->verb, Verb::kGetTunnels);
  EXPECT_EQ(parse({"get", "tunnel", "x"})->verb, Verb::kGetTunnel);
  EXPECT_EQ(parse({"get", "tunnel", "x"})->name, "x");
  EXPECT_EQ(parse({"describe", "tunnel", "x"})->verb, Verb::kDescribeTunnel);
  EXPECT_EQ(parse({"delete", "tunnels", "x"})->verb, Verb::kDeleteTunnel);
  EXPECT_EQ(parse({"get", "nodes"})->verb, Verb::kGetNodes);
  EXPECT_EQ(parse({"help"})->verb, Verb::kHelp);
}

TEST(ParseCommandTest, RejectsTheRest) {
  for (const std::vector<std::string>& words : std::vector<std::vector<std::string>>{
           {},
           {"frobnicate"},
           {"get"},
           {"get", "widgets"},
           {"get", "nodes", "x"},
           {"get", "tunnel", "x", "y"},
           {"describe", "tunnel"},
           {"delete", "tunnel"},
           {"delete", "nodes", "x"},
           {"apply", "file.yaml"},
       }) {
    EXPECT_FALSE(ParseCommand(words).ok()) << absl::StrJoin(words, " ");
  }
  EXPECT_EQ(ParseCommand({"delete", "tunnel"}).status().message(),
            "\"delete tunnel\": missing argument");
}

FlagSyntax TestSyntax() {
  FlagSyntax syntax;
  syntax.value_flags = {"controller", "output", "timeout", "filename"};
  syntax.bool_flags = {"insecure", "dry_run"};
  syntax.short_aliases = {{'o', "output"}, {'f', "filename"}};
  return syntax;
}

TEST(NormalizeArgsTest, RewritesShortAndSpacedForms) {
  absl::StatusOr<std::vector<std::string>> args =
      NormalizeArgs({"straitctl", "apply", "-f", "-", "--dry-run", "-o", "yaml", "--controller",
                     "unix:///run/c.sock", "-insecure", "--timeout=3s", "-ojson", "-o=table",
                     "--output", "json", "-h", "--nodry-run", "--", "-o"},
                    TestSyntax());
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_THAT(*args, ElementsAre("straitctl", "apply", "--filename=-", "--dry_run", "--output=yaml",
                                 "--controller=unix:///run/c.sock", "--insecure", "--timeout=3s",
                                 "--output=json", "--output=table", "--output=json", "--help",
                                 "--nodry_run", "--", "-o"));
}

TEST(NormalizeArgsTest, KeepsValuesVerbatim) {
  absl::StatusOr<std::vector<std::string>> args =
      NormalizeArgs({"straitctl", "-f", "my-file=x.yaml", "--filename=a-b=c"}, TestSyntax());
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_THAT(*args, ElementsAre("straitctl", "--filename=my-file=x.yaml", "--filename=a-b=c"));
}

TEST(NormalizeArgsTest, RejectsUnknownFlagsAndMissingValues) {
  EXPECT_EQ(NormalizeArgs({"straitctl", "--bogus"}, TestSyntax()).status().message(),
            "unknown flag --bogus");
  EXPECT_EQ(NormalizeArgs({"straitctl", "-x"}, TestSyntax()).status().message(), "unknown flag -x");
  EXPECT_EQ(NormalizeArgs({"straitctl", "get", "nodes", "-o"}, TestSyntax()).status().message(),
            "flag -o needs a value");
  EXPECT_TRUE(NormalizeArgs({"straitctl", "--helpfull"}, TestSyntax()).ok());
}

}  // namespace
}  // namespace strait::cli
