// The echo server written the way a Boost.Asio user writes it with C++20
// coroutines: one io_context, one thread, co_spawn per connection. Built
// twice: on Asio's epoll reactor and (BOOST_ASIO_HAS_IO_URING) on its
// io_uring backend. Same contract as examples/echo_server:
//   asio_echo_{epoll,uring} --port N [--max-seconds S]
// First line on stdout: "listening on 127.0.0.1:PORT". SIGINT/SIGTERM stop it.
#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

asio::awaitable<void> echo(tcp::socket s) {
  char buf[4096];
  try {
    for (;;) {
      std::size_t n = co_await s.async_read_some(asio::buffer(buf), asio::use_awaitable);
      co_await asio::async_write(s, asio::buffer(buf, n), asio::use_awaitable);
    }
  } catch (const std::exception&) {  // EOF or reset: the connection ends
  }
}

asio::awaitable<void> listen(tcp::acceptor& acceptor) {
  for (;;) {
    tcp::socket s = co_await acceptor.async_accept(asio::use_awaitable);
    s.set_option(tcp::no_delay(true));
    asio::co_spawn(acceptor.get_executor(), echo(std::move(s)), asio::detached);
  }
}

}  // namespace

int main(int argc, char** argv) {
  unsigned short port = 0;
  long max_seconds = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--port")
      port = static_cast<unsigned short>(std::atoi(argv[i + 1]));
    else if (k == "--max-seconds")
      max_seconds = std::atol(argv[i + 1]);
  }
  asio::io_context ctx{1};
  tcp::acceptor acceptor{ctx, tcp::endpoint{asio::ip::make_address("127.0.0.1"), port}};
  acceptor.listen(4096);
  std::printf("listening on 127.0.0.1:%u\n", acceptor.local_endpoint().port());
  std::fflush(stdout);
  asio::signal_set signals{ctx, SIGINT, SIGTERM};
  signals.async_wait([&](auto, int) { ctx.stop(); });
  asio::steady_timer limit{ctx};
  if (max_seconds > 0) {
    limit.expires_after(std::chrono::seconds(max_seconds));
    limit.async_wait([&](auto) { ctx.stop(); });
  }
  asio::co_spawn(ctx, listen(acceptor), asio::detached);
  ctx.run();
  return 0;
}
