#include "agent/ike/crypto_keys.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "agent/ike/crypto_secret.h"
#include "common/status_macros.h"

namespace strait::ike {
namespace {

constexpr size_t kSpiSize = 8;

// Cuts consecutive keys out of a prf+ stream.
class KeyCutter {
 public:
  explicit KeyCutter(const Secret& stream) : rest_(stream.view()) {}
  Secret Next(size_t size) {
    Secret key(std::string(rest_.substr(0, size)));
    rest_.remove_prefix(size);
    return key;
  }

 private:
  absl::string_view rest_;
};

absl::Status CheckIkeInputs(const CipherSuite& suite, absl::string_view ni, absl::string_view nr,
                            absl::string_view spi_i, absl::string_view spi_r) {
  RETURN_IF_ERROR(ValidateCipherSuite(suite));
  if (spi_i.size() != kSpiSize || spi_r.size() != kSpiSize) {
    return absl::InvalidArgumentError("IKE SPIs must be 8 bytes");
  }
  // RFC 7296 §2.10: nonces are 16..256 bytes.
  if (ni.size() < 16 || nr.size() < 16 || ni.size() > 256 || nr.size() > 256) {
    return absl::InvalidArgumentError("nonces must be 16 to 256 bytes");
  }
  return absl::OkStatus();
}

absl::StatusOr<IkeSaKeys> ExpandSkeyseed(const Prf& prf, const CipherSuite& suite,
                                         const Secret& skeyseed, absl::string_view ni,
                                         absl::string_view nr, absl::string_view spi_i,
                                         absl::string_view spi_r) {
  const size_t prf_size = prf.output_size();
  const size_t integ_size = IntegKeySize(suite.integ);
  const size_t encr_size = EncrKeyMaterialSize(suite);
  const size_t total = 3 * prf_size + 2 * integ_size + 2 * encr_size;
  // The seed is public (nonces and SPIs).
  std::string seed;
  seed.reserve(ni.size() + nr.size() + 2 * kSpiSize);
  seed.append(ni.data(), ni.size());
  seed.append(nr.data(), nr.size());
  seed.append(spi_i.data(), spi_i.size());
  seed.append(spi_r.data(), spi_r.size());
  ASSIGN_OR_RETURN(Secret stream, prf.PrfPlus(skeyseed.view(), seed, total));
  KeyCutter cut(stream);
  IkeSaKeys keys;
  keys.sk_d = cut.Next(prf_size);
  keys.sk_ai = cut.Next(integ_size);
  keys.sk_ar = cut.Next(integ_size);
  keys.sk_ei = cut.Next(encr_size);
  keys.sk_er = cut.Next(encr_size);
  keys.sk_pi = cut.Next(prf_size);
  keys.sk_pr = cut.Next(prf_size);
  return keys;
}

}  // namespace

absl::StatusOr<IkeSaKeys> DeriveIkeSaKeys(const Prf& prf, const CipherSuite& suite,
                                          absl::string_view shared_secret, absl::string_view ni,
                                          absl::string_view nr, absl::string_view spi_i,
                                          absl::string_view spi_r) {
  RETURN_IF_ERROR(CheckIkeInputs(suite, ni, nr, spi_i, spi_r));
  if (shared_secret.empty()) return absl::InvalidArgumentError("empty shared secret");
  // The key is Ni | Nr: public, so a plain string.
  std::string nonces;
  nonces.reserve(ni.size() + nr.size());
  nonces.append(ni.data(), ni.size());
  nonces.append(nr.data(), nr.size());
  ASSIGN_OR_RETURN(Secret skeyseed, prf.Compute(nonces, shared_secret));
  return ExpandSkeyseed(prf, suite, skeyseed, ni, nr, spi_i, spi_r);
}

absl::StatusOr<IkeSaKeys> DeriveRekeyedIkeSaKeys(const Prf& old_prf, const Secret& old_sk_d,
                                                 const Prf& new_prf, const CipherSuite& suite,
                                                 absl::string_view shared_secret,
                                                 absl::string_view ni, absl::string_view nr,
                                                 absl::string_view spi_i, absl::string_view spi_r) {
  RETURN_IF_ERROR(CheckIkeInputs(suite, ni, nr, spi_i, spi_r));
  if (shared_secret.empty()) return absl::InvalidArgumentError("empty shared secret");
  if (old_sk_d.empty()) return absl::InvalidArgumentError("empty SK_d");
  ASSIGN_OR_RETURN(Secret skeyseed, old_prf.Compute(old_sk_d.view(), {shared_secret, ni, nr}));
  return ExpandSkeyseed(new_prf, suite, skeyseed, ni, nr, spi_i, spi_r);
}

absl::StatusOr<ChildSaKeys> DeriveChildSaKeys(const Prf& prf, const Secret& sk_d,
                                              const CipherSuite& suite,
                                              absl::string_view shared_secret, absl::string_view ni,
                                              absl::string_view nr) {
  RETURN_IF_ERROR(ValidateCipherSuite(suite));
  if (sk_d.empty()) return absl::InvalidArgumentError("empty SK_d");
  if (ni.empty() || nr.empty()) return absl::InvalidArgumentError("empty nonce");
  const size_t encr_size = EncrKeyMaterialSize(suite);
  const size_t integ_size = IntegKeySize(suite.integ);
  // The seed holds g^ir with PFS, so it is built in wiping storage.
  SecretBuffer seed;
  seed.Append(shared_secret);
  seed.Append(ni);
  seed.Append(nr);
  ASSIGN_OR_RETURN(Secret stream,
                   prf.PrfPlus(sk_d.view(), seed.view(), 2 * (encr_size + integ_size)));
  KeyCutter cut(stream);
  ChildSaKeys keys;
  keys.encr_i = cut.Next(encr_size);
  keys.integ_i = cut.Next(integ_size);
  keys.encr_r = cut.Next(encr_size);
  keys.integ_r = cut.Next(integ_size);
  return keys;
}

}  // namespace strait::ike
