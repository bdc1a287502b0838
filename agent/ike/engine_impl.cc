#include "agent/ike/engine_impl.h"

#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace strait::ike {

namespace {

absl::Status ValidateConfig(const EngineConfig& c) {
  auto valid_address = [](const Bytes& a) { return a.size() == 4 || a.size() == 16; };
  if (!valid_address(c.local.address) || !valid_address(c.remote.address)) {
    return absl::InvalidArgumentError("local and remote addresses must be IPv4 or IPv6");
  }
  if (c.psk.empty()) return absl::InvalidArgumentError("empty PSK");
  if (c.local_id.value.empty() || c.remote_id.value.empty()) {
    return absl::InvalidArgumentError("empty identity");
  }
  if (c.ike_proposals.empty() || c.esp_proposals.empty()) {
    return absl::InvalidArgumentError("IKE and ESP proposals are required");
  }
  if (c.ike_proposals.size() > 255 || c.esp_proposals.size() > 255) {
    return absl::InvalidArgumentError("too many proposals");
  }
  for (const auto& p : c.ike_proposals) {
    RETURN_IF_ERROR(ValidateCipherSuite(CipherSuiteOf(p)));
    RETURN_IF_ERROR(Prf::Create(static_cast<PrfId>(p.prf_id)).status());
    if (DhPublicValueSize(static_cast<DhGroup>(p.dh_group)) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("DH group ", p.dh_group, " unsupported"));
    }
  }
  for (const auto& p : c.esp_proposals) RETURN_IF_ERROR(ValidateCipherSuite(CipherSuiteOf(p)));
  if (c.local_ts.empty() || c.remote_ts.empty()) {
    return absl::InvalidArgumentError("traffic selectors are required");
  }
  for (const auto* list : {&c.local_ts, &c.remote_ts}) {
    for (const auto& r : *list) {
      if (!ValidTrafficSelector(r)) return absl::InvalidArgumentError("bad traffic selector");
    }
  }
  if (c.retransmit_timeouts.empty()) return absl::InvalidArgumentError("no retransmit timeouts");
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<EnginePtr> CreateEngine(EngineConfig config, Clock& clock, RandomSource& random,
                                       ChildSaSink& sink) {
  RETURN_IF_ERROR(ValidateConfig(config));
  return EnginePtr(std::make_unique<EngineImpl>(std::move(config), clock, random, sink));
}

absl::StatusOr<Bytes> EngineImpl::Encode(const Message& plain) {
  if (plain.header.exchange_type == kExchangeIkeSaInit) {
    RETURN_IF_ERROR(Verify(plain));
    return EncodeMessage(plain);
  }
  RETURN_IF_ERROR(VerifyPayloads(plain.payloads));
  const Bytes inner = EncodePayloadChain(plain.payloads);
  const size_t sealed_size = sa_.outbound->SealedSize(inner.size());
  Message outer;
  outer.header = plain.header;
  SkPayload sk;
  sk.inner_next_payload = FirstPayloadType(plain.payloads);
  sk.encrypted.resize(sealed_size);
  outer.payloads.push_back(MakePayload(kPayloadSk, std::move(sk)));
  Bytes bytes = EncodeMessage(outer);
  const size_t aad_size = bytes.size() - sealed_size;
  ASSIGN_OR_RETURN(
      std::string sealed,
      sa_.outbound->Seal(absl::string_view(reinterpret_cast<const char*>(bytes.data()), aad_size),
                         AsStringView(inner)));
  if (sealed.size() != sealed_size) return absl::InternalError("SK size mismatch");
  std::memcpy(bytes.data() + aad_size, sealed.data(), sealed.size());
  return bytes;
}

absl::StatusOr<Message> EngineImpl::Decrypt(Message m, absl::Span<const uint8_t> datagram) {
  if (sa_.inbound == nullptr || m.payloads.empty() || m.payloads.back().type != kPayloadSk) {
    return absl::FailedPreconditionError("no SK payload or no keys");
  }
  const auto& sk = std::get<SkPayload>(m.payloads.back().body);
  if (sk.encrypted.size() > datagram.size()) return absl::InvalidArgumentError("SK size");
  const size_t aad_size = datagram.size() - sk.encrypted.size();
  ASSIGN_OR_RETURN(
      std::string plain,
      sa_.inbound->Open(absl::string_view(reinterpret_cast<const char*>(datagram.data()), aad_size),
                        AsStringView(sk.encrypted)));
  ASSIGN_OR_RETURN(std::vector<Payload> inner,
                   DecodePayloadChain(sk.inner_next_payload, BytesOf(plain)));
  RETURN_IF_ERROR(VerifyPayloads(inner));
  m.payloads = std::move(inner);
  return m;
}

void EngineImpl::Send(Bytes bytes, const Endpoint& to) {
  ++counters_.datagrams_sent;
  datagrams_.push_back(OutboundDatagram{std::move(bytes), to});
}

void EngineImpl::SendRequest(Bytes bytes, uint8_t exchange, uint32_t message_id) {
  pending_ = true;
  pending_bytes_ = bytes;
  pending_exchange_ = exchange;
  pending_message_id_ = message_id;
  transmissions_ = 1;
  retransmit_at_ = clock_.Now() + config_.retransmit_timeouts[0];
  Send(std::move(bytes));
}

void EngineImpl::SendResponse(Bytes bytes, absl::Span<const uint8_t> request, uint32_t message_id) {
  have_cached_ = true;
  cached_message_id_ = message_id;
  cached_request_.assign(request.begin(), request.end());
  cached_response_ = bytes;
  Send(std::move(bytes), reply_to_);
}

absl::Status EngineImpl::SendInitRequest() {
  Message m;
  m.header = Header(kExchangeIkeSaInit, 0, false);
  RETURN_IF_ERROR(init_task_->Build(m));
  ASSIGN_OR_RETURN(Bytes bytes, Encode(m));
  sa_.init_request = bytes;
  SendRequest(std::move(bytes), kExchangeIkeSaInit, 0);
  state_ = State::kInitSent;
  return absl::OkStatus();
}

absl::Status EngineImpl::SendAuthRequest() {
  auth_task_ = std::make_unique<IkeAuthTask>(sa_, config_, random_);
  Message m;
  m.header = Header(kExchangeIkeAuth, 1, false);
  RETURN_IF_ERROR(auth_task_->Build(m));
  ASSIGN_OR_RETURN(Bytes bytes, Encode(m));
  SendRequest(std::move(bytes), kExchangeIkeAuth, 1);
  state_ = State::kAuthSent;
  return absl::OkStatus();
}

absl::Status EngineImpl::Initiate() {
  if (state_ != State::kIdle) return absl::FailedPreconditionError("engine is not idle");
  sa_.initiator = true;
  sa_.spi_i = RandomSpi64(random_);
  sa_.dh_group = config_.ike_proposals[0].dh_group;
  init_task_ = std::make_unique<IkeSaInitTask>(sa_, config_, random_);
  absl::Status status = SendInitRequest();
  if (!status.ok()) Fail(FailureReason::kInternalError, status.ToString());
  return status;
}

void EngineImpl::Fail(FailureReason reason, absl::string_view detail) {
  LOG_INFO("IKE SA failed")
      .With("reason", FailureReasonName(reason))
      .With("detail", detail)
      .With("initiator", sa_.initiator);
  EngineEvent e;
  e.kind = EngineEvent::Kind::kFailed;
  e.ike_spi_i = sa_.spi_i;
  e.ike_spi_r = sa_.spi_r;
  e.initiator = sa_.initiator;
  e.reason = reason;
  e.detail = std::string(detail);
  events_.push_back(std::move(e));
  state_ = State::kFailed;
  pending_ = false;
  half_open_deadline_.reset();
}

void EngineImpl::ReportIkeSa() {
  EngineEvent e;
  e.kind = EngineEvent::Kind::kIkeSaEstablished;
  e.ike_spi_i = sa_.spi_i;
  e.ike_spi_r = sa_.spi_r;
  e.initiator = sa_.initiator;
  e.algorithms = sa_.algorithms;
  e.local_behind_nat = sa_.local_behind_nat;
  e.remote_behind_nat = sa_.remote_behind_nat;
  events_.push_back(std::move(e));
}

void EngineImpl::InstallChild(ChildSa& child) {
  if (absl::Status s = sink_.InstallChildSa(child); !s.ok()) {
    Fail(FailureReason::kInternalError, s.ToString());
    return;
  }
  EngineEvent e;
  e.kind = EngineEvent::Kind::kChildSaEstablished;
  e.ike_spi_i = sa_.spi_i;
  e.ike_spi_r = sa_.spi_r;
  e.initiator = sa_.initiator;
  e.algorithms = child.algorithms;
  e.child_inbound_spi = child.inbound_spi;
  e.child_outbound_spi = child.outbound_spi;
  e.local_ts = child.local_ts;
  e.remote_ts = child.remote_ts;
  events_.push_back(std::move(e));
  state_ = State::kEstablished;
  half_open_deadline_.reset();
  LOG_INFO("CHILD SA established")
      .With("initiator", sa_.initiator)
      .With("spi_in", static_cast<uint64_t>(child.inbound_spi))
      .With("spi_out", static_cast<uint64_t>(child.outbound_spi));
}

void EngineImpl::HandleDatagram(absl::Span<const uint8_t> datagram, const Endpoint& from) {
  ++counters_.datagrams_received;
  absl::StatusOr<Message> m = DecodeMessage(datagram);
  if (!m.ok() || !Verify(*m).ok()) {
    ++counters_.malformed_dropped;
    return;
  }
  // This slice runs one SA with one configured peer; NAT-T port floating
  // comes with the UDP 4500 move.
  if (from.address != config_.remote.address) {
    ++counters_.unexpected_dropped;
    return;
  }
  if (m->header.response) {
    HandleResponse(*m, datagram, from);
  } else {
    reply_to_ = from;
    HandleRequest(*m, datagram, from);
  }
}

void EngineImpl::HandleResponse(const Message& m, absl::Span<const uint8_t> datagram,
                                const Endpoint& from) {
  if (!sa_.initiator || m.header.initiator || m.header.spi_i != sa_.spi_i) {
    ++counters_.unexpected_dropped;
    return;
  }
  if (!pending_ || m.header.message_id != pending_message_id_ ||
      m.header.exchange_type != pending_exchange_) {
    if (m.header.message_id < pending_message_id_ || !pending_) {
      ++counters_.stale_dropped;
    } else {
      ++counters_.unexpected_dropped;
    }
    return;
  }
  if (pending_exchange_ == kExchangeIkeSaInit) {
    const TaskResult r = init_task_->Process(m, from);
    if (r.kind == TaskResult::Kind::kIgnore) {
      ++counters_.stale_dropped;
      return;
    }
    if (r.kind == TaskResult::Kind::kFailed) {
      Fail(r.reason, r.detail);
      return;
    }
    pending_ = false;
    if (r.kind == TaskResult::Kind::kRetry) {
      LOG_INFO("IKE_SA_INIT retry with another DH group").With("group", sa_.dh_group);
      if (absl::Status s = SendInitRequest(); !s.ok())
        Fail(FailureReason::kInternalError, s.ToString());
      return;
    }
    sa_.dh.reset();  // The private value is not needed any more.
    sa_.init_response.assign(datagram.begin(), datagram.end());
    if (absl::Status s = SendAuthRequest(); !s.ok())
      Fail(FailureReason::kInternalError, s.ToString());
    return;
  }
  if (m.header.spi_r != sa_.spi_r) {
    ++counters_.unexpected_dropped;
    return;
  }
  absl::StatusOr<Message> plain = Decrypt(m, datagram);
  if (!plain.ok()) {
    ++counters_.undecryptable_dropped;
    return;
  }
  pending_ = false;
  const TaskResult r = auth_task_->Process(*plain);
  if (auth_task_->authenticated()) ReportIkeSa();
  if (r.kind != TaskResult::Kind::kDone) {
    Fail(r.reason, r.detail);
    return;
  }
  InstallChild(auth_task_->child());
}

void EngineImpl::HandleRequest(const Message& m, absl::Span<const uint8_t> datagram,
                               const Endpoint& from) {
  if (!m.header.initiator || sa_.initiator) {
    // Requests from our responder (INFORMATIONAL, CREATE_CHILD_SA) come with
    // later slices.
    ++counters_.unexpected_dropped;
    return;
  }
  const bool ours = have_cached_ && m.header.spi_i == sa_.spi_i &&
                    (m.header.exchange_type == kExchangeIkeSaInit || m.header.spi_r == sa_.spi_r);
  if (ours && m.header.message_id == cached_message_id_) {
    if (absl::MakeConstSpan(cached_request_) == datagram) {
      ++counters_.responses_resent;
      ++counters_.datagrams_sent;
      datagrams_.push_back(OutboundDatagram{cached_response_, from});
    } else {
      ++counters_.stale_dropped;
    }
    return;
  }
  if (ours && m.header.message_id < cached_message_id_) {
    ++counters_.stale_dropped;
    return;
  }
  if (m.header.exchange_type == kExchangeIkeSaInit && m.header.message_id == 0 &&
      m.header.spi_r == 0 && state_ == State::kIdle) {
    HandleInitRequest(m, datagram, from);
    return;
  }
  if (ours && state_ == State::kAuthWait && m.header.exchange_type == kExchangeIkeAuth &&
      m.header.message_id == 1) {
    HandleAuthRequest(m, datagram);
    return;
  }
  ++counters_.unexpected_dropped;
}

void EngineImpl::HandleInitRequest(const Message& m, absl::Span<const uint8_t> datagram,
                                   const Endpoint& from) {
  sa_ = IkeSa();
  sa_.initiator = false;
  init_task_ = std::make_unique<IkeSaInitTask>(sa_, config_, random_);
  const TaskResult r = init_task_->Process(m, from);
  if (r.kind == TaskResult::Kind::kIgnore) {
    ++counters_.malformed_dropped;
    sa_ = IkeSa();
    return;
  }
  Message response;
  if (init_task_->rejected()) {
    // Stateless answer (NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD): SPIr stays 0
    // and nothing is kept, so the initiator may try again.
    IkeHeader h = m.header;
    h.spi_r = 0;
    h.initiator = false;
    h.response = true;
    response.header = h;
    sa_.spi_i = m.header.spi_i;
    if (init_task_->Build(response).ok()) {
      absl::StatusOr<Bytes> bytes = Encode(response);
      if (bytes.ok()) Send(*std::move(bytes), reply_to_);
    }
    if (r.kind == TaskResult::Kind::kFailed) {
      Fail(r.reason, r.detail);
      state_ = State::kIdle;
    }
    sa_ = IkeSa();
    return;
  }
  if (r.kind != TaskResult::Kind::kDone) {
    Fail(r.reason, r.detail);
    return;
  }
  response.header = Header(kExchangeIkeSaInit, 0, true);
  absl::Status built = init_task_->Build(response);
  sa_.dh.reset();  // The private value is not needed any more.
  absl::StatusOr<Bytes> bytes = built.ok() ? Encode(response) : built;
  if (!bytes.ok()) {
    Fail(FailureReason::kInternalError, bytes.status().ToString());
    return;
  }
  sa_.init_request.assign(datagram.begin(), datagram.end());
  sa_.init_response = *bytes;
  SendResponse(*std::move(bytes), datagram, 0);
  state_ = State::kAuthWait;
  absl::Duration total;
  for (absl::Duration d : config_.retransmit_timeouts) total += d;
  half_open_deadline_ = clock_.Now() + total;
}

void EngineImpl::HandleAuthRequest(const Message& m, absl::Span<const uint8_t> datagram) {
  absl::StatusOr<Message> plain = Decrypt(m, datagram);
  if (!plain.ok()) {
    ++counters_.undecryptable_dropped;
    return;
  }
  auth_task_ = std::make_unique<IkeAuthTask>(sa_, config_, random_);
  const TaskResult r = auth_task_->Process(*plain);
  Message response;
  response.header = Header(kExchangeIkeAuth, 1, true);
  absl::Status built = auth_task_->Build(response);
  absl::StatusOr<Bytes> bytes = built.ok() ? Encode(response) : built;
  if (bytes.ok()) {
    SendResponse(*std::move(bytes), datagram, 1);
  } else {
    Fail(FailureReason::kInternalError, bytes.status().ToString());
    return;
  }
  if (auth_task_->authenticated()) ReportIkeSa();
  if (r.kind != TaskResult::Kind::kDone) {
    Fail(r.reason, r.detail);
    return;
  }
  InstallChild(auth_task_->child());
}

void EngineImpl::Tick(absl::Time now) {
  if (half_open_deadline_.has_value() && now >= *half_open_deadline_) {
    Fail(FailureReason::kPeerNotResponding, "no IKE_AUTH after IKE_SA_INIT");
    return;
  }
  if (!pending_ || now < retransmit_at_) return;
  if (transmissions_ >= config_.retransmit_timeouts.size()) {
    Fail(FailureReason::kPeerNotResponding,
         absl::StrCat("no response after ", transmissions_, " transmissions"));
    return;
  }
  retransmit_at_ = now + config_.retransmit_timeouts[transmissions_];
  ++transmissions_;
  ++counters_.retransmits_sent;
  if (pending_exchange_ >= kExchangeIkeSaInit && pending_exchange_ <= kExchangeInformational) {
    ++counters_.retransmits_by_exchange[pending_exchange_ - kExchangeIkeSaInit];
  }
  Send(pending_bytes_);
}

std::optional<absl::Time> EngineImpl::NextDeadline() const {
  if (pending_) return retransmit_at_;
  return half_open_deadline_;
}
}  // namespace strait::ike
