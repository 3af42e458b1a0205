#pragma once
// The conformance suite's fixtures: for every op kind of lev::detail::AllOps,
// one or more forms (the op as a user starts it, on something it can run
// on). `Forms<D>` lists a kind's forms; a kind without an entry does not
// compile (see conformance_test.cpp's static_assert), so a new op cannot
// join AllOps without joining the matrix. The operations built over those
// (lev::tls::Connection's) have forms of their own (TlsForms).
//
// A form says what it can do (the flags of FormBase) and provides:
//   using Desc;  static constexpr const char* name;
//   auto make(Loop&, Timeout)           the awaitable (prvalue); a timeout: {.timeout}
//   Outcome outcome(Result<...>&)       the result, its value checked
//   void fake_complete(FakeBackend&, detail::OpBase&)   completes it on the fake
// and, as its flags say, unblock() / effect() / effect_wrong() / unstick()
// / release_fd() + reuse() + reuse_wrong(). A form with a peer that talks
// back (forms_tls.hpp) has prepare() / step() / fake_pump() instead of
// fake_complete(), and cancelled_wrong() (what a cancel must leave).
#include <tuple>

#include "conformance/form_base.hpp"
#include "conformance/forms_file.hpp"
#include "conformance/forms_stream.hpp"
#include "conformance/forms_tls.hpp"
#include "conformance/forms_vectored.hpp"

namespace lev::conformance {

// ---- the table --------------------------------------------------------------

/// The forms of each op kind. No primary definition: a kind of AllOps
/// without an entry here fails to compile the suite.
template <class D>
struct Forms;
template <>
struct Forms<detail::NopOp> {
  using type = std::tuple<NopForm>;
};
template <>
struct Forms<detail::ReadOp> {
  using type = std::tuple<ReadPipeForm, ReadAtForm>;
};
template <>
struct Forms<detail::WriteOp> {
  using type = std::tuple<WriteAllPipeForm, WriteAtForm>;
};
template <>
struct Forms<detail::RecvOp> {
  using type = std::tuple<RecvForm, RecvPoolForm>;
};
template <>
struct Forms<detail::SendOp> {
  using type = std::tuple<SendAllForm>;
};
template <>
struct Forms<detail::AcceptOp> {
  using type = std::tuple<AcceptForm>;
};
template <>
struct Forms<detail::ConnectOp> {
  using type = std::tuple<ConnectForm>;
};
template <>
struct Forms<detail::ShutdownOp> {
  using type = std::tuple<ShutdownForm>;
};
template <>
struct Forms<detail::CloseOp> {
  using type = std::tuple<CloseForm>;
};
template <>
struct Forms<detail::PollOp> {
  using type = std::tuple<PollForm>;
};
template <>
struct Forms<detail::OpenatOp> {
  using type = std::tuple<OpenatCreateForm, OpenatFifoForm>;
};
template <>
struct Forms<detail::FsyncOp> {
  using type = std::tuple<FsyncForm>;
};
template <>
struct Forms<detail::FallocateOp> {
  using type = std::tuple<FallocateForm>;
};
template <>
struct Forms<detail::FtruncateOp> {
  using type = std::tuple<FtruncateForm>;
};
template <>
struct Forms<detail::StatxOp> {
  using type = std::tuple<StatxForm>;
};
template <>
struct Forms<detail::UnlinkatOp> {
  using type = std::tuple<UnlinkatForm>;
};
template <>
struct Forms<detail::RenameatOp> {
  using type = std::tuple<RenameatForm>;
};
template <>
struct Forms<detail::MkdiratOp> {
  using type = std::tuple<MkdiratForm>;
};
template <>
struct Forms<detail::ReadvOp> {
  using type = std::tuple<ReadvPipeForm, ReadvAtForm>;
};
template <>
struct Forms<detail::WritevOp> {
  using type = std::tuple<WritevAllPipeForm, WritevAtForm>;
};
template <>
struct Forms<detail::SpliceOp> {
  using type = std::tuple<SplicePipeForm, SpliceFullOutForm, SpliceBlockingSocketForm>;
};
template <>
struct Forms<detail::SendmsgOp> {
  using type = std::tuple<SendmsgForm>;
};
template <>
struct Forms<detail::RecvmsgOp> {
  using type = std::tuple<RecvmsgForm, ReceiveForm>;
};

}  // namespace lev::conformance
