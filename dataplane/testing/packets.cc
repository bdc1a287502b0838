#include "dataplane/testing/packets.h"

#include <arpa/inet.h>

#include <cstdlib>
#include <iostream>

namespace strait::dataplane::testing {
namespace {

void Put16(Bytes& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v);
}

}  // namespace

Address Ip(const std::string& text) {
  uint8_t buf[16];
  if (inet_pton(AF_INET, text.c_str(), buf) == 1) return Address(buf, buf + 4);
  if (inet_pton(AF_INET6, text.c_str(), buf) == 1) return Address(buf, buf + 16);
  std::cerr << "bad address in a test: " << text << "\n";
  std::abort();
}

Selector Sel(const std::string& source, const std::string& destination, uint8_t protocol,
             uint16_t source_port, uint16_t destination_port) {
  auto split = [](const std::string& cidr, Address* address, uint8_t* prefix) {
    const size_t slash = cidr.find('/');
    *address = Ip(cidr.substr(0, slash));
    *prefix = slash == std::string::npos ? static_cast<uint8_t>(address->size() * 8)
                                         : static_cast<uint8_t>(std::stoi(cidr.substr(slash + 1)));
  };
  Selector s;
  split(source, &s.source, &s.source_prefix);
  split(destination, &s.destination, &s.destination_prefix);
  s.ip_protocol = protocol;
  s.source_port = source_port;
  s.destination_port = destination_port;
  return s;
}

Bytes UdpHeader(uint16_t source_port, uint16_t destination_port, size_t payload_size) {
  Bytes h(8, 0);
  Put16(h, 0, source_port);
  Put16(h, 2, destination_port);
  Put16(h, 4, static_cast<uint16_t>(8 + payload_size));
  return h;
}

Bytes TcpHeader(uint16_t source_port, uint16_t destination_port) {
  Bytes h(20, 0);
  Put16(h, 0, source_port);
  Put16(h, 2, destination_port);
  h[12] = 5 << 4;
  h[13] = 0x02;  // SYN.
  Put16(h, 14, 65535);
  return h;
}

Bytes IcmpHeader(uint8_t type, uint8_t code) { return Bytes{type, code, 0, 0, 0, 1, 0, 1}; }

Bytes IpPacket(const Address& source, const Address& destination, uint8_t protocol,
               const Bytes& payload, uint16_t fragment_field) {
  Bytes p;
  if (source.size() == 4) {
    p.assign(20, 0);
    p[0] = 0x45;
    Put16(p, 2, static_cast<uint16_t>(20 + payload.size()));
    Put16(p, 4, 0x1234);
    Put16(p, 6, fragment_field);
    p[8] = 64;
    p[9] = protocol;
    std::copy(source.begin(), source.end(), p.begin() + 12);
    std::copy(destination.begin(), destination.end(), p.begin() + 16);
    uint32_t sum = 0;
    for (size_t i = 0; i < 20; i += 2) sum += (p[i] << 8) | p[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    Put16(p, 10, static_cast<uint16_t>(~sum));
  } else {
    p.assign(40, 0);
    p[0] = 0x60;
    Put16(p, 4, static_cast<uint16_t>(payload.size()));
    p[6] = protocol;
    p[7] = 64;
    std::copy(source.begin(), source.end(), p.begin() + 8);
    std::copy(destination.begin(), destination.end(), p.begin() + 24);
  }
  p.insert(p.end(), payload.begin(), payload.end());
  return p;
}

Bytes UdpPacket(const std::string& source, const std::string& destination, uint16_t source_port,
                uint16_t destination_port, size_t data_size) {
  Bytes payload = UdpHeader(source_port, destination_port, data_size);
  for (size_t i = 0; i < data_size; ++i) payload.push_back(static_cast<uint8_t>(i));
  return IpPacket(Ip(source), Ip(destination), 17, payload);
}

}  // namespace strait::dataplane::testing
