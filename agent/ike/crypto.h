#ifndef STRAIT_AGENT_IKE_CRYPTO_H_
#define STRAIT_AGENT_IKE_CRYPTO_H_

// The IKEv2 crypto layer, all through OpenSSL EVP:
//  - crypto_prf.h:  PRF (HMAC-SHA2-256/384/512) and prf+.
//  - crypto_dh.h:   key exchange (MODP 14/15/16, ECP 19/20/21, Curve25519).
//  - crypto_sk.h:   SK payload protection (AES-GCM-16, AES-CBC + HMAC-SHA2).
//  - crypto_keys.h: IKE SA and child SA key derivation.
// Key material lives in Secret / SecretBuffer (crypto_secret.h) and is
// wiped on every path.

#include "agent/ike/crypto_dh.h"      // IWYU pragma: export
#include "agent/ike/crypto_keys.h"    // IWYU pragma: export
#include "agent/ike/crypto_prf.h"     // IWYU pragma: export
#include "agent/ike/crypto_secret.h"  // IWYU pragma: export
#include "agent/ike/crypto_sk.h"      // IWYU pragma: export

#endif  // STRAIT_AGENT_IKE_CRYPTO_H_
