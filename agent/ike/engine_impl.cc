#include "agent/ike/engine_impl.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace strait::ike {

namespace {

absl::Status ValidateConfig(const EngineConfig& c) {
  auto valid_address = [](const Bytes& a) { return a.size() == 4 || a.size() == 16; };
  if (!valid_address(c.local.address) || !valid_address(c.remote.address)) {
    return absl::InvalidArgumentError("local and remote addresses must be IPv4 or IPv6");
  }
  if ((c.credentials == nullptr) != (c.trust_anchors == nullptr)) {
    return absl::InvalidArgumentError(
        "certificate auth needs both credentials and CA certificates");
  }
  if (c.credentials == nullptr && c.psk.empty()) return absl::InvalidArgumentError("empty PSK");
  if (c.credentials != nullptr) {
    if (absl::Status s =
            c.credentials->CheckIdentity(static_cast<uint8_t>(c.local_id.type), c.local_id.value);
        !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("local identity \"", IdentityText(c.local_id),
                       "\" is not in our certificate: ", s.message()));
    }
  }
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
  if (c.dpd_interval < absl::ZeroDuration() || c.dpd_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("DPD interval must not be negative, its timeout positive");
  }
  if (c.fragment_size < kMinFragmentSize || c.fragment_size > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("fragment size must be ", kMinFragmentSize, "..65535 bytes"));
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<EnginePtr> CreateEngine(EngineConfig config, Clock& clock, RandomSource& random,
                                       ChildSaSink& sink) {
  RETURN_IF_ERROR(ValidateConfig(config));
  return EnginePtr(std::make_unique<EngineImpl>(std::move(config), clock, random, sink));
}

absl::StatusOr<Bytes> EngineImpl::Encode(const IkeSa& sa, const Message& plain) {
  if (plain.header.exchange_type == kExchangeIkeSaInit) {
    RETURN_IF_ERROR(Verify(plain));
    return EncodeMessage(plain);
  }
  RETURN_IF_ERROR(VerifyPayloads(plain.payloads));
  const Bytes inner = EncodePayloadChain(plain.payloads);
  const size_t sealed_size = sa.outbound->SealedSize(inner.size());
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
      sa.outbound->Seal(absl::string_view(reinterpret_cast<const char*>(bytes.data()), aad_size),
                        AsStringView(inner)));
  if (sealed.size() != sealed_size) return absl::InternalError("SK size mismatch");
  std::memcpy(bytes.data() + aad_size, sealed.data(), sealed.size());
  return bytes;
}

absl::StatusOr<Message> EngineImpl::Decrypt(const IkeSa& sa, Message m,
                                            absl::Span<const uint8_t> datagram) {
  if (reassembled_) {
    // HandleFragment() authenticated and decrypted it, fragment by fragment.
    Authenticated(sa);
    return m;
  }
  if (sa.inbound == nullptr || m.payloads.empty() || m.payloads.back().type != kPayloadSk) {
    return absl::FailedPreconditionError("no SK payload or no keys");
  }
  const auto& sk = std::get<SkPayload>(m.payloads.back().body);
  if (sk.encrypted.size() > datagram.size()) return absl::InvalidArgumentError("SK size");
  const size_t aad_size = datagram.size() - sk.encrypted.size();
  ASSIGN_OR_RETURN(
      std::string plain,
      sa.inbound->Open(absl::string_view(reinterpret_cast<const char*>(datagram.data()), aad_size),
                       AsStringView(sk.encrypted)));
  ASSIGN_OR_RETURN(std::vector<Payload> inner,
                   DecodePayloadChain(sk.inner_next_payload, BytesOf(plain)));
  RETURN_IF_ERROR(VerifyPayloads(inner));
  m.payloads = std::move(inner);
  Authenticated(sa);
  return m;
}

void EngineImpl::Authenticated(const IkeSa& sa) {
  last_received_ = clock_.Now();
  if ((sa.local_behind_nat || sa.remote_behind_nat) && !(current_from_ == remote_)) {
    // RFC 7296 §2.23: follow the peer's NAT mapping, on authenticated
    // messages only; the CHILD SAs' encapsulation follows.
    // (The initiator's float from 500 to 4500 during IKE_AUTH is no move.)
    remote_ = current_from_;
    if (state_ != State::kEstablished && state_ != State::kDeleting) return;
    ++counters_.peer_moves;
    LOG_INFO("peer's NAT mapping moved").With("port", static_cast<uint64_t>(remote_.port));
    for (ChildSa& child : children_) {
      SetEncapsulation(child);
      if (absl::Status s = sink_.MoveChildSa(child, remote_); !s.ok()) {
        LOG_WARNING("cannot move the CHILD SA to the peer's new mapping")
            .With("spi_in", static_cast<uint64_t>(child.inbound_spi))
            .With("error", s.ToString());
      }
    }
  }
}

std::vector<Bytes> EngineImpl::Datagrams(Bytes message) {
  const size_t max = MaxFragmentMessageSize(config_.fragment_size, remote_.address.size() == 16);
  if (!sa_.fragmentation || sa_.outbound == nullptr || message.size() <= max ||
      message.size() <= kIkeHeaderSize || message[18] == kExchangeIkeSaInit) {
    return {std::move(message)};
  }
  absl::StatusOr<std::vector<Bytes>> fragments = FragmentMessage(*sa_.outbound, message, max);
  if (!fragments.ok()) {
    // Unfragmented, it may still get through (or be retransmitted).
    LOG_WARNING("cannot fragment an IKE message").With("error", fragments.status().ToString());
    return {std::move(message)};
  }
  LOG_DEBUG("IKE message fragmented")
      .With("bytes", static_cast<uint64_t>(message.size()))
      .With("fragments", static_cast<uint64_t>(fragments->size()));
  return *std::move(fragments);
}

void EngineImpl::SendAll(const std::vector<Bytes>& datagrams, const Endpoint& to) {
  if (datagrams.size() > 1) counters_.fragments_sent += datagrams.size();
  for (const Bytes& d : datagrams) Send(d, to);
}

void EngineImpl::Send(Bytes bytes, const Endpoint& to) {
  last_sent_ = clock_.Now();
  ++counters_.datagrams_sent;
  datagrams_.push_back(OutboundDatagram{std::move(bytes), to});
}

void EngineImpl::SendRequest(Bytes bytes, uint8_t exchange, uint32_t message_id) {
  pending_ = true;
  pending_datagrams_ = Datagrams(std::move(bytes));
  pending_exchange_ = exchange;
  pending_message_id_ = message_id;
  transmissions_ = 1;
  retransmit_at_ = clock_.Now() + config_.retransmit_timeouts[0];
  response_fragments_.Clear();
  SendAll(pending_datagrams_, remote_);
}

void EngineImpl::SendResponse(Bytes bytes, absl::Span<const uint8_t> request, uint32_t message_id) {
  have_cached_ = true;
  cached_message_id_ = message_id;
  cached_request_.assign(request.begin(), request.end());
  cached_response_ = Datagrams(std::move(bytes));
  SendAll(cached_response_, reply_to_);
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
  auth_task_ = std::make_unique<IkeAuthTask>(sa_, config_, random_, clock_);
  Message m;
  m.header = Header(kExchangeIkeAuth, 1, false);
  RETURN_IF_ERROR(auth_task_->Build(m));
  ASSIGN_OR_RETURN(Bytes bytes, Encode(m));
  SendRequest(std::move(bytes), kExchangeIkeAuth, 1);
  state_ = State::kAuthSent;
  return absl::OkStatus();
}

void EngineImpl::SendAuthenticationFailed() {
  // RFC 7296 §2.21.2: the responder believes the IKE SA is up; tell it.
  // Sent once: we keep no state to retransmit it with.
  Message m;
  m.header = Header(kExchangeInformational, 2, false);
  NotifyPayload n;
  n.type = kNotifyAuthenticationFailed;
  m.payloads.push_back(MakePayload(kPayloadNotify, std::move(n)));
  if (absl::StatusOr<Bytes> bytes = Encode(m); bytes.ok()) Send(*std::move(bytes));
}

EngineEvent EngineImpl::NewEvent(EngineEvent::Kind kind) const {
  EngineEvent e;
  e.kind = kind;
  e.ike_spi_i = sa_.spi_i;
  e.ike_spi_r = sa_.spi_r;
  e.initiator = sa_.initiator;
  return e;
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
  EngineEvent e = NewEvent(EngineEvent::Kind::kFailed);
  e.reason = reason;
  e.detail = std::string(detail);
  events_.push_back(std::move(e));
  state_ = State::kFailed;
  pending_ = false;
  half_open_deadline_.reset();
  old_sas_.clear();
  deleted_sas_.clear();
  ike_rekey_task_.reset();
  peer_ike_sa_.reset();
  ike_rekey_at_.reset();
  deferred_outbound_.clear();  // The agent takes the CHILD SAs out.
}

void EngineImpl::ReportIkeSa() {
  EngineEvent e = NewEvent(EngineEvent::Kind::kIkeSaEstablished);
  e.algorithms = sa_.algorithms;
  e.local_behind_nat = sa_.local_behind_nat;
  e.remote_behind_nat = sa_.remote_behind_nat;
  e.remote_identity = auth_task_->remote_identity();
  e.auth_method = auth_task_->auth_method();
  e.initial_contact = auth_task_->peer_initial_contact();
  LOG_INFO("IKE SA established")
      .With("initiator", sa_.initiator)
      .With("peer", e.remote_identity)
      .With("auth", e.auth_method);
  events_.push_back(std::move(e));
}

void EngineImpl::SetEncapsulation(ChildSa& child) const {
  if (!sa_.local_behind_nat && !sa_.remote_behind_nat) return;
  child.udp_encapsulation = true;
  child.local_port = config_.nat_t_port != 0 ? config_.nat_t_port : config_.local.port;
  child.remote_port = remote_.port;
}

void EngineImpl::InstallChild(ChildSa& child) {
  SetEncapsulation(child);
  if (absl::Status s = sink_.InstallChildSa(child); !s.ok()) {
    Fail(FailureReason::kInternalError, s.ToString());
    return;
  }
  EngineEvent e = NewEvent(EngineEvent::Kind::kChildSaEstablished);
  e.algorithms = child.algorithms;
  e.child_inbound_spi = child.inbound_spi;
  e.child_outbound_spi = child.outbound_spi;
  e.local_ts = child.local_ts;
  e.remote_ts = child.remote_ts;
  events_.push_back(std::move(e));
  state_ = State::kEstablished;
  half_open_deadline_.reset();
  next_request_id_ = sa_.initiator ? 2 : 0;
  peer_next_id_ = sa_.initiator ? 0 : 2;
  last_received_ = clock_.Now();
  children_.push_back(child);
  ScheduleRekey();
  ScheduleIkeRekey();
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
  // One SA with one configured peer. Only behind a NAT, once established,
  // may the peer's address change (RFC 7296 §2.23): Decrypt() follows it
  // on messages that authenticate.
  const bool may_move = (sa_.local_behind_nat || sa_.remote_behind_nat) &&
                        (state_ == State::kEstablished || state_ == State::kDeleting);
  if (from.address != config_.remote.address && from.address != remote_.address && !may_move) {
    ++counters_.unexpected_dropped;
    return;
  }
  current_from_ = from;
  for (DeletedIkeSa& gone : deleted_sas_) {
    if (m->header.spi_i != gone.spi_i || m->header.spi_r != gone.spi_r) continue;
    if (!m->header.response && m->header.initiator != gone.initiator &&
        m->header.message_id == gone.message_id && absl::MakeConstSpan(gone.request) == datagram) {
      ++counters_.responses_resent;
      for (const Bytes& d : gone.response) {
        ++counters_.datagrams_sent;
        datagrams_.push_back(OutboundDatagram{d, from});
      }
    } else {
      ++counters_.stale_dropped;
    }
    return;
  }
  if (!m->header.response && peer_ike_sa_.has_value() && m->header.spi_i == peer_ike_sa_->spi_i &&
      m->header.spi_r == peer_ike_sa_->spi_r && !PeerDeletesItsNewSa(*m, datagram)) {
    // Its new SA is not ours yet: the peer sends again.
    ++counters_.unexpected_dropped;
    return;
  }
  for (OldIkeSa& old : old_sas_) {
    if (m->header.spi_i == old.sa.spi_i && m->header.spi_r == old.sa.spi_r) {
      if (!m->header.response) reply_to_ = from;
      HandleOldSaMessage(old, *m, datagram, from);
      return;
    }
  }
  if (!m->payloads.empty() && m->payloads.back().type == kPayloadSkf) {
    if (!m->header.response) reply_to_ = from;
    HandleFragment(*m, datagram, from);
    return;
  }
  if (m->header.response) {
    HandleResponse(*m, datagram, from);
  } else {
    reply_to_ = from;
    HandleRequest(*m, datagram, from);
  }
}

void EngineImpl::HandleFragment(const Message& m, absl::Span<const uint8_t> datagram,
                                const Endpoint& from) {
  const auto& skf = std::get<SkfPayload>(m.payloads.back().body);
  const IkeHeader& h = m.header;
  // Fragments come once the IKE SA has keys, from the other role, and only
  // when both ends offered fragmentation (RFC 7383 §2.5).
  if (!sa_.fragmentation || sa_.inbound == nullptr || h.initiator == sa_.initiator ||
      h.spi_i != sa_.spi_i || h.spi_r != sa_.spi_r || h.exchange_type == kExchangeIkeSaInit) {
    ++counters_.unexpected_dropped;
    return;
  }
  const absl::Time now = clock_.Now();
  Reassembler& reassembler = h.response ? response_fragments_ : request_fragments_;
  counters_.reassembly_dropped += reassembler.Expire(now);
  // The message ID checks of HandleResponse() and HandleRequest() come
  // first, so that stale fragments cost no decryption.
  if (h.response) {
    if (!pending_ || h.message_id != pending_message_id_ || h.exchange_type != pending_exchange_) {
      ++(h.message_id < pending_message_id_ || !pending_ ? counters_.stale_dropped
                                                         : counters_.unexpected_dropped);
      return;
    }
  } else {
    if (have_cached_ && h.message_id == cached_message_id_) {
      // A retransmitted request (RFC 7383 §2.6.1): the whole response goes
      // again, on the request's first fragment only.
      if (skf.fragment_number == 1 && absl::MakeConstSpan(cached_request_) == datagram) {
        ++counters_.responses_resent;
        SendAll(cached_response_, from);
      } else {
        ++counters_.stale_dropped;
      }
      return;
    }
    std::optional<uint32_t> expected;
    if (state_ == State::kAuthWait && h.exchange_type == kExchangeIkeAuth) {
      expected = 1;
    } else if (state_ == State::kEstablished || state_ == State::kDeleting) {
      expected = peer_next_id_;
    }
    if (!expected.has_value() || h.message_id != *expected) {
      ++(expected.has_value() && h.message_id < *expected ? counters_.stale_dropped
                                                          : counters_.unexpected_dropped);
      return;
    }
  }
  // RFC 7383 §2.6: each fragment is authenticated before it is kept.
  absl::StatusOr<std::string> plain = OpenFragment(*sa_.inbound, datagram, skf);
  if (!plain.ok()) {
    ++counters_.undecryptable_dropped;
    return;
  }
  ++counters_.fragments_received;
  switch (reassembler.Add(h.message_id, skf, *std::move(plain), datagram, now)) {
    case Reassembler::Result::kStored:
      return;
    case Reassembler::Result::kComplete:
      break;
    case Reassembler::Result::kDuplicate:
    case Reassembler::Result::kSmallerTotal:
    case Reassembler::Result::kTooMany:
      ++counters_.reassembly_dropped;
      return;
    case Reassembler::Result::kTooLarge:
      LOG_INFO("IKE message of too many fragment bytes dropped")
          .With("message_id", static_cast<uint64_t>(h.message_id));
      ++counters_.reassembly_dropped;
      return;
  }
  Reassembler::Completed done = reassembler.TakeMessage();
  ++counters_.messages_reassembled;
  absl::StatusOr<std::vector<Payload>> inner = DecodePayloadChain(done.first_payload, done.inner);
  if (!inner.ok() || !VerifyPayloads(*inner).ok()) {
    ++counters_.malformed_dropped;
    return;
  }
  Message reassembled;
  reassembled.header = h;
  reassembled.payloads = *std::move(inner);
  reassembled_ = true;
  if (h.response) {
    HandleResponse(reassembled, done.first_datagram, from);
  } else {
    HandleRequest(reassembled, done.first_datagram, from);
  }
  reassembled_ = false;
}

void EngineImpl::HandleResponse(const Message& m, absl::Span<const uint8_t> datagram,
                                const Endpoint& from) {
  if (m.header.initiator == sa_.initiator || m.header.spi_i != sa_.spi_i) {
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
      LOG_INFO("IKE_SA_INIT retry (new DH group or cookie)").With("group", sa_.dh_group);
      if (absl::Status s = SendInitRequest(); !s.ok())
        Fail(FailureReason::kInternalError, s.ToString());
      return;
    }
    sa_.dh.reset();  // The private value is not needed any more.
    sa_.init_response.assign(datagram.begin(), datagram.end());
    if ((sa_.local_behind_nat || sa_.remote_behind_nat) && config_.nat_t_port != 0) {
      remote_.port = config_.nat_t_port;
    }
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
  if (pending_exchange_ == kExchangeInformational) {
    request_deadline_.reset();
    if (state_ == State::kDeleting) {
      Deleted(false, "deleted");
      return;
    }
    if (child_delete_in_flight_ != 0) {
      RemoveChild(std::exchange(child_delete_in_flight_, 0), /*by_peer=*/false);
    }
    SendQueued();
    return;
  }
  if (pending_exchange_ == kExchangeCreateChildSa) {
    request_deadline_.reset();
    if (ike_rekey_task_ != nullptr) {
      HandleIkeRekeyResponse(*plain);
    } else {
      HandleRekeyResponse(*plain);
    }
    if (!pending_) SendQueued();
    return;
  }
  const TaskResult r = auth_task_->Process(*plain);
  if (auth_task_->authenticated()) ReportIkeSa();
  if (auth_task_->peer_auth_failed()) SendAuthenticationFailed();
  if (r.kind != TaskResult::Kind::kDone) {
    Fail(r.reason, r.detail);
    return;
  }
  InstallChild(auth_task_->child());
}

void EngineImpl::HandleRequest(const Message& m, absl::Span<const uint8_t> datagram,
                               const Endpoint& from) {
  if (m.header.initiator == sa_.initiator) {
    // A request must come from the other role than ours.
    ++counters_.unexpected_dropped;
    return;
  }
  const bool ours = have_cached_ && m.header.spi_i == sa_.spi_i &&
                    (m.header.exchange_type == kExchangeIkeSaInit || m.header.spi_r == sa_.spi_r);
  if (ours && m.header.message_id == cached_message_id_) {
    if (absl::MakeConstSpan(cached_request_) == datagram) {
      ++counters_.responses_resent;
      SendAll(cached_response_, from);
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
  const bool sa_match = m.header.spi_i == sa_.spi_i && m.header.spi_r == sa_.spi_r &&
                        (state_ == State::kEstablished || state_ == State::kDeleting);
  if (sa_match && m.header.message_id == peer_next_id_ &&
      (m.header.exchange_type == kExchangeInformational ||
       m.header.exchange_type == kExchangeCreateChildSa)) {
    HandleEstablishedRequest(m, datagram);
    return;
  }
  if (sa_match && m.header.message_id < peer_next_id_) {
    ++counters_.stale_dropped;
    return;
  }
  ++counters_.unexpected_dropped;
}

void EngineImpl::HandleEstablishedRequest(const Message& m, absl::Span<const uint8_t> datagram) {
  absl::StatusOr<Message> plain = Decrypt(m, datagram);
  if (!plain.ok()) {
    ++counters_.undecryptable_dropped;
    return;
  }
  const uint32_t id = m.header.message_id;
  ++peer_next_id_;
  Message response;
  response.header = Header(m.header.exchange_type, id, true);
  auto respond = [&] {
    if (absl::StatusOr<Bytes> bytes = Encode(response); bytes.ok()) {
      SendResponse(*std::move(bytes), datagram, id);
    }
  };
  if (m.header.exchange_type == kExchangeCreateChildSa) {
    if (IsIkeRekeyRequest(*plain)) {
      HandleIkeRekeyRequest(*plain, response);
      respond();
      if (adopt_after_response_.has_value()) {
        IkeSa next = *std::exchange(adopt_after_response_, std::nullopt);
        ++counters_.ike_rekeys_answered;
        AdoptIkeSa(std::move(next), /*delete_old=*/false);
      }
      return;
    }
    HandleRekeyRequest(*plain, response);
    respond();
    return;
  }
  bool auth_failed = false;
  bool delete_ike = false;
  std::vector<uint32_t> deleted_children;  // Our inbound SPIs.
  for (const Payload& p : plain->payloads) {
    if (const auto* n = std::get_if<NotifyPayload>(&p.body); n != nullptr) {
      // RFC 7296 §2.21.2: the initiator refusing our AUTH after we
      // answered its IKE_AUTH.
      if (n->type == kNotifyAuthenticationFailed && !sa_.initiator && id == 2) auth_failed = true;
    } else if (const auto* d = std::get_if<DeletePayload>(&p.body); d != nullptr) {
      if (d->protocol_id == kProtocolIke) delete_ike = true;
      if (d->protocol_id != kProtocolEsp) continue;
      for (const Bytes& spi : d->spis) {
        if (spi.size() != 4) continue;
        const uint32_t theirs =
            static_cast<uint32_t>(spi[0]) << 24 | spi[1] << 16 | spi[2] << 8 | spi[3];
        for (const ChildSa& c : children_) {
          if (c.outbound_spi == theirs) deleted_children.push_back(c.inbound_spi);
        }
      }
    }
  }
  if (delete_ike || !deleted_children.empty()) ++counters_.deletes_received;
  if (!delete_ike && !deleted_children.empty()) {
    // Answer with the SPIs of our halves (RFC 7296 §1.4.1), except one we
    // are deleting ourselves in the same breath.
    DeletePayload d;
    d.protocol_id = kProtocolEsp;
    d.spi_size = 4;
    for (uint32_t spi : deleted_children) {
      if (spi == child_delete_in_flight_) continue;
      d.spis.push_back({static_cast<uint8_t>(spi >> 24), static_cast<uint8_t>(spi >> 16),
                        static_cast<uint8_t>(spi >> 8), static_cast<uint8_t>(spi)});
    }
    if (!d.spis.empty()) response.payloads.push_back(MakePayload(kPayloadDelete, std::move(d)));
  }
  respond();
  if (auth_failed) {
    Fail(FailureReason::kAuthenticationFailed, "peer refused our authentication");
  } else if (delete_ike && ike_rekey_task_ != nullptr && peer_ike_sa_.has_value()) {
    // RFC 7296 §2.25.2: the peer closes the IKE SA that both of us were
    // rekeying: its new SA won (§2.8.2) and ours is forgotten.
    LOG_INFO("IKE SA rekey collision: the peer deleted the old SA, taking its new one");
    ike_rekey_task_.reset();
    pending_ = false;
    request_deadline_.reset();
    ++counters_.rekey_collisions;
    ++counters_.ike_rekeys_answered;
    IkeSa next = *std::exchange(peer_ike_sa_, std::nullopt);
    AdoptIkeSa(std::move(next), /*delete_old=*/false);
    // The old SA is deleted now: answered above (the answer stays for
    // retransmissions of the DELETE).
    KeepDeletedSaAnswer(old_sas_.back());
    old_sas_.pop_back();
    SendQueued();
  } else if (delete_ike) {
    Deleted(true, "peer deleted the IKE SA");
  } else {
    for (uint32_t spi : deleted_children) RemoveChild(spi, /*by_peer=*/true);
  }
}

void EngineImpl::HandleRekeyRequest(const Message& plain, Message& response) {
  // The CHILD SA named by REKEY_SA (its SPI is the peer's inbound one).
  const ChildSa* old = nullptr;
  for (const Payload& p : plain.payloads) {
    const auto* n = std::get_if<NotifyPayload>(&p.body);
    if (n == nullptr || n->type != kNotifyRekeySa || n->spi.size() != 4) continue;
    const uint32_t spi =
        static_cast<uint32_t>(n->spi[0]) << 24 | n->spi[1] << 16 | n->spi[2] << 8 | n->spi[3];
    for (const ChildSa& c : children_) {
      if (c.outbound_spi == spi) old = &c;
    }
  }
  if (state_ == State::kDeleting || IkeRekeyInProgress()) {
    // RFC 7296 §2.25: not while the IKE SA is going away or being rekeyed.
    NotifyPayload n;
    n.type = kNotifyTemporaryFailure;
    response.payloads.push_back(MakePayload(kPayloadNotify, std::move(n)));
    return;
  }
  // Without a CHILD SA left (the peer deleted it, for example after its
  // hard expiry, and now creates its replacement) a request without
  // REKEY_SA makes a new one, encapsulated as InstallChild() would.
  ChildSa none;
  SetEncapsulation(none);
  RekeyChildTask task(sa_, config_, random_, old != nullptr ? *old : none, /*initiator=*/false);
  if (children_.empty()) task.AllowNewChild();
  const TaskResult r = task.Process(plain);
  if (absl::Status s = task.Build(response); !s.ok()) {
    LOG_WARNING("cannot answer CREATE_CHILD_SA").With("error", s.ToString());
  }
  if (r.kind != TaskResult::Kind::kDone) {
    LOG_INFO("refused the peer's CREATE_CHILD_SA").With("detail", r.detail);
    return;
  }
  // RFC 7296 §2.8: the peer installs the new SA's inbound half when our
  // response arrives; ours goes out on it once the peer deleted the old
  // SA (or later, ActivateOutbound()). A new SA in place of none has no
  // older one to carry the traffic meanwhile.
  const bool defer =
      task.old().inbound_spi != 0 && config_.deferred_outbound_timeout > absl::ZeroDuration();
  if (!InstallRekeyed(task, defer)) return;
  if (task.old().inbound_spi != 0) ++counters_.child_rekeys_answered;
  if (rekey_task_ != nullptr && rekey_task_->old().inbound_spi == task.old().inbound_spi) {
    // Our own rekey of the same SA is in flight: settle when it ends.
    peer_rekey_ = PeerRekey{task.ni(), task.nr(), task.old().inbound_spi, task.child().inbound_spi};
  } else if (last_rekey_.has_value() && last_rekey_->old_inbound_spi == task.old().inbound_spi) {
    // We replaced this SA already and asked for the old one's deletion;
    // the peer's rekey crossed ours. Settle now (RFC 7296 §2.8.1): our new
    // SA goes when the lowest nonce is in our exchange.
    ++counters_.rekey_collisions;
    if (LowestNonceIsOurs(last_rekey_->ni, last_rekey_->nr, task.ni(), task.nr())) {
      LOG_INFO("CHILD SA rekey collision lost: deleting our new SA");
      QueueChildDelete(last_rekey_->new_inbound_spi);
    } else {
      // The peer's new SA is redundant: it deletes it.
      ForgetDeferred(task.child().inbound_spi);
    }
    last_rekey_.reset();
  } else {
    // The peer rekeyed and deletes the old SA; ours waits a full period.
    ScheduleRekey();
  }
}

void EngineImpl::HandleRekeyResponse(const Message& plain) {
  const TaskResult r = rekey_task_->Process(plain);
  if (r.kind == TaskResult::Kind::kRetry) {
    Message m;
    m.header = Header(kExchangeCreateChildSa, next_request_id_, false);
    absl::Status built = rekey_task_->Build(m);
    absl::StatusOr<Bytes> bytes = built.ok() ? Encode(m) : built;
    if (bytes.ok()) {
      SendRequest(*std::move(bytes), kExchangeCreateChildSa, next_request_id_++);
      request_deadline_ = clock_.Now() + config_.dpd_timeout;
      return;
    }
  }
  std::unique_ptr<RekeyChildTask> task = std::move(rekey_task_);
  std::optional<PeerRekey> peer = std::exchange(peer_rekey_, std::nullopt);
  if (r.kind != TaskResult::Kind::kDone) {
    ++counters_.child_rekey_failures;
    EngineEvent e = NewEvent(EngineEvent::Kind::kChildSaRekeyFailed);
    e.reason = r.reason;
    e.detail = r.detail;
    events_.push_back(std::move(e));
    // The peer's rekey of the same SA went through: it deletes the old SA,
    // and its new one is ours to rekey a period from now.
    if (peer.has_value()) {
      ScheduleRekey();
      return;
    }
    // TEMPORARY_FAILURE: soon (RFC 7296 §2.25); otherwise in a while.
    uint8_t b[1];
    random_.Fill(absl::MakeSpan(b));
    rekey_at_ = clock_.Now() + (task->temporary_failure()
                                    ? absl::Milliseconds(500 + 10 * b[0])
                                    : absl::Seconds(30) + absl::Milliseconds(100 * b[0]));
    return;
  }
  // Both ends rekeyed the same SA and ours is the redundant one (RFC 7296
  // §2.8.1): the peer removes it on our DELETE, so nothing is sent on it.
  const bool lost_collision =
      peer.has_value() && LowestNonceIsOurs(task->ni(), task->nr(), peer->ni, peer->nr);
  if (!InstallRekeyed(*task, /*defer_outbound=*/lost_collision)) return;
  if (lost_collision) ForgetDeferred(task->child().inbound_spi);
  ScheduleRekey();
  if (task->old().inbound_spi == 0 && !peer.has_value()) return;  // Created, replaced nothing.
  ++counters_.child_rekeys_initiated;
  if (!peer.has_value()) {
    last_rekey_ =
        PeerRekey{task->ni(), task->nr(), task->old().inbound_spi, task->child().inbound_spi};
    QueueChildDelete(task->old().inbound_spi);
    return;
  }
  // Both ends rekeyed the same SA. RFC 7296 §2.8.1: the SA made with the
  // lowest of the four nonces is redundant and its maker deletes it; the
  // maker of the other one deletes the old SA.
  ++counters_.rekey_collisions;
  if (LowestNonceIsOurs(task->ni(), task->nr(), peer->ni, peer->nr)) {
    LOG_INFO("CHILD SA rekey collision lost: deleting our new SA");
    QueueChildDelete(task->child().inbound_spi);
  } else {
    LOG_INFO("CHILD SA rekey collision won: deleting the old SA");
    QueueChildDelete(task->old().inbound_spi);
    // The peer's new SA is redundant: it deletes it.
    ForgetDeferred(peer->new_inbound_spi);
  }
}

bool EngineImpl::LowestNonceIsOurs(const Bytes& our_ni, const Bytes& our_nr, const Bytes& their_ni,
                                   const Bytes& their_nr) {
  auto lower = [](const Bytes& a, const Bytes& b) {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
  };
  const Bytes& ours = lower(our_ni, our_nr) ? our_ni : our_nr;
  const Bytes& theirs = lower(their_ni, their_nr) ? their_ni : their_nr;
  return lower(ours, theirs);
}

bool EngineImpl::InstallRekeyed(RekeyChildTask& task, bool defer_outbound) {
  ChildSa& child = task.child();
  // The peer's NAT mapping may have moved since the old SA was made.
  SetEncapsulation(child);
  child.outbound_deferred = defer_outbound;
  if (absl::Status s = sink_.InstallChildSa(child); !s.ok()) {
    LOG_WARNING("cannot install the rekeyed CHILD SA").With("error", s.ToString());
    return false;
  }
  children_.push_back(child);
  if (defer_outbound) {
    deferred_outbound_.push_back(
        DeferredOutbound{child.inbound_spi, task.old().inbound_spi,
                         clock_.Now() + config_.deferred_outbound_timeout});
  }
  EngineEvent e = NewEvent(EngineEvent::Kind::kChildSaEstablished);
  e.algorithms = child.algorithms;
  e.child_inbound_spi = child.inbound_spi;
  e.child_outbound_spi = child.outbound_spi;
  e.local_ts = child.local_ts;
  e.remote_ts = child.remote_ts;
  // A CHILD SA in place of one the peer deleted replaces nothing.
  const bool rekeyed = task.old().inbound_spi != 0;
  e.rekeyed = rekeyed;
  e.replaced_inbound_spi = task.old().inbound_spi;
  events_.push_back(std::move(e));
  LOG_INFO(rekeyed ? "CHILD SA rekeyed" : "CHILD SA created in the IKE SA")
      .With("spi_in", static_cast<uint64_t>(child.inbound_spi))
      .With("spi_out", static_cast<uint64_t>(child.outbound_spi))
      .With("old_spi_in", static_cast<uint64_t>(task.old().inbound_spi))
      .With("outbound_deferred", defer_outbound);
  return true;
}

void EngineImpl::ActivateOutbound(uint32_t inbound_spi, absl::string_view why) {
  ForgetDeferred(inbound_spi);
  for (ChildSa& child : children_) {
    if (child.inbound_spi != inbound_spi || !child.outbound_deferred) continue;
    child.outbound_deferred = false;
    SetEncapsulation(child);
    if (absl::Status s = sink_.ActivateChildSaOutbound(child); !s.ok()) {
      // The older SA carries the traffic while it lasts.
      ++counters_.outbound_activation_failures;
      LOG_WARNING("cannot install the rekeyed CHILD SA's outbound SA")
          .With("spi_out", static_cast<uint64_t>(child.outbound_spi))
          .With("error", s.ToString());
      return;
    }
    LOG_INFO("rekeyed CHILD SA sends now")
        .With("spi_in", static_cast<uint64_t>(child.inbound_spi))
        .With("spi_out", static_cast<uint64_t>(child.outbound_spi))
        .With("why", why);
    return;
  }
}

void EngineImpl::ForgetDeferred(uint32_t inbound_spi) {
  deferred_outbound_.erase(std::remove_if(deferred_outbound_.begin(), deferred_outbound_.end(),
                                          [inbound_spi](const DeferredOutbound& d) {
                                            return d.inbound_spi == inbound_spi;
                                          }),
                           deferred_outbound_.end());
}

void EngineImpl::QueueChildDelete(uint32_t inbound_spi) {
  queued_child_deletes_.push_back(inbound_spi);
  if (!pending_) SendQueued();
}

void EngineImpl::RemoveChild(uint32_t inbound_spi, bool by_peer) {
  // Make before break: the SA that replaces this one sends first (the
  // peer, deleting the old SA, has the new one).
  std::vector<uint32_t> successors;
  for (const DeferredOutbound& d : deferred_outbound_) {
    if (d.replaces == inbound_spi) successors.push_back(d.inbound_spi);
  }
  for (uint32_t spi : successors) {
    ActivateOutbound(spi, by_peer ? "the peer deleted the old SA" : "the old SA is deleted");
  }
  ForgetDeferred(inbound_spi);
  for (auto it = children_.begin(); it != children_.end(); ++it) {
    if (it->inbound_spi != inbound_spi) continue;
    if (absl::Status s = sink_.RemoveChildSa(*it); !s.ok()) {
      LOG_WARNING("cannot remove a CHILD SA").With("error", s.ToString());
    }
    EngineEvent e = NewEvent(EngineEvent::Kind::kChildSaDeleted);
    e.by_peer = by_peer;
    e.child_inbound_spi = it->inbound_spi;
    e.child_outbound_spi = it->outbound_spi;
    events_.push_back(std::move(e));
    children_.erase(it);
    // Never without an outbound SA while there is an SA.
    if (!children_.empty() && std::all_of(children_.begin(), children_.end(),
                                          [](const ChildSa& c) { return c.outbound_deferred; })) {
      ActivateOutbound(children_.back().inbound_spi, "no other outbound SA is left");
    }
    if (by_peer && children_.empty() && state_ == State::kEstablished &&
        config_.child_recreate_delay > absl::ZeroDuration()) {
      // Shares the rekey timer: a CHILD SA that the peer creates first
      // reschedules it (HandleRekeyRequest), and RekeyChild() then rekeys
      // that one in its time instead.
      LOG_INFO("the peer deleted the last CHILD SA: creating a new one")
          .With("after", absl::FormatDuration(config_.child_recreate_delay));
      rekey_at_ = clock_.Now() + config_.child_recreate_delay;
    }
    return;
  }
}

void EngineImpl::SendQueued() {
  if (pending_ || state_ != State::kEstablished) return;
  if (delete_requested_) {
    delete_requested_ = false;
    Delete();
    return;
  }
  while (!queued_child_deletes_.empty()) {
    const uint32_t spi = queued_child_deletes_.front();
    queued_child_deletes_.erase(queued_child_deletes_.begin());
    const bool still_there = std::any_of(children_.begin(), children_.end(),
                                         [spi](const ChildSa& c) { return c.inbound_spi == spi; });
    if (!still_there) continue;
    DeletePayload d;
    d.protocol_id = kProtocolEsp;
    d.spi_size = 4;
    d.spis.push_back({static_cast<uint8_t>(spi >> 24), static_cast<uint8_t>(spi >> 16),
                      static_cast<uint8_t>(spi >> 8), static_cast<uint8_t>(spi)});
    std::vector<Payload> payloads;
    payloads.push_back(MakePayload(kPayloadDelete, std::move(d)));
    child_delete_in_flight_ = spi;
    SendInformational(std::move(payloads));
    return;
  }
  if (ike_rekey_requested_) {
    ike_rekey_requested_ = false;
    if (absl::Status s = RekeyIke(); !s.ok()) {
      LOG_WARNING("cannot start the IKE SA rekey").With("error", s.ToString());
    }
    if (pending_) return;
  }
  if (rekey_requested_) {
    rekey_requested_ = false;
    if (absl::Status s = RekeyChild(); !s.ok()) {
      LOG_WARNING("cannot start the CHILD SA rekey").With("error", s.ToString());
    }
  }
}

void EngineImpl::ScheduleRekey() {
  if (config_.child_rekey_after <= absl::ZeroDuration()) {
    rekey_at_.reset();
    return;
  }
  absl::Duration fuzz;
  if (config_.rekey_fuzz > absl::ZeroDuration()) {
    uint8_t b[2];
    random_.Fill(absl::MakeSpan(b));
    fuzz = config_.rekey_fuzz * ((b[0] << 8 | b[1]) / 65536.0);
  }
  rekey_at_ = clock_.Now() + config_.child_rekey_after - fuzz;
}

absl::Status EngineImpl::RekeyChild() {
  const bool recreate = children_.empty() && config_.child_recreate_delay > absl::ZeroDuration();
  if (state_ != State::kEstablished || (children_.empty() && !recreate)) {
    return absl::FailedPreconditionError("no established CHILD SA to rekey");
  }
  if (pending_) {
    rekey_requested_ = true;
    return absl::OkStatus();
  }
  rekey_at_.reset();
  // The newest CHILD SA is the one to replace; with none left, a new one
  // for the configured selectors.
  ChildSa fresh;
  if (recreate) {
    fresh.local_ts = config_.local_ts;
    fresh.remote_ts = config_.remote_ts;
    SetEncapsulation(fresh);
  }
  rekey_task_ = std::make_unique<RekeyChildTask>(
      sa_, config_, random_, recreate ? fresh : children_.back(), /*initiator=*/true);
  Message m;
  m.header = Header(kExchangeCreateChildSa, next_request_id_, false);
  RETURN_IF_ERROR(rekey_task_->Build(m));
  ASSIGN_OR_RETURN(Bytes bytes, Encode(m));
  SendRequest(std::move(bytes), kExchangeCreateChildSa, next_request_id_++);
  request_deadline_ = clock_.Now() + config_.dpd_timeout;
  return absl::OkStatus();
}

absl::Status EngineImpl::DeleteChild() {
  if (state_ != State::kEstablished || children_.empty()) {
    return absl::FailedPreconditionError("no established CHILD SA to delete");
  }
  QueueChildDelete(children_.back().inbound_spi);
  return absl::OkStatus();
}

void EngineImpl::SendInformational(std::vector<Payload> payloads) {
  Message m;
  m.header = Header(kExchangeInformational, next_request_id_, false);
  m.payloads = std::move(payloads);
  absl::StatusOr<Bytes> bytes = Encode(m);
  if (!bytes.ok()) {
    Fail(FailureReason::kInternalError, bytes.status().ToString());
    return;
  }
  SendRequest(*std::move(bytes), kExchangeInformational, next_request_id_);
  ++next_request_id_;
  request_deadline_ = clock_.Now() + config_.dpd_timeout;
}

void EngineImpl::Delete() {
  if (state_ == State::kEstablished) {
    if (pending_) {
      delete_requested_ = true;
      return;
    }
    DeletePayload d;
    d.protocol_id = kProtocolIke;
    std::vector<Payload> payloads;
    payloads.push_back(MakePayload(kPayloadDelete, std::move(d)));
    ++counters_.deletes_sent;
    state_ = State::kDeleting;
    SendInformational(std::move(payloads));
    return;
  }
  if (state_ == State::kDeleting || state_ == State::kDeleted) return;
  Deleted(false, "stopped before it was established");
}

void EngineImpl::Deleted(bool by_peer, absl::string_view detail) {
  LOG_INFO("IKE SA deleted").With("by_peer", by_peer).With("detail", detail);
  state_ = State::kDeleted;
  pending_ = false;
  request_deadline_.reset();
  old_sas_.clear();
  deleted_sas_.clear();
  ike_rekey_task_.reset();
  peer_ike_sa_.reset();
  ike_rekey_at_.reset();
  half_open_deadline_.reset();
  delete_requested_ = false;
  deferred_outbound_.clear();  // The agent takes the CHILD SAs out.
  EngineEvent e = NewEvent(EngineEvent::Kind::kDeleted);
  e.by_peer = by_peer;
  e.detail = std::string(detail);
  events_.push_back(std::move(e));
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
  auth_task_ = std::make_unique<IkeAuthTask>(sa_, config_, random_, clock_);
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
  TickOldSas(now);
  std::vector<uint32_t> overdue;
  for (const DeferredOutbound& d : deferred_outbound_) {
    if (state_ == State::kEstablished && now >= d.at) overdue.push_back(d.inbound_spi);
  }
  for (uint32_t spi : overdue) {
    ++counters_.deferred_outbound_timeouts;
    ActivateOutbound(spi, "the peer did not delete the old SA in time");
  }
  counters_.reassembly_dropped += request_fragments_.Expire(now) + response_fragments_.Expire(now);
  if (half_open_deadline_.has_value() && now >= *half_open_deadline_) {
    Fail(FailureReason::kPeerNotResponding, "no IKE_AUTH after IKE_SA_INIT");
    return;
  }
  if (pending_ && request_deadline_.has_value() && now >= *request_deadline_) {
    if (state_ == State::kDeleting || delete_requested_) {
      Deleted(false, "the peer did not answer our DELETE");
    } else {
      Fail(FailureReason::kPeerDead,
           absl::StrCat("no answer within ", absl::FormatDuration(config_.dpd_timeout)));
    }
    return;
  }
  if (pending_ && now >= retransmit_at_) {
    const size_t steps = config_.retransmit_timeouts.size();
    if (!request_deadline_.has_value() && transmissions_ >= steps) {
      Fail(FailureReason::kPeerNotResponding,
           absl::StrCat("no response after ", transmissions_, " transmissions"));
      return;
    }
    retransmit_at_ = now + config_.retransmit_timeouts[std::min(transmissions_, steps - 1)];
    ++transmissions_;
    ++counters_.retransmits_sent;
    if (pending_exchange_ >= kExchangeIkeSaInit && pending_exchange_ <= kExchangeInformational) {
      ++counters_.retransmits_by_exchange[pending_exchange_ - kExchangeIkeSaInit];
    }
    SendAll(pending_datagrams_, remote_);
    return;
  }
  if (state_ == State::kEstablished && !pending_ && ike_rekey_at_.has_value() &&
      now >= *ike_rekey_at_) {
    if (absl::Status s = RekeyIke(); !s.ok()) {
      LOG_WARNING("cannot start the IKE SA rekey").With("error", s.ToString());
      ike_rekey_at_.reset();
    }
    return;
  }
  if (state_ == State::kEstablished && !pending_ && rekey_at_.has_value() && now >= *rekey_at_) {
    if (absl::Status s = RekeyChild(); !s.ok()) {
      LOG_WARNING("cannot start the CHILD SA rekey").With("error", s.ToString());
      rekey_at_.reset();
    }
    return;
  }
  if (NatKeepaliveDue() && now >= last_sent_ + config_.nat_keepalive_interval) {
    last_sent_ = now;
    ++counters_.nat_keepalives_sent;
    OutboundDatagram keepalive;
    keepalive.data = {0xff};
    keepalive.to = remote_;
    keepalive.keepalive = true;
    datagrams_.push_back(std::move(keepalive));
  }
  if (state_ == State::kEstablished && !pending_ && config_.dpd_interval > absl::ZeroDuration() &&
      now >= last_received_ + config_.dpd_interval) {
    ++counters_.dpd_probes_sent;
    SendInformational({});
  }
}

std::optional<absl::Time> EngineImpl::NextDeadline() const {
  std::optional<absl::Time> next;
  auto take = [&next](absl::Time t) {
    if (!next.has_value() || t < *next) next = t;
  };
  if (pending_) {
    take(retransmit_at_);
    if (request_deadline_.has_value()) take(*request_deadline_);
  }
  if (half_open_deadline_.has_value()) take(*half_open_deadline_);
  if (state_ == State::kEstablished) {
    for (const DeferredOutbound& d : deferred_outbound_) take(d.at);
  }
  if (state_ == State::kEstablished && !pending_ && config_.dpd_interval > absl::ZeroDuration()) {
    take(last_received_ + config_.dpd_interval);
  }
  if (state_ == State::kEstablished && !pending_ && rekey_at_.has_value()) take(*rekey_at_);
  if (state_ == State::kEstablished && !pending_ && ike_rekey_at_.has_value()) {
    take(*ike_rekey_at_);
  }
  for (const DeletedIkeSa& d : deleted_sas_) take(d.until);
  for (const OldIkeSa& old : old_sas_) {
    take(old.give_up);
    if (old.deleting) take(old.retransmit_at);
  }
  if (NatKeepaliveDue()) take(last_sent_ + config_.nat_keepalive_interval);
  return next;
}

// --- IKE SA rekey (RFC 7296 §1.3.2, §2.8, §2.8.2, §2.18, §2.25) ---

std::vector<uint64_t> EngineImpl::local_spis() const {
  std::vector<uint64_t> out;
  const uint64_t current = sa_.initiator ? sa_.spi_i : sa_.spi_r;
  if (current != 0) out.push_back(current);
  for (const OldIkeSa& old : old_sas_)
    out.push_back(old.sa.initiator ? old.sa.spi_i : old.sa.spi_r);
  // The peer's new SA of a rekey we answered while ours is out (its DELETE
  // may come over it), and deleted SAs that still answer retransmissions.
  if (peer_ike_sa_.has_value()) {
    out.push_back(peer_ike_sa_->initiator ? peer_ike_sa_->spi_i : peer_ike_sa_->spi_r);
  }
  for (const DeletedIkeSa& d : deleted_sas_) out.push_back(d.initiator ? d.spi_i : d.spi_r);
  return out;
}

void EngineImpl::ScheduleIkeRekey() {
  if (config_.ike_rekey_after <= absl::ZeroDuration()) {
    ike_rekey_at_.reset();
    return;
  }
  absl::Duration fuzz;
  if (config_.ike_rekey_fuzz > absl::ZeroDuration()) {
    uint8_t b[2];
    random_.Fill(absl::MakeSpan(b));
    fuzz = config_.ike_rekey_fuzz * ((b[0] << 8 | b[1]) / 65536.0);
  }
  ike_rekey_at_ = clock_.Now() + config_.ike_rekey_after - fuzz;
}

absl::Status EngineImpl::RekeyIke() {
  if (state_ != State::kEstablished) {
    return absl::FailedPreconditionError("no established IKE SA to rekey");
  }
  if (pending_) {
    ike_rekey_requested_ = true;
    return absl::OkStatus();
  }
  ike_rekey_at_.reset();
  ike_rekey_task_ = std::make_unique<RekeyIkeTask>(sa_, config_, random_, /*initiator=*/true);
  Message m;
  m.header = Header(kExchangeCreateChildSa, next_request_id_, false);
  absl::Status built = ike_rekey_task_->Build(m);
  absl::StatusOr<Bytes> bytes = built.ok() ? Encode(m) : built;
  if (!bytes.ok()) {
    ike_rekey_task_.reset();
    return bytes.status();
  }
  LOG_INFO("rekeying the IKE SA").With("initiator", sa_.initiator);
  SendRequest(*std::move(bytes), kExchangeCreateChildSa, next_request_id_++);
  request_deadline_ = clock_.Now() + config_.dpd_timeout;
  return absl::OkStatus();
}

void EngineImpl::HandleIkeRekeyRequest(const Message& plain, Message& response) {
  RekeyIkeTask task(sa_, config_, random_, /*initiator=*/false);
  // RFC 7296 §2.25: not while closing the IKE SA, nor while another
  // exchange of ours (a CHILD SA rekey, a probe, a delete) is out; a
  // crossing IKE SA rekey of ours is answered and settled later (§2.8.2).
  const bool busy = state_ != State::kEstablished || delete_requested_ ||
                    (pending_ && ike_rekey_task_ == nullptr) || rekey_task_ != nullptr ||
                    peer_ike_sa_.has_value();
  if (busy) task.RefuseTemporarily();
  const TaskResult r = task.Process(plain);
  if (absl::Status s = task.Build(response); !s.ok()) {
    LOG_WARNING("cannot answer the IKE SA rekey").With("error", s.ToString());
    return;
  }
  if (r.kind != TaskResult::Kind::kDone) {
    LOG_INFO("refused the peer's IKE SA rekey").With("detail", r.detail);
    return;
  }
  if (ike_rekey_task_ != nullptr) {
    peer_ike_sa_.emplace(std::move(task.new_sa()));
    return;
  }
  adopt_after_response_.emplace(std::move(task.new_sa()));
}

void EngineImpl::HandleIkeRekeyResponse(const Message& plain) {
  const TaskResult r = ike_rekey_task_->Process(plain);
  if (r.kind == TaskResult::Kind::kRetry) {
    LOG_INFO("IKE SA rekey retry with the peer's DH group");
    Message m;
    m.header = Header(kExchangeCreateChildSa, next_request_id_, false);
    absl::Status built = ike_rekey_task_->Build(m);
    absl::StatusOr<Bytes> bytes = built.ok() ? Encode(m) : built;
    if (bytes.ok()) {
      SendRequest(*std::move(bytes), kExchangeCreateChildSa, next_request_id_++);
      request_deadline_ = clock_.Now() + config_.dpd_timeout;
      return;
    }
  }
  std::unique_ptr<RekeyIkeTask> task = std::move(ike_rekey_task_);
  std::optional<IkeSa> peer = std::exchange(peer_ike_sa_, std::nullopt);
  if (r.kind != TaskResult::Kind::kDone) {
    ++counters_.ike_rekey_failures;
    LOG_INFO("IKE SA rekey failed").With("detail", r.detail);
    EngineEvent e = NewEvent(EngineEvent::Kind::kIkeSaRekeyFailed);
    e.reason = r.reason;
    e.detail = r.detail;
    events_.push_back(std::move(e));
    if (peer.has_value()) {
      // The peer's rekey of the same SA went through: its new SA is the
      // one, and the peer deletes the old SA.
      ++counters_.ike_rekeys_answered;
      AdoptIkeSa(*std::move(peer), /*delete_old=*/false);
      return;
    }
    // TEMPORARY_FAILURE: soon (RFC 7296 §2.25); otherwise in a while.
    uint8_t b[1];
    random_.Fill(absl::MakeSpan(b));
    ike_rekey_at_ = clock_.Now() + (task->temporary_failure()
                                        ? absl::Milliseconds(500 + 10 * b[0])
                                        : absl::Seconds(30) + absl::Milliseconds(100 * b[0]));
    return;
  }
  if (!peer.has_value()) {
    ++counters_.ike_rekeys_initiated;
    AdoptIkeSa(std::move(task->new_sa()), /*delete_old=*/true);
    return;
  }
  // Both ends rekeyed the IKE SA. RFC 7296 §2.8.2: the new SA made with the
  // lowest of the four nonces is redundant and its maker deletes it; the
  // maker of the other one deletes the old SA.
  ++counters_.rekey_collisions;
  if (LowestNonceIsOurs(task->ni(), task->nr(), peer->ni, peer->nr)) {
    LOG_INFO("IKE SA rekey collision lost: deleting our new SA");
    IkeSa redundant = std::move(task->new_sa());
    ++counters_.ike_rekeys_answered;
    AdoptIkeSa(*std::move(peer), /*delete_old=*/false);
    RetireIkeSa(std::move(redundant), /*delete_it=*/true, 0);
  } else {
    LOG_INFO("IKE SA rekey collision won: deleting the old SA");
    ++counters_.ike_rekeys_initiated;
    AdoptIkeSa(std::move(task->new_sa()), /*delete_old=*/true);
    // The peer deletes its redundant SA over it.
    RetireIkeSa(*std::move(peer), /*delete_it=*/false, 0);
  }
}

void EngineImpl::AdoptIkeSa(IkeSa next, bool delete_old) {
  const uint64_t old_spi_i = sa_.spi_i;
  const uint64_t old_spi_r = sa_.spi_r;
  RetireIkeSa(std::move(sa_), delete_old, next_request_id_);
  OldIkeSa& old = old_sas_.back();
  old.peer_next_id = peer_next_id_;
  old.have_cached = std::exchange(have_cached_, false);
  old.cached_message_id = cached_message_id_;
  old.cached_request = std::exchange(cached_request_, {});
  old.cached_response = std::exchange(cached_response_, {});
  sa_ = std::move(next);
  // RFC 7296 §2.18: message IDs start over on the new SA (and fragments
  // of the old SA's messages are no part of the new SA's).
  request_fragments_.Clear();
  response_fragments_.Clear();
  next_request_id_ = 0;
  peer_next_id_ = 0;
  cached_message_id_ = 0;
  ScheduleIkeRekey();
  EngineEvent e = NewEvent(EngineEvent::Kind::kIkeSaRekeyed);
  e.algorithms = sa_.algorithms;
  e.local_behind_nat = sa_.local_behind_nat;
  e.remote_behind_nat = sa_.remote_behind_nat;
  e.old_ike_spi_i = old_spi_i;
  e.old_ike_spi_r = old_spi_r;
  events_.push_back(std::move(e));
  LOG_INFO("IKE SA rekeyed")
      .With("initiator", sa_.initiator)
      .With("spi_i", absl::StrFormat("%016x", sa_.spi_i))
      .With("spi_r", absl::StrFormat("%016x", sa_.spi_r))
      .With("old_spi_i", absl::StrFormat("%016x", old_spi_i))
      .With("old_spi_r", absl::StrFormat("%016x", old_spi_r));
}

void EngineImpl::RetireIkeSa(IkeSa sa, bool delete_it, uint32_t message_id) {
  OldIkeSa old;
  old.sa = std::move(sa);
  old.give_up = clock_.Now() + config_.dpd_timeout;
  if (delete_it) {
    Message m;
    m.header.spi_i = old.sa.spi_i;
    m.header.spi_r = old.sa.spi_r;
    m.header.exchange_type = kExchangeInformational;
    m.header.initiator = old.sa.initiator;
    m.header.message_id = message_id;
    DeletePayload d;
    d.protocol_id = kProtocolIke;
    m.payloads.push_back(MakePayload(kPayloadDelete, std::move(d)));
    absl::StatusOr<Bytes> bytes = Encode(old.sa, m);
    if (bytes.ok()) {
      old.deleting = true;
      old.delete_id = message_id;
      old.delete_bytes = *bytes;
      old.transmissions = 1;
      old.retransmit_at = clock_.Now() + config_.retransmit_timeouts[0];
      Send(*std::move(bytes));
    } else {
      LOG_WARNING("cannot delete the old IKE SA").With("error", bytes.status().ToString());
    }
  }
  old_sas_.push_back(std::move(old));
}

void EngineImpl::HandleOldSaMessage(OldIkeSa& old, const Message& m,
                                    absl::Span<const uint8_t> datagram, const Endpoint& from) {
  auto drop = [this](const OldIkeSa* which) {
    old_sas_.erase(std::remove_if(old_sas_.begin(), old_sas_.end(),
                                  [which](const OldIkeSa& o) { return &o == which; }),
                   old_sas_.end());
  };
  if (m.header.response) {
    if (m.header.initiator == old.sa.initiator || !old.deleting ||
        m.header.exchange_type != kExchangeInformational) {
      ++counters_.unexpected_dropped;
      return;
    }
    if (m.header.message_id != old.delete_id) {
      ++counters_.stale_dropped;
      return;
    }
    if (!Decrypt(old.sa, m, datagram).ok()) {
      ++counters_.undecryptable_dropped;
      return;
    }
    LOG_INFO("old IKE SA deleted").With("spi_i", absl::StrFormat("%016x", old.sa.spi_i));
    drop(&old);
    return;
  }
  if (m.header.initiator == old.sa.initiator) {
    ++counters_.unexpected_dropped;
    return;
  }
  if (old.have_cached && m.header.message_id == old.cached_message_id) {
    if (absl::MakeConstSpan(old.cached_request) == datagram) {
      ++counters_.responses_resent;
      for (const Bytes& d : old.cached_response) {
        ++counters_.datagrams_sent;
        datagrams_.push_back(OutboundDatagram{d, from});
      }
    } else {
      ++counters_.stale_dropped;
    }
    return;
  }
  if (m.header.message_id != old.peer_next_id) {
    if (m.header.message_id < old.peer_next_id) {
      ++counters_.stale_dropped;
    } else {
      ++counters_.unexpected_dropped;
    }
    return;
  }
  if (m.header.exchange_type != kExchangeInformational &&
      m.header.exchange_type != kExchangeCreateChildSa) {
    ++counters_.unexpected_dropped;
    return;
  }
  absl::StatusOr<Message> plain = Decrypt(old.sa, m, datagram);
  if (!plain.ok()) {
    ++counters_.undecryptable_dropped;
    return;
  }
  ++old.peer_next_id;
  Message response;
  response.header.spi_i = old.sa.spi_i;
  response.header.spi_r = old.sa.spi_r;
  response.header.exchange_type = m.header.exchange_type;
  response.header.initiator = old.sa.initiator;
  response.header.response = true;
  response.header.message_id = m.header.message_id;
  bool delete_ike = false;
  if (m.header.exchange_type == kExchangeCreateChildSa) {
    // RFC 7296 §2.25.2: this SA is going away.
    NotifyPayload n;
    n.type = kNotifyTemporaryFailure;
    response.payloads.push_back(MakePayload(kPayloadNotify, std::move(n)));
  } else {
    for (const Payload& p : plain->payloads) {
      const auto* d = std::get_if<DeletePayload>(&p.body);
      if (d != nullptr && d->protocol_id == kProtocolIke) delete_ike = true;
    }
  }
  absl::StatusOr<Bytes> bytes = Encode(old.sa, response);
  if (!bytes.ok()) return;
  old.have_cached = true;
  old.cached_message_id = m.header.message_id;
  old.cached_request.assign(datagram.begin(), datagram.end());
  old.cached_response = {*bytes};
  Send(*std::move(bytes), reply_to_);
  if (delete_ike) {
    LOG_INFO("old IKE SA deleted by the peer")
        .With("spi_i", absl::StrFormat("%016x", old.sa.spi_i));
    KeepDeletedSaAnswer(old);
    drop(&old);
  }
}

void EngineImpl::KeepDeletedSaAnswer(OldIkeSa& old) {
  if (!old.have_cached) return;
  // The peer gives up on its DELETE after its retransmission schedule
  // (strongSwan: about two minutes; ours: the DPD timeout); ours is the
  // best guess of it, within our own DPD timeout.
  absl::Duration window;
  for (absl::Duration d : config_.retransmit_timeouts) window += d;
  window = std::min(window, config_.dpd_timeout);
  DeletedIkeSa gone;
  gone.spi_i = old.sa.spi_i;
  gone.spi_r = old.sa.spi_r;
  gone.initiator = old.sa.initiator;
  gone.message_id = old.cached_message_id;
  gone.request = std::move(old.cached_request);
  gone.response = std::move(old.cached_response);
  gone.until = clock_.Now() + window;
  deleted_sas_.push_back(std::move(gone));
}

bool EngineImpl::PeerDeletesItsNewSa(const Message& m, absl::Span<const uint8_t> datagram) {
  if (m.header.exchange_type != kExchangeInformational || m.header.message_id != 0 ||
      m.header.initiator == peer_ike_sa_->initiator || reassembled_) {
    return false;
  }
  absl::StatusOr<Message> plain = Decrypt(*peer_ike_sa_, m, datagram);
  if (!plain.ok()) return false;
  const bool delete_ike =
      std::any_of(plain->payloads.begin(), plain->payloads.end(), [](const Payload& p) {
        const auto* d = std::get_if<DeletePayload>(&p.body);
        return d != nullptr && d->protocol_id == kProtocolIke;
      });
  if (!delete_ike) return false;
  // The peer lost the collision: ours survives once its response comes,
  // as if the peer had never rekeyed.
  LOG_INFO("IKE SA rekey collision won: the peer deletes its new SA before our response");
  ++counters_.rekey_collisions;
  RetireIkeSa(*std::exchange(peer_ike_sa_, std::nullopt), /*delete_it=*/false, 0);
  return true;
}

void EngineImpl::TickOldSas(absl::Time now) {
  deleted_sas_.erase(std::remove_if(deleted_sas_.begin(), deleted_sas_.end(),
                                    [now](const DeletedIkeSa& d) { return now >= d.until; }),
                     deleted_sas_.end());
  for (auto it = old_sas_.begin(); it != old_sas_.end();) {
    if (now >= it->give_up) {
      LOG_INFO(it->deleting ? "old IKE SA dropped: no answer to our DELETE"
                            : "old IKE SA dropped: the peer did not delete it")
          .With("spi_i", absl::StrFormat("%016x", it->sa.spi_i));
      ++counters_.old_ike_sas_expired;
      it = old_sas_.erase(it);
      continue;
    }
    if (it->deleting && now >= it->retransmit_at) {
      const size_t steps = config_.retransmit_timeouts.size();
      it->retransmit_at = now + config_.retransmit_timeouts[std::min(it->transmissions, steps - 1)];
      ++it->transmissions;
      ++counters_.retransmits_sent;
      ++counters_.retransmits_by_exchange[kExchangeInformational - kExchangeIkeSaInit];
      Send(it->delete_bytes);
    }
    ++it;
  }
}

}  // namespace strait::ike
