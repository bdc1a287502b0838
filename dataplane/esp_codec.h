#ifndef STRAIT_DATAPLANE_ESP_CODEC_H_
#define STRAIT_DATAPLANE_ESP_CODEC_H_

// Tunnel-mode ESP (RFC 4303) packet codec for one SA: builds and opens the
// ESP payload (SPI | sequence number | IV | ciphertext | ICV) around an inner
// IPv4/IPv6 packet. Only bytes and bounds live here; sequence numbers and
// anti-replay belong to the caller (replay_window.h), so do addresses and
// UDP encapsulation (RFC 3948: the UDP payload is exactly this ESP payload).
//
// The wire format is the Linux kernel's and strongSwan libipsec's:
//   AES-GCM (RFC 4106): 8-byte explicit IV, nonce = 4-byte salt (the last
//     four bytes of the key material) | IV, AAD = SPI | seq (32 bits) or
//     SPI | seq_hi | seq_lo with ESN (RFC 4106 §5), ciphertext padded to 4
//     bytes, ICV 8, 12 or 16 bytes (transforms 18, 19, 20).
//   AES-CBC (RFC 3602) + HMAC-SHA2 (RFC 4868): random 16-byte IV, ciphertext
//     padded to 16 bytes, ICV = truncated HMAC over SPI | seq | IV |
//     ciphertext (| seq_hi with ESN, RFC 4303 §3.3.2.1).
//   Padding 1, 2, 3, ... (RFC 4303 §2.4), then pad length and next header.
//
// An EspCodec holds OpenSSL contexts keyed once at creation and reused for
// every packet; it is not thread-safe (callers serialise per SA). Key
// material is copied into OpenSSL contexts (which wipe it when freed) and
// the salt is wiped on destruction.

#include <openssl/evp.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/secret.h"

namespace strait::dataplane {

// IKEv2 transform IDs (IANA "IKEv2 Transform Type 1 / 3").
inline constexpr uint16_t kEncrAesCbc = 12;
inline constexpr uint16_t kEncrAesGcm8 = 18;
inline constexpr uint16_t kEncrAesGcm12 = 19;
inline constexpr uint16_t kEncrAesGcm16 = 20;
inline constexpr uint16_t kIntegNone = 0;
inline constexpr uint16_t kIntegHmacSha256_128 = 12;
inline constexpr uint16_t kIntegHmacSha384_192 = 13;
inline constexpr uint16_t kIntegHmacSha512_256 = 14;

// ESP next-header values of tunnel mode (IANA protocol numbers).
inline constexpr uint8_t kNextHeaderIpv4 = 4;
inline constexpr uint8_t kNextHeaderIpv6 = 41;
inline constexpr uint8_t kNextHeaderNoNext = 59;  // RFC 4303 §2.6 dummy packet.

inline constexpr size_t kEspHeaderSize = 8;  // SPI | sequence number.

// The algorithms and keys of one SA, as the IKE side negotiated them.
struct EspTransform {
  uint16_t encr_id = 0;
  int key_bits = 0;  // Cipher key length, without the GCM salt.
  uint16_t integ_id = kIntegNone;
  Secret encr_key;  // GCM: key | 4-byte salt.
  Secret integ_key;
};

// Fills `out` with `size` unpredictable bytes; false on failure.
using RandomBytes = std::function<bool(uint8_t* out, size_t size)>;
// RAND_bytes.
RandomBytes DefaultRandomBytes();

// The two halves of an ESP header.
struct EspHeader {
  uint32_t spi = 0;
  uint32_t seq_lo = 0;
};

// What Decapsulate found inside.
struct EspPlaintext {
  uint8_t next_header = 0;
  size_t size = 0;  // Inner packet bytes at the start of the output buffer.
};

class EspCodec {
 public:
  // InvalidArgument for an unknown or inconsistent transform or a key of
  // the wrong length; Internal when OpenSSL refuses. `random` supplies CBC
  // IVs and the per-SA GCM IV mask; DefaultRandomBytes() when empty.
  static absl::StatusOr<std::unique_ptr<EspCodec>> Create(uint32_t spi,
                                                          const EspTransform& transform, bool esn,
                                                          RandomBytes random = nullptr);
  ~EspCodec();
  EspCodec(const EspCodec&) = delete;
  EspCodec& operator=(const EspCodec&) = delete;

  // SPI and sequence number of an ESP payload; InvalidArgument when it is
  // shorter than an ESP header. Used to find the SA before decrypting.
  static absl::StatusOr<EspHeader> ParseHeader(absl::Span<const uint8_t> payload);

  // Writes the ESP payload for `inner` (an IP packet, `next_header` 4 or
  // 41) with 64-bit sequence number `seq` into `out` (resized). Only the
  // low 32 bits travel; without ESN `seq` must fit in 32 bits
  // (InvalidArgument otherwise, as for seq 0). Internal on OpenSSL
  // failures.
  absl::Status Encapsulate(uint64_t seq, absl::Span<const uint8_t> inner, uint8_t next_header,
                           std::vector<uint8_t>* out);

  // Opens `payload` (as received, ESP header first). `seq_hi` are the high
  // 32 bits of the sequence number with ESN (from the replay window's
  // estimate), ignored otherwise. On success the inner packet is at the
  // start of `out` (resized to hold the whole plaintext). Errors:
  //   InvalidArgument: too short or misaligned to be ESP of this SA (no
  //     ICV was checked);
  //   Unauthenticated: the ICV does not verify (tampered, wrong key or
  //     wrong seq_hi);
  //   DataLoss: authentic, but the trailer is inconsistent (pad length
  //     beyond the payload, padding bytes not 1, 2, 3, ...).
  absl::StatusOr<EspPlaintext> Decapsulate(absl::Span<const uint8_t> payload, uint32_t seq_hi,
                                           std::vector<uint8_t>* out);

  // Bytes an inner packet of `inner_size` takes as ESP payload (without
  // the outer IP and UDP headers).
  size_t EncapsulatedSize(size_t inner_size) const;
  // The largest overhead of any inner size: header, IV, ICV, pad length,
  // next header and the worst-case padding.
  size_t MaxOverhead() const;

  uint32_t spi() const { return spi_; }
  bool esn() const { return esn_; }
  bool aead() const { return aead_; }
  size_t iv_size() const { return iv_size_; }
  size_t icv_size() const { return icv_size_; }
  size_t block_size() const { return block_size_; }

 private:
  struct CipherCtxDeleter {
    void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
  };
  struct MacCtxDeleter {
    void operator()(EVP_MAC_CTX* ctx) const { EVP_MAC_CTX_free(ctx); }
  };
  using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;
  using MacCtxPtr = std::unique_ptr<EVP_MAC_CTX, MacCtxDeleter>;

  EspCodec(uint32_t spi, bool esn, RandomBytes random) : spi_(spi), esn_(esn), random_(random) {}

  absl::Status InitGcm(const EspTransform& transform);
  absl::Status InitCbcHmac(const EspTransform& transform);
  // Writes the IV of packet `seq` at `iv`.
  absl::Status MakeIv(uint64_t seq, uint8_t* iv);
  // The truncated HMAC of `data` (| seq_hi with ESN) into `icv`.
  absl::Status ComputeIcv(absl::Span<const uint8_t> data, uint32_t seq_hi, uint8_t* icv);

  const uint32_t spi_;
  const bool esn_;
  RandomBytes random_;
  bool aead_ = false;
  size_t iv_size_ = 0;
  size_t icv_size_ = 0;
  size_t block_size_ = 0;
  std::array<uint8_t, 4> salt_{};  // GCM nonce prefix; wiped.
  uint64_t iv_mask_ = 0;           // GCM: IV = seq ^ mask (unique per SA instance).
  // CBC: random bytes fetched 4 KiB at a time (one RAND_bytes call costs
  // microseconds in OpenSSL 3, as much as encrypting the packet); wiped.
  std::vector<uint8_t> iv_pool_;
  size_t iv_pool_used_ = 0;
  CipherCtxPtr encrypt_;
  CipherCtxPtr decrypt_;
  MacCtxPtr mac_;  // CBC: HMAC keyed once, re-initialised per packet.
};
using EspCodecPtr = std::unique_ptr<EspCodec>;

// The largest inner packet whose ESP-in-UDP datagram fits a path MTU of
// `path_mtu` with every supported algorithm: outer IPv4 (20) or IPv6 (40)
// header, UDP (8), ESP header (8), IV (up to 16), ICV (up to 32), pad
// length and next header (2), ciphertext aligned to 16. A device with this
// MTU never makes the outer packet exceed the path: 1406 (IPv4) and 1390
// (IPv6) for a 1500-byte path.
int InnerMtuForPath(int path_mtu, bool ipv6_outer);

}  // namespace strait::dataplane

#endif  // STRAIT_DATAPLANE_ESP_CODEC_H_
