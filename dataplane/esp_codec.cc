#include "dataplane/esp_codec.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace strait::dataplane {
namespace {

constexpr size_t kGcmIvSize = 8;
constexpr size_t kGcmSaltSize = 4;
constexpr size_t kGcmNonceSize = kGcmSaltSize + kGcmIvSize;
constexpr size_t kGcmBlock = 4;  // RFC 4303 §2.4: 4-byte alignment only.
constexpr size_t kCbcBlock = 16;
constexpr size_t kMaxInnerSize = 65535;
constexpr size_t kIvPoolSize = 4096;

void StoreBe32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

uint32_t LoadBe32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

void StoreBe64(uint8_t* p, uint64_t v) {
  StoreBe32(p, static_cast<uint32_t>(v >> 32));
  StoreBe32(p + 4, static_cast<uint32_t>(v));
}

size_t RoundUp(size_t n, size_t block) { return (n + block - 1) / block * block; }

absl::Status OpenSslError(const char* what) {
  return absl::InternalError(absl::StrCat("OpenSSL: ", what, " failed"));
}

// The additional authenticated data of AES-GCM (RFC 4106 §5).
size_t BuildAad(uint32_t spi, uint64_t seq, bool esn, uint8_t* aad) {
  StoreBe32(aad, spi);
  if (esn) {
    StoreBe64(aad + 4, seq);
    return 12;
  }
  StoreBe32(aad + 4, static_cast<uint32_t>(seq));
  return 8;
}

const EVP_CIPHER* GcmCipher(int key_bits) {
  switch (key_bits) {
    case 128:
      return EVP_aes_128_gcm();
    case 192:
      return EVP_aes_192_gcm();
    case 256:
      return EVP_aes_256_gcm();
  }
  return nullptr;
}

const EVP_CIPHER* CbcCipher(int key_bits) {
  switch (key_bits) {
    case 128:
      return EVP_aes_128_cbc();
    case 192:
      return EVP_aes_192_cbc();
    case 256:
      return EVP_aes_256_cbc();
  }
  return nullptr;
}

}  // namespace

RandomBytes DefaultRandomBytes() {
  return [](uint8_t* out, size_t size) { return RAND_bytes(out, static_cast<int>(size)) == 1; };
}

absl::StatusOr<std::unique_ptr<EspCodec>> EspCodec::Create(uint32_t spi,
                                                           const EspTransform& transform, bool esn,
                                                           RandomBytes random) {
  if (spi == 0) return absl::InvalidArgumentError("ESP SPI 0 is reserved (RFC 4303 §2.1)");
  if (!random) random = DefaultRandomBytes();
  std::unique_ptr<EspCodec> codec(new EspCodec(spi, esn, std::move(random)));
  switch (transform.encr_id) {
    case kEncrAesGcm8:
    case kEncrAesGcm12:
    case kEncrAesGcm16:
      RETURN_IF_ERROR(codec->InitGcm(transform));
      break;
    case kEncrAesCbc:
      RETURN_IF_ERROR(codec->InitCbcHmac(transform));
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("ESP encryption transform ", transform.encr_id,
                       " is not supported (AES-GCM 18/19/20, AES-CBC 12)"));
  }
  return codec;
}

EspCodec::~EspCodec() {
  if (!iv_pool_.empty()) OPENSSL_cleanse(iv_pool_.data(), iv_pool_.size());
  OPENSSL_cleanse(salt_.data(), salt_.size());
  OPENSSL_cleanse(&iv_mask_, sizeof(iv_mask_));
}

absl::Status EspCodec::InitGcm(const EspTransform& transform) {
  if (transform.integ_id != kIntegNone) {
    return absl::InvalidArgumentError("AES-GCM carries its own ICV: integrity must be none");
  }
  const EVP_CIPHER* cipher = GcmCipher(transform.key_bits);
  if (cipher == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("AES-GCM key length ", transform.key_bits, " bits (128, 192 or 256)"));
  }
  const size_t key_size = static_cast<size_t>(transform.key_bits) / 8;
  if (transform.encr_key.size() != key_size + kGcmSaltSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("AES-GCM key material is ", transform.encr_key.size(), " bytes, want ",
                     key_size + kGcmSaltSize, " (key | 4-byte salt)"));
  }
  aead_ = true;
  iv_size_ = kGcmIvSize;
  block_size_ = kGcmBlock;
  icv_size_ = transform.encr_id == kEncrAesGcm8 ? 8 : transform.encr_id == kEncrAesGcm12 ? 12 : 16;
  const auto* key = reinterpret_cast<const uint8_t*>(transform.encr_key.view().data());
  std::memcpy(salt_.data(), key + key_size, kGcmSaltSize);
  uint8_t mask[8];
  if (!random_(mask, sizeof(mask))) return absl::InternalError("no random bytes for the IV mask");
  iv_mask_ = 0;
  for (uint8_t b : mask) iv_mask_ = (iv_mask_ << 8) | b;
  OPENSSL_cleanse(mask, sizeof(mask));

  encrypt_.reset(EVP_CIPHER_CTX_new());
  decrypt_.reset(EVP_CIPHER_CTX_new());
  if (!encrypt_ || !decrypt_) return OpenSslError("EVP_CIPHER_CTX_new");
  if (EVP_EncryptInit_ex(encrypt_.get(), cipher, nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(encrypt_.get(), EVP_CTRL_AEAD_SET_IVLEN, kGcmNonceSize, nullptr) != 1 ||
      EVP_EncryptInit_ex(encrypt_.get(), nullptr, nullptr, key, nullptr) != 1) {
    return OpenSslError("AES-GCM encryption key setup");
  }
  if (EVP_DecryptInit_ex(decrypt_.get(), cipher, nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(decrypt_.get(), EVP_CTRL_AEAD_SET_IVLEN, kGcmNonceSize, nullptr) != 1 ||
      EVP_DecryptInit_ex(decrypt_.get(), nullptr, nullptr, key, nullptr) != 1) {
    return OpenSslError("AES-GCM decryption key setup");
  }
  return absl::OkStatus();
}

absl::Status EspCodec::InitCbcHmac(const EspTransform& transform) {
  const EVP_CIPHER* cipher = CbcCipher(transform.key_bits);
  if (cipher == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("AES-CBC key length ", transform.key_bits, " bits (128, 192 or 256)"));
  }
  if (transform.encr_key.size() != static_cast<size_t>(transform.key_bits) / 8) {
    return absl::InvalidArgumentError(absl::StrCat("AES-CBC key is ", transform.encr_key.size(),
                                                   " bytes, want ", transform.key_bits / 8));
  }
  const char* digest = nullptr;
  size_t integ_key_size = 0;
  switch (transform.integ_id) {
    case kIntegHmacSha256_128:
      digest = "SHA256";
      integ_key_size = 32;
      icv_size_ = 16;
      break;
    case kIntegHmacSha384_192:
      digest = "SHA384";
      integ_key_size = 48;
      icv_size_ = 24;
      break;
    case kIntegHmacSha512_256:
      digest = "SHA512";
      integ_key_size = 64;
      icv_size_ = 32;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("ESP integrity transform ", transform.integ_id,
                       " is not supported with AES-CBC (HMAC-SHA2 12, 13, 14)"));
  }
  // RFC 4868 §2.1.1: the key is as long as the hash output.
  if (transform.integ_key.size() != integ_key_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("HMAC key is ", transform.integ_key.size(), " bytes, want ", integ_key_size));
  }
  aead_ = false;
  iv_size_ = kCbcBlock;
  block_size_ = kCbcBlock;

  const auto* key = reinterpret_cast<const uint8_t*>(transform.encr_key.view().data());
  encrypt_.reset(EVP_CIPHER_CTX_new());
  decrypt_.reset(EVP_CIPHER_CTX_new());
  if (!encrypt_ || !decrypt_) return OpenSslError("EVP_CIPHER_CTX_new");
  if (EVP_EncryptInit_ex(encrypt_.get(), cipher, nullptr, key, nullptr) != 1 ||
      EVP_CIPHER_CTX_set_padding(encrypt_.get(), 0) != 1 ||
      EVP_DecryptInit_ex(decrypt_.get(), cipher, nullptr, key, nullptr) != 1 ||
      EVP_CIPHER_CTX_set_padding(decrypt_.get(), 0) != 1) {
    return OpenSslError("AES-CBC key setup");
  }

  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (mac == nullptr) return OpenSslError("EVP_MAC_fetch(HMAC)");
  mac_.reset(EVP_MAC_CTX_new(mac));
  EVP_MAC_free(mac);  // The context holds its own reference.
  if (!mac_) return OpenSslError("EVP_MAC_CTX_new");
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>(digest), 0),
      OSSL_PARAM_construct_end()};
  const auto* integ_key = reinterpret_cast<const uint8_t*>(transform.integ_key.view().data());
  if (EVP_MAC_init(mac_.get(), integ_key, integ_key_size, params) != 1) {
    return OpenSslError("HMAC key setup");
  }
  return absl::OkStatus();
}

absl::StatusOr<EspHeader> EspCodec::ParseHeader(absl::Span<const uint8_t> payload) {
  if (payload.size() < kEspHeaderSize) {
    return absl::InvalidArgumentError("shorter than an ESP header");
  }
  return EspHeader{LoadBe32(payload.data()), LoadBe32(payload.data() + 4)};
}

size_t EspCodec::EncapsulatedSize(size_t inner_size) const {
  return kEspHeaderSize + iv_size_ + RoundUp(inner_size + 2, block_size_) + icv_size_;
}

size_t EspCodec::MaxOverhead() const {
  return kEspHeaderSize + iv_size_ + icv_size_ + 2 + (block_size_ - 1);
}

absl::Status EspCodec::MakeIv(uint64_t seq, uint8_t* iv) {
  if (aead_) {
    // RFC 4106 §3.1 asks only for uniqueness under the key. The sequence
    // number is unique within this SA; the random mask keeps IVs apart when
    // the same keys are installed again (e.g. after an agent restart) and
    // the sequence numbers start over.
    StoreBe64(iv, seq ^ iv_mask_);
    return absl::OkStatus();
  }
  // CBC needs unpredictable IVs (RFC 3602 §3).
  if (iv_pool_used_ + iv_size_ > iv_pool_.size()) {
    iv_pool_.resize(kIvPoolSize);
    if (!random_(iv_pool_.data(), iv_pool_.size())) {
      iv_pool_used_ = iv_pool_.size();
      return absl::InternalError("no random bytes for the CBC IV");
    }
    iv_pool_used_ = 0;
  }
  std::memcpy(iv, iv_pool_.data() + iv_pool_used_, iv_size_);
  OPENSSL_cleanse(iv_pool_.data() + iv_pool_used_, iv_size_);  // Used once only.
  iv_pool_used_ += iv_size_;
  return absl::OkStatus();
}

absl::Status EspCodec::ComputeIcv(absl::Span<const uint8_t> data, uint32_t seq_hi, uint8_t* icv) {
  uint8_t full[EVP_MAX_MD_SIZE];
  size_t full_size = 0;
  // A NULL key re-initialises with the key set at creation.
  if (EVP_MAC_init(mac_.get(), nullptr, 0, nullptr) != 1 ||
      EVP_MAC_update(mac_.get(), data.data(), data.size()) != 1) {
    return OpenSslError("HMAC");
  }
  if (esn_) {
    // RFC 4303 §3.3.2.1: the high half is authenticated, not sent.
    uint8_t hi[4];
    StoreBe32(hi, seq_hi);
    if (EVP_MAC_update(mac_.get(), hi, sizeof(hi)) != 1) return OpenSslError("HMAC");
  }
  if (EVP_MAC_final(mac_.get(), full, &full_size, sizeof(full)) != 1 || full_size < icv_size_) {
    return OpenSslError("HMAC final");
  }
  std::memcpy(icv, full, icv_size_);
  return absl::OkStatus();
}

absl::Status EspCodec::Encapsulate(uint64_t seq, absl::Span<const uint8_t> inner,
                                   uint8_t next_header, std::vector<uint8_t>* out) {
  if (seq == 0 || (!esn_ && seq > 0xffffffffULL)) {
    return absl::InvalidArgumentError(absl::StrCat("sequence number ", seq, " out of range"));
  }
  if (inner.size() > kMaxInnerSize) {
    return absl::InvalidArgumentError("inner packet larger than an IP packet");
  }
  const size_t padded = RoundUp(inner.size() + 2, block_size_);
  const size_t pad_length = padded - inner.size() - 2;
  out->resize(kEspHeaderSize + iv_size_ + padded + icv_size_);
  uint8_t* header = out->data();
  StoreBe32(header, spi_);
  StoreBe32(header + 4, static_cast<uint32_t>(seq));
  uint8_t* iv = header + kEspHeaderSize;
  RETURN_IF_ERROR(MakeIv(seq, iv));
  uint8_t* body = iv + iv_size_;
  if (!inner.empty()) std::memcpy(body, inner.data(), inner.size());
  for (size_t i = 0; i < pad_length; ++i) body[inner.size() + i] = static_cast<uint8_t>(i + 1);
  body[padded - 2] = static_cast<uint8_t>(pad_length);
  body[padded - 1] = next_header;
  uint8_t* icv = body + padded;

  int n = 0;
  int final_n = 0;
  if (aead_) {
    uint8_t nonce[kGcmNonceSize];
    std::memcpy(nonce, salt_.data(), kGcmSaltSize);
    std::memcpy(nonce + kGcmSaltSize, iv, kGcmIvSize);
    uint8_t aad[12];
    const size_t aad_size = BuildAad(spi_, seq, esn_, aad);
    if (EVP_EncryptInit_ex(encrypt_.get(), nullptr, nullptr, nullptr, nonce) != 1 ||
        EVP_EncryptUpdate(encrypt_.get(), nullptr, &n, aad, static_cast<int>(aad_size)) != 1 ||
        EVP_EncryptUpdate(encrypt_.get(), body, &n, body, static_cast<int>(padded)) != 1 ||
        EVP_EncryptFinal_ex(encrypt_.get(), body + n, &final_n) != 1 ||
        static_cast<size_t>(n) + static_cast<size_t>(final_n) != padded ||
        EVP_CIPHER_CTX_ctrl(encrypt_.get(), EVP_CTRL_AEAD_GET_TAG, static_cast<int>(icv_size_),
                            icv) != 1) {
      return OpenSslError("AES-GCM encryption");
    }
    return absl::OkStatus();
  }
  if (EVP_EncryptInit_ex(encrypt_.get(), nullptr, nullptr, nullptr, iv) != 1 ||
      EVP_EncryptUpdate(encrypt_.get(), body, &n, body, static_cast<int>(padded)) != 1 ||
      EVP_EncryptFinal_ex(encrypt_.get(), body + n, &final_n) != 1 ||
      static_cast<size_t>(n) + static_cast<size_t>(final_n) != padded) {
    return OpenSslError("AES-CBC encryption");
  }
  return ComputeIcv(absl::MakeConstSpan(header, icv - header), static_cast<uint32_t>(seq >> 32),
                    icv);
}

absl::StatusOr<EspPlaintext> EspCodec::Decapsulate(absl::Span<const uint8_t> payload,
                                                   uint32_t seq_hi, std::vector<uint8_t>* out) {
  const size_t fixed = kEspHeaderSize + iv_size_ + icv_size_;
  if (payload.size() < fixed + 2) return absl::InvalidArgumentError("ESP payload too short");
  const size_t ciphertext_size = payload.size() - fixed;
  if (!aead_ && ciphertext_size % block_size_ != 0) {
    return absl::InvalidArgumentError("ESP ciphertext not a multiple of the cipher block");
  }
  const uint8_t* header = payload.data();
  const uint8_t* iv = header + kEspHeaderSize;
  const uint8_t* ciphertext = iv + iv_size_;
  const uint8_t* icv = ciphertext + ciphertext_size;
  const uint64_t seq = (uint64_t{seq_hi} << 32) | LoadBe32(header + 4);
  out->resize(ciphertext_size);
  uint8_t* plain = out->data();

  int n = 0;
  int final_n = 0;
  if (aead_) {
    uint8_t nonce[kGcmNonceSize];
    std::memcpy(nonce, salt_.data(), kGcmSaltSize);
    std::memcpy(nonce + kGcmSaltSize, iv, kGcmIvSize);
    // The SPI as received is authenticated, as for CBC's HMAC over the header.
    uint8_t aad[12];
    const size_t aad_size = BuildAad(LoadBe32(header), seq, esn_, aad);
    uint8_t tag[16];
    std::memcpy(tag, icv, icv_size_);
    if (EVP_DecryptInit_ex(decrypt_.get(), nullptr, nullptr, nullptr, nonce) != 1 ||
        EVP_CIPHER_CTX_ctrl(decrypt_.get(), EVP_CTRL_AEAD_SET_TAG, static_cast<int>(icv_size_),
                            tag) != 1 ||
        EVP_DecryptUpdate(decrypt_.get(), nullptr, &n, aad, static_cast<int>(aad_size)) != 1 ||
        EVP_DecryptUpdate(decrypt_.get(), plain, &n, ciphertext,
                          static_cast<int>(ciphertext_size)) != 1) {
      return OpenSslError("AES-GCM decryption");
    }
    // The tag is compared in constant time inside OpenSSL.
    if (EVP_DecryptFinal_ex(decrypt_.get(), plain + n, &final_n) != 1) {
      // Never hand out (or keep) unauthenticated plaintext.
      OPENSSL_cleanse(plain, ciphertext_size);
      out->clear();
      return absl::UnauthenticatedError("ESP ICV mismatch");
    }
  } else {
    uint8_t expected[EVP_MAX_MD_SIZE];
    RETURN_IF_ERROR(ComputeIcv(absl::MakeConstSpan(header, icv - header), seq_hi, expected));
    if (CRYPTO_memcmp(expected, icv, icv_size_) != 0) {
      out->clear();
      return absl::UnauthenticatedError("ESP ICV mismatch");
    }
    if (EVP_DecryptInit_ex(decrypt_.get(), nullptr, nullptr, nullptr, iv) != 1 ||
        EVP_DecryptUpdate(decrypt_.get(), plain, &n, ciphertext,
                          static_cast<int>(ciphertext_size)) != 1 ||
        EVP_DecryptFinal_ex(decrypt_.get(), plain + n, &final_n) != 1) {
      return OpenSslError("AES-CBC decryption");
    }
  }

  const size_t pad_length = plain[ciphertext_size - 2];
  const uint8_t next_header = plain[ciphertext_size - 1];
  if (pad_length + 2 > ciphertext_size) {
    return absl::DataLossError("ESP pad length beyond the payload");
  }
  const size_t inner_size = ciphertext_size - 2 - pad_length;
  for (size_t i = 0; i < pad_length; ++i) {
    if (plain[inner_size + i] != static_cast<uint8_t>(i + 1)) {
      return absl::DataLossError("ESP padding is not 1, 2, 3, ... (RFC 4303 §2.4)");
    }
  }
  return EspPlaintext{next_header, inner_size};
}

int InnerMtuForPath(int path_mtu, bool ipv6_outer) {
  const int outer = (ipv6_outer ? 40 : 20) + 8;
  const int fixed = static_cast<int>(kEspHeaderSize) + 16 + 32;  // Header, IV, ICV.
  const int ciphertext = (path_mtu - outer - fixed) / 16 * 16;
  return ciphertext - 2;
}

}  // namespace strait::dataplane
