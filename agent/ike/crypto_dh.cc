#include "agent/ike/crypto_dh.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/dh.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/params.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "agent/ike/crypto_secret.h"
#include "common/status_macros.h"

namespace strait::ike {
namespace {

enum class Kind { kModp, kEcp, kX25519 };

struct GroupInfo {
  DhGroup group;
  Kind kind;
  const char* name;    // OpenSSL group name (or key type for X25519).
  int nid;             // Curve NID for ECP, for the test-only factory.
  size_t public_size;  // KE payload data length.
  size_t secret_size;  // g^ir length.
};

constexpr GroupInfo kGroups[] = {
    {DhGroup::kModp2048, Kind::kModp, "modp_2048", NID_undef, 256, 256},
    {DhGroup::kModp3072, Kind::kModp, "modp_3072", NID_undef, 384, 384},
    {DhGroup::kModp4096, Kind::kModp, "modp_4096", NID_undef, 512, 512},
    {DhGroup::kEcp256, Kind::kEcp, "P-256", NID_X9_62_prime256v1, 64, 32},
    {DhGroup::kEcp384, Kind::kEcp, "P-384", NID_secp384r1, 96, 48},
    {DhGroup::kEcp521, Kind::kEcp, "P-521", NID_secp521r1, 132, 66},
    {DhGroup::kCurve25519, Kind::kX25519, "X25519", NID_X25519, 32, 32},
};

const GroupInfo* FindGroup(DhGroup group) {
  for (const GroupInfo& info : kGroups) {
    if (info.group == group) return &info;
  }
  return nullptr;
}

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
struct BnDeleter {
  void operator()(BIGNUM* b) const { BN_clear_free(b); }
};
struct BnCtxDeleter {
  void operator()(BN_CTX* c) const { BN_CTX_free(c); }
};
struct ParamBldDeleter {
  void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); }
};
struct ParamDeleter {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct EcGroupDeleter {
  void operator()(EC_GROUP* g) const { EC_GROUP_free(g); }
};
struct EcPointDeleter {
  void operator()(EC_POINT* p) const { EC_POINT_free(p); }
};

using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;

absl::Status OpenSslError(absl::StatusCode code, absl::string_view what) {
  const unsigned long err = ERR_get_error();
  ERR_clear_error();
  char buf[256] = {0};
  if (err != 0) ERR_error_string_n(err, buf, sizeof(buf));
  return absl::Status(code, absl::StrCat(what, ": ", buf));
}

const unsigned char* Bytes(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

// Builds a key of `info`'s type from OSSL_PARAMs.
absl::StatusOr<PkeyPtr> KeyFromParams(const GroupInfo& info, OSSL_PARAM_BLD* bld, int selection,
                                      absl::StatusCode code) {
  std::unique_ptr<OSSL_PARAM, ParamDeleter> params(OSSL_PARAM_BLD_to_param(bld));
  if (params == nullptr) return OpenSslError(absl::StatusCode::kInternal, "OSSL_PARAM_BLD");
  PkeyCtxPtr ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, info.kind == Kind::kModp ? "DH" : "EC", nullptr));
  if (ctx == nullptr || EVP_PKEY_fromdata_init(ctx.get()) != 1) {
    return OpenSslError(absl::StatusCode::kInternal, "EVP_PKEY_fromdata_init");
  }
  EVP_PKEY* key = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &key, selection, params.get()) != 1) {
    return OpenSslError(code, "invalid key exchange value");
  }
  return PkeyPtr(key);
}

absl::StatusOr<std::string> EncodePublicValue(const GroupInfo& info, EVP_PKEY* key) {
  std::string out(info.public_size, '\0');
  auto* data = reinterpret_cast<unsigned char*>(out.data());
  switch (info.kind) {
    case Kind::kModp: {
      BIGNUM* raw = nullptr;
      if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PUB_KEY, &raw) != 1) {
        return OpenSslError(absl::StatusCode::kInternal, "DH public key");
      }
      BnPtr pub(raw);
      if (BN_bn2binpad(pub.get(), data, out.size()) != static_cast<int>(out.size())) {
        return absl::InternalError("DH public value longer than the prime");
      }
      return out;
    }
    case Kind::kEcp: {
      std::string point(info.public_size + 1, '\0');
      size_t len = 0;
      if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
                                          reinterpret_cast<unsigned char*>(point.data()),
                                          point.size(), &len) != 1 ||
          len != point.size() || point[0] != 0x04) {
        return OpenSslError(absl::StatusCode::kInternal, "EC public key");
      }
      return point.substr(1);
    }
    case Kind::kX25519: {
      size_t len = out.size();
      if (EVP_PKEY_get_raw_public_key(key, data, &len) != 1 || len != out.size()) {
        return OpenSslError(absl::StatusCode::kInternal, "X25519 public key");
      }
      return out;
    }
  }
  return absl::InternalError("unreachable");
}

// Parses and validates the peer's KE data into a public key.
absl::StatusOr<PkeyPtr> PeerKey(const GroupInfo& info, EVP_PKEY* own, absl::string_view peer) {
  if (peer.size() != info.public_size) {
    return absl::InvalidArgumentError(absl::StrCat("key exchange data for group ",
                                                   static_cast<int>(info.group), " has ",
                                                   peer.size(), " bytes, want ", info.public_size));
  }
  switch (info.kind) {
    case Kind::kModp: {
      BIGNUM* raw_p = nullptr;
      if (EVP_PKEY_get_bn_param(own, OSSL_PKEY_PARAM_FFC_P, &raw_p) != 1) {
        return OpenSslError(absl::StatusCode::kInternal, "DH prime");
      }
      BnPtr p_minus_1(raw_p);
      BnPtr y(BN_bin2bn(Bytes(peer), peer.size(), nullptr));
      if (y == nullptr || BN_sub_word(p_minus_1.get(), 1) != 1) {
        return OpenSslError(absl::StatusCode::kInternal, "BIGNUM");
      }
      // RFC 7296 §5 / NIST SP 800-56A: 1 < y < p-1.
      if (BN_cmp(y.get(), BN_value_one()) <= 0 || BN_cmp(y.get(), p_minus_1.get()) >= 0) {
        return absl::InvalidArgumentError("MODP key exchange value out of range");
      }
      std::unique_ptr<OSSL_PARAM_BLD, ParamBldDeleter> bld(OSSL_PARAM_BLD_new());
      if (bld == nullptr ||
          OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, info.name, 0) !=
              1 ||
          OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, y.get()) != 1) {
        return OpenSslError(absl::StatusCode::kInternal, "OSSL_PARAM_BLD");
      }
      return KeyFromParams(info, bld.get(), EVP_PKEY_PUBLIC_KEY,
                           absl::StatusCode::kInvalidArgument);
    }
    case Kind::kEcp: {
      std::string point(1, '\x04');
      point.append(peer.data(), peer.size());
      std::unique_ptr<OSSL_PARAM_BLD, ParamBldDeleter> bld(OSSL_PARAM_BLD_new());
      if (bld == nullptr ||
          OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, info.name, 0) !=
              1 ||
          OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                           point.size()) != 1) {
        return OpenSslError(absl::StatusCode::kInternal, "OSSL_PARAM_BLD");
      }
      // Decoding the point checks that it lies on the curve.
      return KeyFromParams(info, bld.get(), EVP_PKEY_PUBLIC_KEY,
                           absl::StatusCode::kInvalidArgument);
    }
    case Kind::kX25519: {
      EVP_PKEY* key =
          EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, Bytes(peer), peer.size());
      if (key == nullptr) return OpenSslError(absl::StatusCode::kInvalidArgument, "X25519 value");
      return PkeyPtr(key);
    }
  }
  return absl::InternalError("unreachable");
}

class OpenSslDiffieHellman : public DiffieHellman {
 public:
  static absl::StatusOr<DiffieHellmanPtr> Create(const GroupInfo& info, PkeyPtr key) {
    ASSIGN_OR_RETURN(std::string public_value, EncodePublicValue(info, key.get()));
    return DiffieHellmanPtr(
        new OpenSslDiffieHellman(info, std::move(key), std::move(public_value)));
  }

  // DiffieHellman
  DhGroup group() const override { return info_.group; }
  const std::string& public_value() const override { return public_value_; }
  absl::StatusOr<Secret> ComputeSharedSecret(absl::string_view peer_public_value) const override {
    ASSIGN_OR_RETURN(PkeyPtr peer, PeerKey(info_, key_.get(), peer_public_value));
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key_.get(), nullptr));
    if (ctx == nullptr || EVP_PKEY_derive_init(ctx.get()) != 1) {
      return OpenSslError(absl::StatusCode::kInternal, "EVP_PKEY_derive_init");
    }
    // g^ir keeps its leading zeros (RFC 7296 §2.14).
    if (info_.kind == Kind::kModp && EVP_PKEY_CTX_set_dh_pad(ctx.get(), 1) != 1) {
      return OpenSslError(absl::StatusCode::kInternal, "EVP_PKEY_CTX_set_dh_pad");
    }
    // Also runs OpenSSL's public key check (for MODP: y^q == 1 mod p).
    if (EVP_PKEY_derive_set_peer(ctx.get(), peer.get()) != 1) {
      return OpenSslError(absl::StatusCode::kInvalidArgument, "peer key exchange value rejected");
    }
    SecretBuffer secret(info_.secret_size);
    size_t len = secret.size();
    // X25519 fails here on an all-zero result (a small-order peer point).
    if (EVP_PKEY_derive(ctx.get(), secret.data(), &len) != 1) {
      return OpenSslError(absl::StatusCode::kInvalidArgument, "key exchange failed");
    }
    if (len != info_.secret_size) return absl::InternalError("shared secret has the wrong length");
    return std::move(secret).Release();
  }

 private:
  OpenSslDiffieHellman(const GroupInfo& info, PkeyPtr key, std::string public_value)
      : info_(info), key_(std::move(key)), public_value_(std::move(public_value)) {}

  const GroupInfo& info_;
  PkeyPtr key_;
  std::string public_value_;
};

}  // namespace

size_t DhPublicValueSize(DhGroup group) {
  const GroupInfo* info = FindGroup(group);
  return info == nullptr ? 0 : info->public_size;
}

absl::StatusOr<DiffieHellmanPtr> CreateDiffieHellman(DhGroup group) {
  const GroupInfo* info = FindGroup(group);
  if (info == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported key exchange method ", static_cast<int>(group)));
  }
  const char* type = info->kind == Kind::kModp ? "DH" : info->kind == Kind::kEcp ? "EC" : "X25519";
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  if (ctx == nullptr || EVP_PKEY_keygen_init(ctx.get()) != 1) {
    return OpenSslError(absl::StatusCode::kInternal, "EVP_PKEY_keygen_init");
  }
  if (info->kind != Kind::kX25519 && EVP_PKEY_CTX_set_group_name(ctx.get(), info->name) != 1) {
    return OpenSslError(absl::StatusCode::kInternal, "EVP_PKEY_CTX_set_group_name");
  }
  EVP_PKEY* key = nullptr;
  if (EVP_PKEY_generate(ctx.get(), &key) != 1) {
    return OpenSslError(absl::StatusCode::kInternal, "EVP_PKEY_generate");
  }
  return OpenSslDiffieHellman::Create(*info, PkeyPtr(key));
}

absl::StatusOr<DiffieHellmanPtr> CreateDiffieHellmanForTest(DhGroup group,
                                                            absl::string_view private_key) {
  const GroupInfo* info = FindGroup(group);
  if (info == nullptr) return absl::InvalidArgumentError("unsupported key exchange method");
  switch (info->kind) {
    case Kind::kModp:
      return absl::UnimplementedError("fixed MODP private keys are not supported");
    case Kind::kX25519: {
      EVP_PKEY* key = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, Bytes(private_key),
                                                   private_key.size());
      if (key == nullptr) return OpenSslError(absl::StatusCode::kInvalidArgument, "X25519 key");
      return OpenSslDiffieHellman::Create(*info, PkeyPtr(key));
    }
    case Kind::kEcp: {
      if (private_key.size() != info->secret_size) {
        return absl::InvalidArgumentError("ECP private key has the wrong length");
      }
      // OpenSSL 3.0 does not derive the public point on import: compute it.
      std::unique_ptr<EC_GROUP, EcGroupDeleter> ec(EC_GROUP_new_by_curve_name(info->nid));
      std::unique_ptr<EC_POINT, EcPointDeleter> point(ec ? EC_POINT_new(ec.get()) : nullptr);
      std::unique_ptr<BN_CTX, BnCtxDeleter> bn_ctx(BN_CTX_new());
      BnPtr priv(BN_bin2bn(Bytes(private_key), private_key.size(), nullptr));
      if (point == nullptr || bn_ctx == nullptr || priv == nullptr ||
          EC_POINT_mul(ec.get(), point.get(), priv.get(), nullptr, nullptr, bn_ctx.get()) != 1) {
        return OpenSslError(absl::StatusCode::kInternal, "EC_POINT_mul");
      }
      std::string pub(info->public_size + 1, '\0');
      if (EC_POINT_point2oct(ec.get(), point.get(), POINT_CONVERSION_UNCOMPRESSED,
                             reinterpret_cast<unsigned char*>(pub.data()), pub.size(),
                             bn_ctx.get()) != pub.size()) {
        return OpenSslError(absl::StatusCode::kInternal, "EC_POINT_point2oct");
      }
      std::unique_ptr<OSSL_PARAM_BLD, ParamBldDeleter> bld(OSSL_PARAM_BLD_new());
      if (bld == nullptr ||
          OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, info->name, 0) !=
              1 ||
          OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, pub.data(),
                                           pub.size()) != 1 ||
          OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PRIV_KEY, priv.get()) != 1) {
        return OpenSslError(absl::StatusCode::kInternal, "OSSL_PARAM_BLD");
      }
      ASSIGN_OR_RETURN(PkeyPtr key, KeyFromParams(*info, bld.get(), EVP_PKEY_KEYPAIR,
                                                  absl::StatusCode::kInvalidArgument));
      return OpenSslDiffieHellman::Create(*info, std::move(key));
    }
  }
  return absl::InternalError("unreachable");
}

}  // namespace strait::ike
