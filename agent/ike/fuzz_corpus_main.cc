// A main() for fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput
// over every file of a corpus directory, then over a fixed number of
// deterministic random mutations of them (fixed seed, so failures repeat).
//
// Usage: fuzz_corpus_main CORPUS_DIR [MUTATIONS]

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using Input = std::vector<uint8_t>;

Input Mutate(const std::vector<Input>& corpus, std::mt19937& rng) {
  Input input = corpus[rng() % corpus.size()];
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const size_t pos = input.empty() ? 0 : rng() % input.size();
    switch (rng() % 7) {
      case 0:  // Flip a bit.
        if (!input.empty()) input[pos] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:  // Set a byte.
        if (!input.empty()) input[pos] = static_cast<uint8_t>(rng());
        break;
      case 2:  // Truncate.
        input.resize(pos);
        break;
      case 3:  // Insert a byte.
        input.insert(input.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<uint8_t>(rng()));
        break;
      case 4:  // Erase a run.
        if (!input.empty()) {
          const size_t n = std::min<size_t>(1 + rng() % 8, input.size() - pos);
          input.erase(input.begin() + static_cast<std::ptrdiff_t>(pos),
                      input.begin() + static_cast<std::ptrdiff_t>(pos + n));
        }
        break;
      case 5:  // Interesting 16-bit value (lengths, counts).
        if (input.size() >= 2 && pos + 1 < input.size()) {
          static const uint16_t kValues[] = {0, 1, 3, 4, 7, 8, 0x7fff, 0x8000, 0xffff};
          const uint16_t v = kValues[rng() % std::size(kValues)];
          input[pos] = static_cast<uint8_t>(v >> 8);
          input[pos + 1] = static_cast<uint8_t>(v);
        }
        break;
      default: {  // Splice with another corpus entry.
        const Input& other = corpus[rng() % corpus.size()];
        if (!other.empty()) {
          const size_t from = rng() % other.size();
          input.resize(pos);
          input.insert(input.end(), other.begin() + static_cast<std::ptrdiff_t>(from), other.end());
        }
        break;
      }
    }
  }
  return input;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR [MUTATIONS]\n", argv[0]);
    return 2;
  }
  const long mutations = argc > 2 ? std::strtol(argv[2], nullptr, 10) : 10000;
  std::vector<std::filesystem::path> paths;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(argv[1], ec)) {
    if (entry.is_regular_file()) paths.push_back(entry.path());
  }
  if (ec || paths.empty()) {
    std::fprintf(stderr, "no corpus files in %s\n", argv[1]);
    return 1;
  }
  std::sort(paths.begin(), paths.end());
  std::vector<Input> corpus;
  for (const auto& path : paths) {
    std::ifstream in(path, std::ios::binary);
    corpus.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(corpus.back().data(), corpus.back().size());
  }
  std::mt19937 rng(20261127);
  for (long i = 0; i < mutations; ++i) {
    const Input input = Mutate(corpus, rng);
    LLVMFuzzerTestOneInput(input.data(), input.size());
  }
  std::printf("ran %zu corpus files and %ld mutations\n", corpus.size(), mutations);
  return 0;
}
