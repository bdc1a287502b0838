#include "agent/ike/test_pki.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_join.h"

namespace strait::ike::testing {

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "test_pki: %s failed\n", what);
    std::abort();
  }
}

EVP_PKEY* NewKey(KeyType type) {
  EVP_PKEY* key = nullptr;
  switch (type) {
    case KeyType::kEcdsaP256:
      key = EVP_EC_gen("P-256");
      break;
    case KeyType::kEcdsaP384:
      key = EVP_EC_gen("P-384");
      break;
    case KeyType::kEcdsaP521:
      key = EVP_EC_gen("P-521");
      break;
    case KeyType::kRsa2048:
      key = EVP_RSA_gen(2048);
      break;
    case KeyType::kRsa4096:
      key = EVP_RSA_gen(4096);
      break;
  }
  Check(key != nullptr, "key generation");
  return key;
}

void SetName(X509_NAME* name, const std::string& common_name) {
  Check(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>("Strait Test"), -1, -1,
                                   0) == 1,
        "O");
  Check(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                   -1, 0) == 1,
        "CN");
}

void AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  Check(ext != nullptr, "extension");
  Check(X509_add_ext(cert, ext, -1) == 1, "add extension");
  X509_EXTENSION_free(ext);
}

X509* NewCertificate(EVP_PKEY* subject_key, const std::string& common_name, X509* issuer,
                     EVP_PKEY* issuer_key, absl::Time not_before, absl::Time not_after) {
  static long serial = 1000;
  X509* cert = X509_new();
  Check(cert != nullptr, "X509_new");
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), ++serial);
  Check(ASN1_TIME_set(X509_getm_notBefore(cert), absl::ToTimeT(not_before)) != nullptr,
        "notBefore");
  Check(ASN1_TIME_set(X509_getm_notAfter(cert), absl::ToTimeT(not_after)) != nullptr, "notAfter");
  X509_set_pubkey(cert, subject_key);
  SetName(X509_get_subject_name(cert), common_name);
  X509_set_issuer_name(
      cert, issuer != nullptr ? X509_get_subject_name(issuer) : X509_get_subject_name(cert));
  return cert;
}

void Sign(X509* cert, EVP_PKEY* key) { Check(X509_sign(cert, key, EVP_sha256()) > 0, "X509_sign"); }

std::string CertPem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  Check(PEM_write_bio_X509(bio, cert) == 1, "PEM_write_bio_X509");
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(size));
  BIO_free(bio);
  return out;
}

std::string KeyPem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  Check(PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "PEM_write_bio_PrivateKey");
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(size));
  BIO_free(bio);
  return out;
}

}  // namespace

TestCa::TestCa(const std::string& common_name, absl::Time not_before, absl::Time not_after,
               KeyType type)
    : key_(NewKey(type)) {
  cert_ = NewCertificate(key_, common_name, nullptr, nullptr, not_before, not_after);
  AddExtension(cert_, cert_, NID_basic_constraints, "critical,CA:TRUE");
  AddExtension(cert_, cert_, NID_key_usage, "critical,keyCertSign,cRLSign");
  AddExtension(cert_, cert_, NID_subject_key_identifier, "hash");
  Sign(cert_, key_);
  certificate_pem_ = CertPem(cert_);
}

TestCa::~TestCa() {
  X509_free(cert_);
  EVP_PKEY_free(key_);
}

IssuedCertificate TestCa::Issue(const std::string& common_name,
                                const std::vector<std::string>& subject_alt_names, KeyType type,
                                absl::Time not_before, absl::Time not_after) const {
  EVP_PKEY* key = NewKey(type);
  X509* cert = NewCertificate(key, common_name, cert_, key_, not_before, not_after);
  AddExtension(cert, cert_, NID_basic_constraints, "CA:FALSE");
  AddExtension(cert, cert_, NID_authority_key_identifier, "keyid");
  if (!subject_alt_names.empty()) {
    AddExtension(cert, cert_, NID_subject_alt_name, absl::StrJoin(subject_alt_names, ","));
  }
  Sign(cert, key_);
  IssuedCertificate out{CertPem(cert), KeyPem(key)};
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

}  // namespace strait::ike::testing
