#pragma once
/// \file
/// How each operation family fills its OpBase, shared by the awaitable and
/// the callback forms. The engines read these fields: the io_uring backend
/// turns them into an SQE (runtime/proactor/uring/prep.cpp), the fake
/// backend records them.

#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "lev/buffer.hpp"
#include "lev/detail/op.hpp"

namespace lev::detail {

/// One submission moves at most this many bytes; longer read/recv/send
/// complete short, and send_all/write_all continue where they stopped.
inline constexpr std::size_t kMaxIoChunk = std::size_t{1} << 30;

inline void setup_io(OpBase& op, void* buf, std::size_t len, std::uint64_t offset, int flags,
                     bool all = false) noexcept {
  op.buf = buf;
  op.len = static_cast<std::uint32_t>(std::min(len, kMaxIoChunk));
  op.offset = offset;
  op.flags = flags;
  op.flow = all ? kFlowAll : 0;
  op.done = 0;
  op.total = len;
  op.zc = 0;
}

/// send never raises SIGPIPE: the error comes back as EPIPE.
inline constexpr int kSendFlags = MSG_NOSIGNAL;

}  // namespace lev::detail
