#ifndef STRAIT_COMMON_INTENT_SECRETS_H_
#define STRAIT_COMMON_INTENT_SECRETS_H_

// Tunnels and snapshots carry pre-shared keys in clear where a component
// needs them (the controller's store, the agent's IKE). Every copy that is
// dropped, or returned to a reader, goes through these.

#include "common/secret.h"
#include "proto/strait/v1/agent.pb.h"
#include "proto/strait/v1/tunnel.pb.h"

namespace strait::intent {

// Wipes and clears the PSK value; the fingerprint stays.
inline void WipeSpecSecrets(strait::v1::TunnelSpec* spec) {
  if (spec->auth().has_psk()) {
    WipeString(spec->mutable_auth()->mutable_psk()->mutable_value());
  }
}

inline void WipeSnapshotSecrets(strait::v1::Snapshot* snapshot) {
  for (strait::v1::NodeTunnel& tunnel : *snapshot->mutable_tunnels()) {
    WipeSpecSecrets(tunnel.mutable_spec());
  }
}

}  // namespace strait::intent

#endif  // STRAIT_COMMON_INTENT_SECRETS_H_
