#ifndef STRAIT_DATAPLANE_TESTING_PACKETS_H_
#define STRAIT_DATAPLANE_TESTING_PACKETS_H_

// Builders of inner packets for dataplane tests.

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/dataplane.h"

namespace strait::dataplane::testing {

using Bytes = std::vector<uint8_t>;

// "10.0.0.1" or "2001:db8::1" to 4 or 16 bytes; aborts on a typo.
Address Ip(const std::string& text);

// A selector from CIDR strings, e.g. Sel("10.1.0.0/16", "10.2.0.0/16").
Selector Sel(const std::string& source, const std::string& destination, uint8_t protocol = 0,
             uint16_t source_port = 0, uint16_t destination_port = 0);

// Transport headers (checksums left 0).
Bytes UdpHeader(uint16_t source_port, uint16_t destination_port, size_t payload_size);
Bytes TcpHeader(uint16_t source_port, uint16_t destination_port);
Bytes IcmpHeader(uint8_t type, uint8_t code);

// An IPv4 packet (header checksum set) or IPv6 packet around `payload`,
// chosen by the address family.
Bytes IpPacket(const Address& source, const Address& destination, uint8_t protocol,
               const Bytes& payload, uint16_t fragment_field = 0);

// UDP over IPv4/IPv6 with `data_size` bytes of data.
Bytes UdpPacket(const std::string& source, const std::string& destination, uint16_t source_port,
                uint16_t destination_port, size_t data_size = 16);

}  // namespace strait::dataplane::testing

#endif  // STRAIT_DATAPLANE_TESTING_PACKETS_H_
