#include "agent/ike/crypto_sk.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <climits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agent/ike/crypto_prf.h"
#include "common/status_macros.h"

namespace strait::ike {
namespace {

constexpr size_t kGcmSaltSize = 4;
constexpr size_t kGcmIvSize = 8;
constexpr size_t kGcmNonceSize = 12;
constexpr size_t kGcmTagSize = 16;
constexpr size_t kAesBlockSize = 16;

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

absl::Status OpenSslError(absl::string_view what) {
  const unsigned long err = ERR_get_error();
  ERR_clear_error();
  char buf[256] = {0};
  if (err != 0) ERR_error_string_n(err, buf, sizeof(buf));
  return absl::InternalError(absl::StrCat(what, ": ", buf));
}

const unsigned char* Bytes(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}
unsigned char* Bytes(std::string& s) { return reinterpret_cast<unsigned char*>(s.data()); }

const EVP_CIPHER* GcmCipher(size_t key_size) {
  switch (key_size) {
    case 16:
      return EVP_aes_128_gcm();
    case 24:
      return EVP_aes_192_gcm();
    case 32:
      return EVP_aes_256_gcm();
  }
  return nullptr;
}

const EVP_CIPHER* CbcCipher(size_t key_size) {
  switch (key_size) {
    case 16:
      return EVP_aes_128_cbc();
    case 24:
      return EVP_aes_192_cbc();
    case 32:
      return EVP_aes_256_cbc();
  }
  return nullptr;
}

absl::Status CheckIntSize(absl::string_view s) {
  if (s.size() > INT_MAX / 2) return absl::InvalidArgumentError("input too long");
  return absl::OkStatus();
}

// `plaintext` | zero padding | pad length, a multiple of `block` bytes.
std::string Pad(absl::string_view plaintext, size_t block) {
  const size_t pad = (block - (plaintext.size() + 1) % block) % block;
  std::string out;
  out.reserve(plaintext.size() + pad + 1);
  out.append(plaintext.data(), plaintext.size());
  out.append(pad, '\0');
  out.push_back(static_cast<char>(pad));
  return out;
}

absl::StatusOr<std::string> Unpad(std::string padded) {
  if (padded.empty()) return absl::InvalidArgumentError("SK payload has no pad length");
  const size_t pad = static_cast<unsigned char>(padded.back());
  if (pad + 1 > padded.size()) return absl::InvalidArgumentError("SK payload has bad padding");
  padded.resize(padded.size() - pad - 1);
  return padded;
}

absl::StatusOr<std::string> RandomIv(size_t size) {
  std::string iv(size, '\0');
  if (RAND_bytes(Bytes(iv), iv.size()) != 1) return OpenSslError("RAND_bytes");
  return iv;
}

class AesGcmSkCipher : public SkCipher {
 public:
  AesGcmSkCipher(Secret key, std::string salt) : key_(std::move(key)), salt_(std::move(salt)) {}
  ~AesGcmSkCipher() override { WipeString(&salt_); }

  // SkCipher
  size_t iv_size() const override { return kGcmIvSize; }
  size_t icv_size() const override { return kGcmTagSize; }
  size_t SealedSize(size_t plaintext_size) const override {
    // RFC 5282 §3: no block alignment, only the Pad Length byte.
    return kGcmIvSize + plaintext_size + 1 + kGcmTagSize;
  }
  absl::StatusOr<std::string> Seal(absl::string_view aad,
                                   absl::string_view plaintext) const override {
    ASSIGN_OR_RETURN(std::string iv, RandomIv(kGcmIvSize));
    return SealWithIv(aad, iv, plaintext);
  }
  absl::StatusOr<std::string> SealWithIv(absl::string_view aad, absl::string_view iv,
                                         absl::string_view plaintext) const override {
    if (iv.size() != kGcmIvSize) return absl::InvalidArgumentError("AES-GCM IV must be 8 bytes");
    ASSIGN_OR_RETURN(std::string body, AesGcmSeal(key_.view(), Nonce(iv), aad, Pad(plaintext, 1)));
    return absl::StrCat(iv, body);
  }
  absl::StatusOr<std::string> Open(absl::string_view aad, absl::string_view sealed) const override {
    if (sealed.size() < kGcmIvSize + 1 + kGcmTagSize) {
      return absl::InvalidArgumentError("SK payload too short for AES-GCM");
    }
    const absl::string_view iv = sealed.substr(0, kGcmIvSize);
    ASSIGN_OR_RETURN(std::string padded,
                     AesGcmOpen(key_.view(), Nonce(iv), aad, sealed.substr(kGcmIvSize)));
    return Unpad(std::move(padded));
  }

 private:
  std::string Nonce(absl::string_view iv) const { return absl::StrCat(salt_, iv); }

  Secret key_;
  std::string salt_;  // Not secret on its own, wiped anyway.
};

class AesCbcHmacSkCipher : public SkCipher {
 public:
  AesCbcHmacSkCipher(Secret key, Prf integ, Secret integ_key, size_t icv_size)
      : key_(std::move(key)),
        integ_(std::move(integ)),
        integ_key_(std::move(integ_key)),
        icv_size_(icv_size) {}

  // SkCipher
  size_t iv_size() const override { return kAesBlockSize; }
  size_t icv_size() const override { return icv_size_; }
  size_t SealedSize(size_t plaintext_size) const override {
    const size_t blocks = (plaintext_size + 1 + kAesBlockSize - 1) / kAesBlockSize;
    return kAesBlockSize + blocks * kAesBlockSize + icv_size_;
  }
  absl::StatusOr<std::string> Seal(absl::string_view aad,
                                   absl::string_view plaintext) const override {
    ASSIGN_OR_RETURN(std::string iv, RandomIv(kAesBlockSize));
    return SealWithIv(aad, iv, plaintext);
  }
  absl::StatusOr<std::string> SealWithIv(absl::string_view aad, absl::string_view iv,
                                         absl::string_view plaintext) const override {
    if (iv.size() != kAesBlockSize)
      return absl::InvalidArgumentError("AES-CBC IV must be 16 bytes");
    ASSIGN_OR_RETURN(std::string ciphertext,
                     AesCbcEncrypt(key_.view(), iv, Pad(plaintext, kAesBlockSize)));
    std::string out = absl::StrCat(iv, ciphertext);
    // RFC 7296 §3.14: the ICV covers the IKE header through the Pad Length,
    // that is, the AAD and everything we send before the ICV.
    ASSIGN_OR_RETURN(Secret mac, integ_.Compute(integ_key_.view(), {aad, out}));
    out.append(mac.view().data(), icv_size_);
    return out;
  }
  absl::StatusOr<std::string> Open(absl::string_view aad, absl::string_view sealed) const override {
    if (sealed.size() < kAesBlockSize + kAesBlockSize + icv_size_ ||
        (sealed.size() - icv_size_) % kAesBlockSize != 0) {
      return absl::InvalidArgumentError("SK payload has a bad length for AES-CBC");
    }
    const absl::string_view covered = sealed.substr(0, sealed.size() - icv_size_);
    const absl::string_view icv = sealed.substr(covered.size());
    ASSIGN_OR_RETURN(Secret mac, integ_.Compute(integ_key_.view(), {aad, covered}));
    if (CRYPTO_memcmp(mac.view().data(), icv.data(), icv_size_) != 0) {
      return absl::InvalidArgumentError("SK payload ICV mismatch");
    }
    ASSIGN_OR_RETURN(std::string padded,
                     AesCbcDecrypt(key_.view(), covered.substr(0, kAesBlockSize),
                                   covered.substr(kAesBlockSize)));
    return Unpad(std::move(padded));
  }

 private:
  Secret key_;
  Prf integ_;
  Secret integ_key_;
  size_t icv_size_;
};

absl::StatusOr<std::string> CbcCrypt(bool encrypt, absl::string_view key, absl::string_view iv,
                                     absl::string_view in) {
  const EVP_CIPHER* cipher = CbcCipher(key.size());
  if (cipher == nullptr) return absl::InvalidArgumentError("bad AES key length");
  if (iv.size() != kAesBlockSize) return absl::InvalidArgumentError("AES-CBC IV must be 16 bytes");
  if (in.size() % kAesBlockSize != 0) {
    return absl::InvalidArgumentError("AES-CBC input is not a multiple of the block size");
  }
  RETURN_IF_ERROR(CheckIntSize(in));
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr ||
      EVP_CipherInit_ex(ctx.get(), cipher, nullptr, Bytes(key), Bytes(iv), encrypt ? 1 : 0) != 1 ||
      EVP_CIPHER_CTX_set_padding(ctx.get(), 0) != 1) {
    return OpenSslError("AES-CBC init");
  }
  std::string out(in.size() + kAesBlockSize, '\0');
  int len = 0;
  int final_len = 0;
  if (EVP_CipherUpdate(ctx.get(), Bytes(out), &len, Bytes(in), static_cast<int>(in.size())) != 1 ||
      EVP_CipherFinal_ex(ctx.get(), Bytes(out) + len, &final_len) != 1) {
    WipeString(&out);
    return OpenSslError("AES-CBC");
  }
  out.resize(len + final_len);
  return out;
}

}  // namespace

absl::Status ValidateCipherSuite(const CipherSuite& suite) {
  if (suite.key_bits != 128 && suite.key_bits != 192 && suite.key_bits != 256) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported AES key length ", suite.key_bits));
  }
  switch (suite.encr) {
    case EncrId::kAesGcm16:
      if (suite.integ != IntegId::kNone) {
        return absl::InvalidArgumentError("AES-GCM takes no integrity transform");
      }
      return absl::OkStatus();
    case EncrId::kAesCbc:
      if (IntegKeySize(suite.integ) == 0) {
        return absl::InvalidArgumentError("AES-CBC needs an HMAC-SHA2 integrity transform");
      }
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported encryption transform ", static_cast<int>(suite.encr)));
}

size_t EncrKeyMaterialSize(const CipherSuite& suite) {
  const size_t key = suite.key_bits / 8;
  return suite.encr == EncrId::kAesGcm16 ? key + kGcmSaltSize : key;
}

size_t IntegKeySize(IntegId integ) {
  switch (integ) {
    case IntegId::kHmacSha2_256_128:
      return 32;
    case IntegId::kHmacSha2_384_192:
      return 48;
    case IntegId::kHmacSha2_512_256:
      return 64;
    case IntegId::kNone:
      return 0;
  }
  return 0;
}

absl::StatusOr<SkCipherPtr> CreateSkCipher(const CipherSuite& suite, const Secret& encr_key,
                                           const Secret& integ_key) {
  RETURN_IF_ERROR(ValidateCipherSuite(suite));
  if (encr_key.size() != EncrKeyMaterialSize(suite) ||
      integ_key.size() != IntegKeySize(suite.integ)) {
    return absl::InvalidArgumentError("SK key material has the wrong length");
  }
  const size_t key_size = suite.key_bits / 8;
  Secret key(std::string(encr_key.view().substr(0, key_size)));
  if (suite.encr == EncrId::kAesGcm16) {
    return SkCipherPtr(
        new AesGcmSkCipher(std::move(key), std::string(encr_key.view().substr(key_size))));
  }
  PrfId hmac = PrfId::kHmacSha2_256;
  if (suite.integ == IntegId::kHmacSha2_384_192) hmac = PrfId::kHmacSha2_384;
  if (suite.integ == IntegId::kHmacSha2_512_256) hmac = PrfId::kHmacSha2_512;
  ASSIGN_OR_RETURN(Prf integ, Prf::Create(hmac));
  // The ICV is the HMAC truncated to half its length (RFC 4868).
  const size_t icv_size = integ.output_size() / 2;
  return SkCipherPtr(new AesCbcHmacSkCipher(std::move(key), std::move(integ), integ_key, icv_size));
}

absl::StatusOr<std::string> AesGcmSeal(absl::string_view key, absl::string_view nonce,
                                       absl::string_view aad, absl::string_view plaintext) {
  const EVP_CIPHER* cipher = GcmCipher(key.size());
  if (cipher == nullptr) return absl::InvalidArgumentError("bad AES key length");
  if (nonce.size() != kGcmNonceSize)
    return absl::InvalidArgumentError("GCM nonce must be 12 bytes");
  RETURN_IF_ERROR(CheckIntSize(aad));
  RETURN_IF_ERROR(CheckIntSize(plaintext));
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr ||
      EVP_EncryptInit_ex(ctx.get(), cipher, nullptr, Bytes(key), Bytes(nonce)) != 1) {
    return OpenSslError("AES-GCM init");
  }
  std::string out(plaintext.size() + kGcmTagSize, '\0');
  int len = 0;
  if (!aad.empty() &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, Bytes(aad), static_cast<int>(aad.size())) != 1) {
    return OpenSslError("AES-GCM AAD");
  }
  int written = 0;
  if (!plaintext.empty()) {
    if (EVP_EncryptUpdate(ctx.get(), Bytes(out), &written, Bytes(plaintext),
                          static_cast<int>(plaintext.size())) != 1) {
      return OpenSslError("AES-GCM encrypt");
    }
  }
  if (EVP_EncryptFinal_ex(ctx.get(), Bytes(out) + written, &len) != 1 ||
      static_cast<size_t>(written + len) != plaintext.size() ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kGcmTagSize,
                          Bytes(out) + plaintext.size()) != 1) {
    return OpenSslError("AES-GCM final");
  }
  return out;
}

absl::StatusOr<std::string> AesGcmOpen(absl::string_view key, absl::string_view nonce,
                                       absl::string_view aad, absl::string_view sealed) {
  const EVP_CIPHER* cipher = GcmCipher(key.size());
  if (cipher == nullptr) return absl::InvalidArgumentError("bad AES key length");
  if (nonce.size() != kGcmNonceSize)
    return absl::InvalidArgumentError("GCM nonce must be 12 bytes");
  if (sealed.size() < kGcmTagSize) return absl::InvalidArgumentError("AES-GCM input too short");
  RETURN_IF_ERROR(CheckIntSize(aad));
  RETURN_IF_ERROR(CheckIntSize(sealed));
  const absl::string_view ciphertext = sealed.substr(0, sealed.size() - kGcmTagSize);
  std::string tag(sealed.substr(ciphertext.size()));
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr ||
      EVP_DecryptInit_ex(ctx.get(), cipher, nullptr, Bytes(key), Bytes(nonce)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kGcmTagSize, Bytes(tag)) != 1) {
    return OpenSslError("AES-GCM init");
  }
  std::string out(ciphertext.size() + kAesBlockSize, '\0');
  int len = 0;
  if (!aad.empty() &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, Bytes(aad), static_cast<int>(aad.size())) != 1) {
    return OpenSslError("AES-GCM AAD");
  }
  int written = 0;
  if (!ciphertext.empty() && EVP_DecryptUpdate(ctx.get(), Bytes(out), &written, Bytes(ciphertext),
                                               static_cast<int>(ciphertext.size())) != 1) {
    WipeString(&out);
    return OpenSslError("AES-GCM decrypt");
  }
  // The tag is checked (in constant time) by the final call.
  if (EVP_DecryptFinal_ex(ctx.get(), Bytes(out) + written, &len) != 1) {
    WipeString(&out);
    ERR_clear_error();
    return absl::InvalidArgumentError("SK payload ICV mismatch");
  }
  out.resize(written + len);
  return out;
}

absl::StatusOr<std::string> AesCbcEncrypt(absl::string_view key, absl::string_view iv,
                                          absl::string_view plaintext) {
  return CbcCrypt(true, key, iv, plaintext);
}

absl::StatusOr<std::string> AesCbcDecrypt(absl::string_view key, absl::string_view iv,
                                          absl::string_view ciphertext) {
  return CbcCrypt(false, key, iv, ciphertext);
}

}  // namespace strait::ike
