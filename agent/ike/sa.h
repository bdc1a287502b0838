#ifndef STRAIT_AGENT_IKE_SA_H_
#define STRAIT_AGENT_IKE_SA_H_

// The state of one IKE SA that the exchange tasks share: SPIs, nonces, the
// negotiated algorithms, the keys and the IKE_SA_INIT messages that AUTH
// signs. Internal to the engine.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/ike/crypto.h"
#include "agent/ike/engine.h"
#include "agent/ike/message.h"
#include "common/secret.h"

namespace strait::ike {

struct IkeSa {
  bool initiator = false;
  uint64_t spi_i = 0;
  uint64_t spi_r = 0;
  Bytes ni;
  Bytes nr;
  uint16_t dh_group = 0;
  DiffieHellmanPtr dh;
  AlgorithmProposal algorithms;
  std::optional<Prf> prf;
  IkeSaKeys keys;
  SkCipherPtr outbound;  // Protects what we send.
  SkCipherPtr inbound;
  Bytes init_request;  // The IKE_SA_INIT messages as sent, for AUTH.
  Bytes init_response;
  bool local_behind_nat = false;
  bool remote_behind_nat = false;
  // From the peer's IKE_SA_INIT (RFC 7427 §4): the hashes it accepts in
  // Digital Signature AUTH; empty when it sent none.
  std::vector<uint16_t> peer_hash_algorithms;
  // Both ends sent IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383 §2.3).
  bool fragmentation = false;
};

absl::string_view AsStringView(const Bytes& b);
Bytes BytesOf(absl::string_view s);
// The 8-byte wire form of an IKE SPI.
std::string SpiString(uint64_t spi);
// The SK / ESP transforms of a proposal.
CipherSuite CipherSuiteOf(const AlgorithmProposal& p);

// Once both nonces, SPIs and KE values are known: g^ir from `sa.dh` and
// `peer_ke`, SKEYSEED, the SK_* keys and the SK ciphers of both directions.
absl::Status DeriveSkKeys(IkeSa& sa, absl::string_view peer_ke);

// IKE SA rekey (RFC 7296 §2.18): like DeriveSkKeys() for the new SA `sa`
// (its SPIs, nonces, algorithms and `dh` set), with SKEYSEED =
// prf(SK_d (old), g^ir (new) | Ni | Nr) under the old SA's PRF.
absl::Status DeriveRekeyedSkKeys(IkeSa& sa, const IkeSa& old, absl::string_view peer_ke);

// RFC 7296 §2.15 PSK authentication: prf(prf(PSK, "Key Pad for IKEv2"),
// <SignedOctets>) where SignedOctets is the IKE_SA_INIT message of the
// signer, the other side's nonce and prf(SK_p, ID'), ID' being the ID
// payload body. `from_initiator` names the signer.
absl::StatusOr<Secret> PskAuth(const IkeSa& sa, const Secret& psk, bool from_initiator,
                               const IdPayload& id);

// The octets a signature AUTH signs (RFC 7296 §2.15): the signer's
// IKE_SA_INIT message, the other side's nonce and prf(SK_p, ID').
absl::StatusOr<Bytes> SignedOctets(const IkeSa& sa, bool from_initiator, const IdPayload& id);

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_SA_H_
