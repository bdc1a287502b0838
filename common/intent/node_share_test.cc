#include "common/intent/node_share.h"

#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace strait::intent {
namespace {

using ::strait::v1::Tunnel;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

Tunnel ParseText(const std::string& text) {
  Tunnel tunnel;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &tunnel)) << text;
  return tunnel;
}

Tunnel NodeToNode() {
  return ParseText(R"pb(
    kind: "Tunnel"
    metadata { name: "a-to-b" generation: 7 revision: 42 }
    spec {
      node: "node-a"
      local { address: "198.51.100.11" id: "node-a.strait.test" traffic_selectors: "10.1.0.0/24" }
      remote {
        node: "node-b"
        address: "198.51.100.12"
        id: "node-b.strait.test"
        traffic_selectors: [ "10.2.0.0/24", "10.4.0.0/24" ]
      }
      auth { psk { value: "demo only: replace with 32 random bytes" } }
      ike {
        proposals: "aes256gcm16-prfsha384-ecp384"
        lifetime { seconds: 28800 }
      }
      esp { proposals: "aes256gcm16-ecp384" replay_window: 64 }
      dpd {
        interval { seconds: 30 }
        timeout { seconds: 150 }
        action: DPD_ACTION_RESTART
      }
      start_action: START_ACTION_START
    }
  )pb");
}

Tunnel External() {
  Tunnel t = NodeToNode();
  t.mutable_metadata()->set_name("branch-to-vpc");
  t.mutable_spec()->mutable_remote()->clear_node();
  return t;
}

TEST(TunnelNodesTest, ExternalTunnelHasOneNode) {
  EXPECT_THAT(TunnelNodes(External().spec()), ElementsAre("node-a"));
}

TEST(TunnelNodesTest, NodeToNodeIsSortedAndUnique) {
  Tunnel t = NodeToNode();
  t.mutable_spec()->set_node("node-z");
  EXPECT_THAT(TunnelNodes(t.spec()), ElementsAre("node-b", "node-z"));
  t.mutable_spec()->mutable_remote()->set_node("node-z");
  EXPECT_THAT(TunnelNodes(t.spec()), ElementsAre("node-z"));
  EXPECT_THAT(TunnelNodes(strait::v1::TunnelSpec()), IsEmpty());
}

TEST(NodeHalfTest, OwningNodeGetsTheSpecAsIs) {
  Tunnel t = NodeToNode();
  auto half = NodeHalf(t, "node-a");
  ASSERT_TRUE(half.has_value());
  EXPECT_EQ(half->name(), "a-to-b");
  EXPECT_EQ(half->generation(), 7);
  EXPECT_EQ(half->spec().SerializeAsString(), t.spec().SerializeAsString());
  EXPECT_EQ(half->spec().auth().psk().value(), "demo only: replace with 32 random bytes");
}

TEST(NodeHalfTest, RemoteNodeGetsMirroredEnds) {
  Tunnel t = NodeToNode();
  auto half = NodeHalf(t, "node-b");
  ASSERT_TRUE(half.has_value());
  EXPECT_EQ(half->name(), "a-to-b");
  EXPECT_EQ(half->generation(), 7);
  const strait::v1::TunnelSpec& spec = half->spec();
  EXPECT_EQ(spec.node(), "node-b");

  EXPECT_EQ(spec.local().node(), "");
  EXPECT_EQ(spec.local().address(), "198.51.100.12");
  EXPECT_EQ(spec.local().id(), "node-b.strait.test");
  EXPECT_THAT(spec.local().traffic_selectors(), ElementsAre("10.2.0.0/24", "10.4.0.0/24"));

  EXPECT_EQ(spec.remote().node(), "node-a");
  EXPECT_EQ(spec.remote().address(), "198.51.100.11");
  EXPECT_EQ(spec.remote().id(), "node-a.strait.test");
  EXPECT_THAT(spec.remote().traffic_selectors(), ElementsAre("10.1.0.0/24"));

  // Everything else is shared, the key included.
  EXPECT_EQ(spec.auth().psk().value(), "demo only: replace with 32 random bytes");
  EXPECT_EQ(spec.ike().SerializeAsString(), t.spec().ike().SerializeAsString());
  EXPECT_EQ(spec.esp().SerializeAsString(), t.spec().esp().SerializeAsString());
  EXPECT_EQ(spec.dpd().SerializeAsString(), t.spec().dpd().SerializeAsString());
  EXPECT_EQ(spec.start_action(), t.spec().start_action());
}

TEST(NodeHalfTest, MirroringTwiceGivesTheOriginalBack) {
  Tunnel t = NodeToNode();
  Tunnel mirrored;
  *mirrored.mutable_metadata() = t.metadata();
  *mirrored.mutable_spec() = NodeHalf(t, "node-b")->spec();
  auto back = NodeHalf(mirrored, "node-a");
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->spec().SerializeAsString(), t.spec().SerializeAsString());
}

TEST(NodeHalfTest, OtherNodesGetNothing) {
  EXPECT_FALSE(NodeHalf(NodeToNode(), "node-c").has_value());
  EXPECT_FALSE(NodeHalf(NodeToNode(), "").has_value());
  EXPECT_FALSE(NodeHalf(External(), "node-b").has_value());
  // An external tunnel's remote has no node; "" must not match it.
  EXPECT_TRUE(NodeHalf(External(), "node-a").has_value());
}

}  // namespace
}  // namespace strait::intent
