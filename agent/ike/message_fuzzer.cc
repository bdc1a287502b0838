// Fuzz target for the IKEv2 message decoder: whatever decodes must encode
// and decode again to the same message, and encoding must be stable.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <variant>

#include "agent/ike/message.h"

namespace {

void Fail(const char* what) {
  std::fprintf(stderr, "message_fuzzer: %s\n", what);
  std::abort();
}

void CheckChain(const strait::ike::SkPayload& sk) {
  // Treat the ciphertext as if it were plaintext to exercise the inner
  // chain decoder.
  auto inner = strait::ike::DecodePayloadChain(sk.inner_next_payload, sk.encrypted);
  if (!inner.ok()) return;
  (void)strait::ike::VerifyPayloads(*inner);
  const strait::ike::Bytes encoded = strait::ike::EncodePayloadChain(*inner);
  auto again = strait::ike::DecodePayloadChain(strait::ike::FirstPayloadType(*inner), encoded);
  if (!again.ok()) Fail("re-encoded inner chain does not decode");
  if (*again != *inner) Fail("inner chain changed across encode/decode");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto message = strait::ike::DecodeMessage(absl::MakeConstSpan(data, size));
  if (!message.ok()) return 0;
  (void)strait::ike::Verify(*message);
  const strait::ike::Bytes encoded = strait::ike::EncodeMessage(*message);
  auto again = strait::ike::DecodeMessage(encoded);
  if (!again.ok()) Fail("re-encoded message does not decode");
  if (*again != *message) Fail("message changed across encode/decode");
  if (strait::ike::EncodeMessage(*again) != encoded) Fail("encoding is not stable");
  for (const strait::ike::Payload& payload : message->payloads) {
    if (const auto* sk = std::get_if<strait::ike::SkPayload>(&payload.body)) CheckChain(*sk);
  }
  return 0;
}
