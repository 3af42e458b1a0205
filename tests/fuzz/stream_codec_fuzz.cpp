// libFuzzer target: the bytes a peer sends, through a net::Stream with the
// line or the length-prefixed codec, split into receives at fuzzer-chosen
// points. The messages the Stream hands out (and how it ends: end of
// stream, or which error) must be exactly what decoding the whole input at
// once gives, whatever the split; the read buffer stays bounded; nothing
// leaks. Built with clang's -fsanitize=fuzzer by scripts/fuzz.sh; the
// ordinary build runs the seed corpus through it (tests/fuzz/replay.cpp).
//
// Input: byte 0 picks the codec and its limit, byte 1 the pool buffer
// size, bytes 2..9 seed the receive splits; the rest is what the peer sent.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lev/fake.hpp"
#include "lev/loop.hpp"
#include "lev/net/stream.hpp"

namespace {

struct Outcome {
  std::vector<std::string> messages;
  std::string end;  // "eof", or the error's message text class
  bool operator==(const Outcome&) const = default;
};

lev::net::Codec codec_for(std::uint8_t b) {
  const std::size_t max = 1 + (b >> 1) % 200;  // small limits reach the over-long paths
  return (b & 1) ? lev::net::Codec::length_prefixed(max) : lev::net::Codec::line('\n', max);
}

// What decoding everything at once gives (the reference).
Outcome decode_whole(const lev::net::Codec& codec, std::string_view data) {
  using S = lev::net::Codec::Decoded::Status;
  Outcome o;
  for (;;) {
    const auto d = codec.decode(data);
    if (d.status == S::message) {
      o.messages.emplace_back(d.message);
      data.remove_prefix(d.consumed);
      continue;
    }
    if (d.status == S::error) {
      o.end = "error: message_size";
      return o;
    }
    if (data.empty()) {
      o.end = "eof";
    } else if (codec.kind() == lev::net::Codec::Kind::line) {
      o.messages.emplace_back(data);  // a last line without its delimiter
      o.end = "eof";
    } else {
      o.end = "error: connection_aborted";
    }
    return o;
  }
}

std::uint64_t next(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

lev::Task<> read_all(lev::net::Stream& s, Outcome& out, bool& done) {
  for (;;) {
    auto m = co_await s.read_message();
    if (!m) {
      const auto& c = m.error().code;
      out.end = c == std::errc::message_size         ? "error: message_size"
                : c == std::errc::connection_aborted ? "error: connection_aborted"
                                                     : "error: " + m.error().message();
      break;
    }
    if (!*m) {
      out.end = "eof";
      break;
    }
    out.messages.push_back(std::move(**m));
  }
  done = true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  if (size < 10) return 0;
  const lev::net::Codec codec = codec_for(bytes[0]);
  const std::uint32_t buffer_size = 1 + bytes[1] % 64;
  std::uint64_t seed = 0;
  for (int i = 2; i < 10; ++i) seed = seed << 8 | bytes[i];
  const std::string_view data(reinterpret_cast<const char*>(bytes + 10), size - 10);
  const Outcome want = decode_whole(codec, data);

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  ::close(sv[1]);  // the fake backend plays the peer; the fd makes fstat say "socket"
  Outcome got;
  {
    auto fake = std::make_shared<lev::FakeBackend>(
        lev::FakeBackend::Options{.auto_advance = true, .detect_blocking = false});
    lev::LoopOptions o;
    o.backend = fake;
    o.recv_buffer_count = 4;
    o.recv_buffer_size = buffer_size;
    lev::Loop loop{lev::Model::proactor, o};
    lev::net::Stream stream(loop, lev::Fd{sv[0]}, {.codec = codec});
    bool done = false;
    loop.spawn(read_all(stream, got, done));
    std::size_t pos = 0;
    std::size_t longest = 0;
    for (int rounds = 0; !done && rounds < 1000000; ++rounds) {
      loop.run_once();
      lev::detail::OpBase* op = fake->find(lev::detail::OpKind::recv);
      if (!op) continue;
      const std::size_t left = data.size() - pos;
      const std::size_t n = std::min<std::size_t>(left, 1 + next(seed) % buffer_size);
      fake->complete_with_data(*op, data.substr(pos, n));  // 0 bytes: end of stream
      pos += n;
      longest = std::max(longest, stream.read_buffer_capacity());
    }
    if (!done) std::abort();  // the reader never ended
    // Bounded: the longest message plus one receive (and the string's slack).
    if (longest > 2 * (codec.max() + 4 + buffer_size) + 64) std::abort();
  }
  if (!(got == want)) std::abort();  // a split changed what the Stream decoded
  return 0;
}
