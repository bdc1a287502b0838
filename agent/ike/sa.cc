#include "agent/ike/sa.h"

#include <utility>

#include "common/status_macros.h"

namespace strait::ike {

namespace {

constexpr absl::string_view kKeyPad = "Key Pad for IKEv2";

}  // namespace

absl::string_view AsStringView(const Bytes& b) {
  return absl::string_view(reinterpret_cast<const char*>(b.data()), b.size());
}

Bytes BytesOf(absl::string_view s) { return Bytes(s.begin(), s.end()); }

std::string SpiString(uint64_t spi) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(spi >> (56 - 8 * i));
  return out;
}

CipherSuite CipherSuiteOf(const AlgorithmProposal& p) {
  CipherSuite suite;
  suite.encr = static_cast<EncrId>(p.encr_id);
  suite.key_bits = p.key_bits;
  suite.integ = static_cast<IntegId>(p.integ_id);
  return suite;
}

// After both nonces and KE values are known: SKEYSEED and the SK ciphers.
absl::Status DeriveSkKeys(IkeSa& sa, absl::string_view peer_ke) {
  ASSIGN_OR_RETURN(Secret shared, sa.dh->ComputeSharedSecret(peer_ke));
  ASSIGN_OR_RETURN(Prf prf, Prf::Create(static_cast<PrfId>(sa.algorithms.prf_id)));
  const CipherSuite suite = CipherSuiteOf(sa.algorithms);
  ASSIGN_OR_RETURN(
      sa.keys, DeriveIkeSaKeys(prf, suite, shared.view(), AsStringView(sa.ni), AsStringView(sa.nr),
                               SpiString(sa.spi_i), SpiString(sa.spi_r)));
  ASSIGN_OR_RETURN(SkCipherPtr i_cipher, CreateSkCipher(suite, sa.keys.sk_ei, sa.keys.sk_ai));
  ASSIGN_OR_RETURN(SkCipherPtr r_cipher, CreateSkCipher(suite, sa.keys.sk_er, sa.keys.sk_ar));
  sa.outbound = sa.initiator ? std::move(i_cipher) : std::move(r_cipher);
  sa.inbound = sa.initiator ? std::move(r_cipher) : std::move(i_cipher);
  sa.prf.emplace(std::move(prf));
  return absl::OkStatus();
}

absl::Status DeriveRekeyedSkKeys(IkeSa& sa, const IkeSa& old, absl::string_view peer_ke) {
  if (!old.prf.has_value()) return absl::FailedPreconditionError("old IKE SA has no PRF");
  ASSIGN_OR_RETURN(Secret shared, sa.dh->ComputeSharedSecret(peer_ke));
  ASSIGN_OR_RETURN(Prf prf, Prf::Create(static_cast<PrfId>(sa.algorithms.prf_id)));
  const CipherSuite suite = CipherSuiteOf(sa.algorithms);
  ASSIGN_OR_RETURN(
      sa.keys, DeriveRekeyedIkeSaKeys(*old.prf, old.keys.sk_d, prf, suite, shared.view(),
                                      AsStringView(sa.ni), AsStringView(sa.nr), SpiString(sa.spi_i),
                                      SpiString(sa.spi_r)));
  ASSIGN_OR_RETURN(SkCipherPtr i_cipher, CreateSkCipher(suite, sa.keys.sk_ei, sa.keys.sk_ai));
  ASSIGN_OR_RETURN(SkCipherPtr r_cipher, CreateSkCipher(suite, sa.keys.sk_er, sa.keys.sk_ar));
  sa.outbound = sa.initiator ? std::move(i_cipher) : std::move(r_cipher);
  sa.inbound = sa.initiator ? std::move(r_cipher) : std::move(i_cipher);
  sa.prf.emplace(std::move(prf));
  return absl::OkStatus();
}

// RFC 7296 §2.15: prf(prf(PSK, "Key Pad for IKEv2"), init message | nonce |
// prf(SK_p, ID')).
absl::StatusOr<Secret> PskAuth(const IkeSa& sa, const Secret& psk, bool from_initiator,
                               const IdPayload& id) {
  Bytes id_body;
  EncodeIdPayload(id, &id_body);
  const Secret& sk_p = from_initiator ? sa.keys.sk_pi : sa.keys.sk_pr;
  ASSIGN_OR_RETURN(Secret mac_id, sa.prf->Compute(sk_p.view(), AsStringView(id_body)));
  ASSIGN_OR_RETURN(Secret key, sa.prf->Compute(psk.view(), kKeyPad));
  const Bytes& message = from_initiator ? sa.init_request : sa.init_response;
  const Bytes& nonce = from_initiator ? sa.nr : sa.ni;
  return sa.prf->Compute(key.view(), {AsStringView(message), AsStringView(nonce), mac_id.view()});
}

absl::StatusOr<Bytes> SignedOctets(const IkeSa& sa, bool from_initiator, const IdPayload& id) {
  Bytes id_body;
  EncodeIdPayload(id, &id_body);
  const Secret& sk_p = from_initiator ? sa.keys.sk_pi : sa.keys.sk_pr;
  ASSIGN_OR_RETURN(Secret mac_id, sa.prf->Compute(sk_p.view(), AsStringView(id_body)));
  const Bytes& message = from_initiator ? sa.init_request : sa.init_response;
  const Bytes& nonce = from_initiator ? sa.nr : sa.ni;
  Bytes out = message;
  out.insert(out.end(), nonce.begin(), nonce.end());
  const absl::string_view mac = mac_id.view();
  out.insert(out.end(), mac.begin(), mac.end());
  return out;
}

}  // namespace strait::ike
