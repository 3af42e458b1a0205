// Line chat: each line from one client goes to every other client as
// "<id>: <line>". A client that does not read is disconnected once more
// than --max-queue bytes wait for it, so it cannot grow the server's memory.
//   chat_server --port N [--max-queue BYTES] [--model proactor|reactor]
#include <sys/socket.h>

#include <csignal>
#include <cstdio>
#include <map>
#include <memory>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

struct Room {
  lev::Loop& loop;
  std::size_t max_queue;
  std::map<int, std::shared_ptr<lev::net::Stream>> members;
  int next_id = 1;
};

void broadcast(Room& room, int from, const std::string& line) {
  for (auto& [id, peer] : room.members) {
    if (id == from) continue;
    (void)peer->enqueue(line);
    if (peer->queued() > room.max_queue) {
      std::fprintf(stderr, "chat_server: client %d is not reading; disconnecting it\n", id);
      ::shutdown(peer->fd(), SHUT_RDWR);  // its session's read ends; it leaves the room
    }
  }
}

lev::Task<> session(Room& room, lev::Fd fd) {
  const int id = room.next_id++;
  // A modest kernel send buffer, so a client that stops reading shows up
  // in the user-space queue (and is cut off) rather than in kernel memory.
  int sndbuf = 64 * 1024;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
  auto stream = std::make_shared<lev::net::Stream>(room.loop, std::move(fd));
  room.members[id] = stream;
  for (;;) {
    auto line = co_await stream->read_message();
    if (!line || !*line) break;
    broadcast(room, id, std::to_string(id) + ": " + **line);
  }
  room.members.erase(id);
  (void)co_await stream->close();
}

}  // namespace

int main(int argc, char** argv) try {
  auto port = static_cast<std::uint16_t>(example::arg_num(argc, argv, "--port", 0));
  auto max_queue = static_cast<std::size_t>(example::arg_num(argc, argv, "--max-queue", 1 << 20));
  lev::Loop loop{example::model_arg(argc, argv)};
  auto listener = lev::net::Listener::tcp("127.0.0.1", port).value();
  std::printf("listening on %s\n", listener.address().to_string().c_str());
  std::fflush(stdout);
  Room room{loop, max_queue, {}, 1};
  lev::net::Acceptor acceptor{
      loop, listener, [&](lev::Fd fd, lev::SocketAddress) { return session(room, std::move(fd)); }};
  loop.spawn(acceptor.run());
  auto on_int = loop.signal(SIGINT, [&](int) { loop.stop(); });
  auto on_term = loop.signal(SIGTERM, [&](int) { loop.stop(); });
  loop.run();
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "chat_server: %s\n", e.what());
  return 1;
}
