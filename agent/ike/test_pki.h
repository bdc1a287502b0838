#ifndef STRAIT_AGENT_IKE_TEST_PKI_H_
#define STRAIT_AGENT_IKE_TEST_PKI_H_

// A throwaway PKI for tests and benchmarks: a CA that issues end-entity
// certificates with chosen keys, subjects, subjectAltNames and validity.
// Keys come from OpenSSL's DRBG; nothing is written to disk.

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace strait::ike::testing {

enum class KeyType { kEcdsaP256, kEcdsaP384, kEcdsaP521, kRsa2048, kRsa4096 };

struct IssuedCertificate {
  std::string certificate_pem;
  std::string private_key_pem;  // PKCS#8.
};

class TestCa {
 public:
  // A self-signed CA "O=Strait Test, CN=<common_name>" valid in
  // [not_before, not_after].
  TestCa(const std::string& common_name, absl::Time not_before, absl::Time not_after,
         KeyType type = KeyType::kEcdsaP256);
  ~TestCa();
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;

  const std::string& certificate_pem() const { return certificate_pem_; }

  // An end-entity certificate "O=Strait Test, CN=<common_name>" with
  // `subject_alt_names` in OpenSSL's syntax ("DNS:gw.example",
  // "IP:192.0.2.1", "email:a@b.example"). Aborts on OpenSSL errors: this is
  // test code.
  IssuedCertificate Issue(const std::string& common_name,
                          const std::vector<std::string>& subject_alt_names, KeyType type,
                          absl::Time not_before, absl::Time not_after) const;

 private:
  EVP_PKEY* key_ = nullptr;
  X509* cert_ = nullptr;
  std::string certificate_pem_;
};

}  // namespace strait::ike::testing

#endif  // STRAIT_AGENT_IKE_TEST_PKI_H_
