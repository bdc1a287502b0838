#include "dataplane/dataplane.h"

#include <tuple>

namespace strait::dataplane {

bool operator==(const SaId& a, const SaId& b) {
  return a.destination == b.destination && a.spi == b.spi;
}

bool operator<(const SaId& a, const SaId& b) {
  return std::tie(a.destination, a.spi) < std::tie(b.destination, b.spi);
}

bool operator==(const Selector& a, const Selector& b) {
  return std::tie(a.source, a.source_prefix, a.destination, a.destination_prefix, a.ip_protocol,
                  a.source_port, a.destination_port) ==
         std::tie(b.source, b.source_prefix, b.destination, b.destination_prefix, b.ip_protocol,
                  b.source_port, b.destination_port);
}

const char* DirectionName(Direction d) {
  switch (d) {
    case Direction::kIn:
      return "in";
    case Direction::kOut:
      return "out";
    case Direction::kFwd:
      return "fwd";
  }
  return "unknown";
}

}  // namespace strait::dataplane
