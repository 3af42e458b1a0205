#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Listen: a listening socket from host:port (IPv4 / IPv6, port 0 = any
/// free port) or a unix path, and an accept loop that spawns a handler
/// coroutine per connection.
///
///     auto l = lev::net::Listener::tcp("127.0.0.1", 0).value();
///     lev::net::Acceptor acc{loop, l, [&](lev::Fd c, lev::SocketAddress) -> lev::Task<> {...}};
///     loop.spawn(acc.run());   // ... acc.stop();  (or just destroy acc)

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "lev/address.hpp"
#include "lev/error.hpp"
#include "lev/fd.hpp"
#include "lev/task.hpp"

namespace lev {
class Loop;
}  // namespace lev

namespace lev::net {

/// How a Listener is set up.
struct ListenOptions {
  int backlog = 1024;       ///< listen(2)'s queue of connections not yet accepted
  bool reuse_addr = true;   ///< SO_REUSEADDR
  bool reuse_port = false;  ///< SO_REUSEPORT (several listeners share the port)
};

/// An open, listening, nonblocking socket. Move-only; closes on destruction
/// (and removes its unix socket file). Assigning over a Listener closes its
/// socket and removes its file the same way.
class Listener {
 public:
  /// `host` is a numeric IPv4/IPv6 address, "localhost" (127.0.0.1) or ""
  /// (all IPv4 interfaces). Errors name the call that failed (bind, listen).
  static Result<Listener> tcp(std::string_view host, std::uint16_t port,
                              ListenOptions options = {});
  /// A stale socket file (nobody accepting) is replaced; a live one is
  /// EADDRINUSE, also when its backlog is full (the probe never blocks).
  static Result<Listener> unix_socket(std::string_view path, ListenOptions options = {});

  /// No socket.
  Listener() = default;
  /// Takes over the socket (and the unix socket file) of the other.
  Listener(Listener&& o) noexcept;
  /// Closes this one's socket (removing its unix socket file), then takes
  /// over `o`'s.
  Listener& operator=(Listener&& o) noexcept;
  /// Closes the socket; a unix socket's file is removed.
  ~Listener();

  /// The listening socket, still owned by the Listener.
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  /// The bound address (with the port the kernel chose for port 0).
  [[nodiscard]] const SocketAddress& address() const noexcept { return address_; }
  /// The bound port (0 for a unix socket).
  [[nodiscard]] std::uint16_t port() const noexcept { return address_.port(); }

 private:
  Fd fd_;
  SocketAddress address_;
  std::string unix_path_;
};

namespace detail {
struct AcceptorState;
}

/// Accepts connections and spawns a task running `handler(fd, peer)` for
/// each, until stop(). Survives EMFILE / ENFILE / ENOBUFS / ENOMEM: reports
/// once through the log hook (lev/log.hpp), backs off (10 ms doubling to
/// 1 s) and keeps serving. On io_uring (5.19+) one multishot accept serves
/// every connection (re-armed when the kernel ends it); elsewhere one
/// accept per connection.
///
/// Lifetimes. The Acceptor may be destroyed at any time, also right after
/// stop() or without it (its destructor stops it): run() then ends on its
/// own and touches nothing of the Acceptor. The handler (the function
/// object passed in, with everything it captures) is shared with every
/// connection task: it lives until the Acceptor is gone and each
/// connection it served has ended, so a coroutine lambda may use its
/// captures for as long as it runs.
///
/// A handler that throws (when called, before it returns its task, or
/// later inside the task) fails that connection only: its fd is closed,
/// the exception is reported where escaped task exceptions are (the log
/// hook), and accepting goes on.
class Acceptor {
 public:
  /// Makes the task that serves one connection: it owns the fd, and runs
  /// detached on the loop (loop.spawn).
  using Handler = std::function<Task<>(Fd, SocketAddress)>;
  /// Accepts on `listener`, which must outlive the Acceptor's run().
  Acceptor(Loop& loop, const Listener& listener, Handler handler);
  /// On a listening socket the caller owns (and keeps open while run()).
  Acceptor(Loop& loop, int listening_fd, Handler handler);
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;
  /// Stops, as stop() does. Loop thread only.
  ~Acceptor();

  /// The accept loop; ends after stop(). Run it with loop.spawn(acc.run()).
  Task<> run();
  /// Cancels the pending accept (or back-off wait); run() ends from the
  /// completion queue. Loop thread only.
  void stop();
  /// Connections accepted and handed to the handler so far.
  [[nodiscard]] std::size_t accepted() const noexcept;
  /// Accepts that failed for lack of descriptors or memory (each one backs off).
  [[nodiscard]] std::size_t resource_errors() const noexcept;
  /// Times a multishot accept was (re-)armed; 0 when single accepts are used.
  [[nodiscard]] std::size_t multishot_arms() const noexcept;

 private:
  std::shared_ptr<detail::AcceptorState> s_;
};

}  // namespace lev::net
