#pragma once
/// \file
/// Every operation description, and the table the engines dispatch through
/// for an op whose kind is known only at run time (the io_uring backend's
/// own submit, the epoll engine, op_name). Adding an operation: its kind in
/// detail/op.hpp, its description in its family's header, one entry here.

#include <array>
#include <cstddef>

#include "lev/detail/describe.hpp"
#include "lev/detail/ops/basic.hpp"
#include "lev/detail/ops/datagram.hpp"
#include "lev/detail/ops/file.hpp"
#include "lev/detail/ops/socket.hpp"
#include "lev/detail/ops/vectored.hpp"

namespace lev::detail {

template <class... D>
struct OpList {};

using AllOps = OpList<NopOp, ReadOp, WriteOp, RecvOp, SendOp, AcceptOp, ConnectOp, ShutdownOp,
                      CloseOp, PollOp, OpenatOp, FsyncOp, FallocateOp, FtruncateOp, StatxOp,
                      UnlinkatOp, RenameatOp, MkdiratOp, ReadvOp, WritevOp, SpliceOp, SendmsgOp,
                      RecvmsgOp>;

/// Kinds a backend sees (timer and post never reach one).
inline constexpr std::size_t kBackendKinds = static_cast<std::size_t>(OpKind::timer);

/// One row per kind, from its description.
struct KindEntry {
  const char* name = nullptr;
  void (*prep)(io_uring_sqe*, OpBase&, std::size_t) noexcept = nullptr;
  long (*attempt)(OpBase&) noexcept = nullptr;
  Wait wait = Wait::none;
  bool yields_fd = false;
  bool writes = false;
  bool may_be_file = false;
};

template <class... D>
constexpr std::array<KindEntry, kBackendKinds> make_kind_table(OpList<D...>) {
  std::array<KindEntry, kBackendKinds> t{};
  ((t[static_cast<std::size_t>(D::kind)] =
        KindEntry{D::name, &D::prep, &D::attempt, D::wait, D::yields_fd, D::writes,
                  D::may_be_file}),
   ...);
  return t;
}

inline constexpr std::array<KindEntry, kBackendKinds> kKinds = make_kind_table(AllOps{});

template <class... D>
constexpr bool describes_every_kind(OpList<D...>) {
  for (const KindEntry& e : kKinds)
    if (!e.name) return false;
  return sizeof...(D) == kBackendKinds;
}
static_assert(describes_every_kind(AllOps{}), "each backend kind is described exactly once");

/// The row of a backend kind.
inline const KindEntry& kind_entry(OpKind kind) noexcept {
  return kKinds[static_cast<std::size_t>(kind)];
}

}  // namespace lev::detail
