#ifndef STRAIT_AGENT_IKE_CRYPTO_KEYS_H_
#define STRAIT_AGENT_IKE_CRYPTO_KEYS_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/ike/crypto_prf.h"
#include "agent/ike/crypto_sk.h"
#include "common/secret.h"

namespace strait::ike {

// The keys of an IKE SA (RFC 7296 §2.14). "i" keys protect what the original
// initiator sends, "r" keys what the original responder sends.
struct IkeSaKeys {
  Secret sk_d;
  Secret sk_ai;  // Empty for AEAD suites.
  Secret sk_ar;
  Secret sk_ei;  // Key | salt for AES-GCM.
  Secret sk_er;
  Secret sk_pi;
  Secret sk_pr;
};

// SKEYSEED = prf(Ni | Nr, g^ir);
// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
//     = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
// `prf` is the negotiated PRF, `suite` the negotiated SK transforms, SPIs
// are the 8-byte wire values. SK_d/SK_pi/SK_pr have prf.output_size() bytes.
absl::StatusOr<IkeSaKeys> DeriveIkeSaKeys(const Prf& prf, const CipherSuite& suite,
                                          absl::string_view shared_secret, absl::string_view ni,
                                          absl::string_view nr, absl::string_view spi_i,
                                          absl::string_view spi_r);

// IKE SA rekey (RFC 7296 §2.18): SKEYSEED = prf(SK_d(old), g^ir(new) | Ni | Nr)
// computed with the old SA's PRF, then prf+ as above with the new SA's PRF,
// nonces and SPIs.
absl::StatusOr<IkeSaKeys> DeriveRekeyedIkeSaKeys(const Prf& old_prf, const Secret& old_sk_d,
                                                 const Prf& new_prf, const CipherSuite& suite,
                                                 absl::string_view shared_secret,
                                                 absl::string_view ni, absl::string_view nr,
                                                 absl::string_view spi_i, absl::string_view spi_r);

// Child SA keys (RFC 7296 §2.17), each direction encryption key (key | salt
// for AES-GCM, the kernel's layout for rfc4106) then integrity key.
struct ChildSaKeys {
  Secret encr_i;  // Initiator to responder.
  Secret integ_i;
  Secret encr_r;  // Responder to initiator.
  Secret integ_r;
};

// KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr); `shared_secret` is empty
// without PFS. Ni and Nr are the nonces of the exchange creating the child
// (IKE_AUTH: the IKE_SA_INIT nonces).
absl::StatusOr<ChildSaKeys> DeriveChildSaKeys(const Prf& prf, const Secret& sk_d,
                                              const CipherSuite& suite,
                                              absl::string_view shared_secret, absl::string_view ni,
                                              absl::string_view nr);

}  // namespace strait::ike

#endif  // STRAIT_AGENT_IKE_CRYPTO_KEYS_H_
