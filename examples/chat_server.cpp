// Line chat: each line from one client goes to every other client as
// "<id>: <line>". A client that does not read is disconnected (once, with
// one line on stderr) as soon as more than --max-queue bytes wait for it,
// so it can neither grow the server's memory nor slow the others down.
//   chat_server --port N [--max-queue BYTES] [--model proactor|reactor]
//               [--backend uring|epoll|auto] [--timeout IDLE] [--max-clients N]
//               (--help: all, with defaults)
#include <sys/socket.h>

#include <cstdio>
#include <map>
#include <memory>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

struct Member {
  std::shared_ptr<lev::net::Stream> stream;
  bool cut = false;  // disconnected for not reading: skipped from then on
};

struct Room {
  std::size_t max_queue = 1 << 20;
  example::Millis idle{0};          // 0: none
  example::Millis send_timeout{0};  // bounds the last flush of a leaving client
  std::map<int, Member> members;
  int next_id = 1;
};

void broadcast(Room& room, int from, const std::string& line) {
  for (auto& [id, m] : room.members) {
    if (id == from || m.cut) continue;
    if (!m.stream->enqueue(line) || m.stream->queued() > room.max_queue) {
      m.cut = true;
      std::fprintf(stderr, "chat_server: client %d is not reading (%zu bytes queued); disconnecting it\n",
                   id, m.stream->queued());
      ::shutdown(m.stream->fd(), SHUT_RDWR);  // its session's read ends; it leaves the room
    }
  }
}

lev::Task<lev::Result<std::optional<std::string>>> next_line(lev::Loop& loop, Room& room,
                                                              lev::net::Stream& s) {
  if (room.idle.count() == 0) co_return co_await s.read_message();
  co_return co_await lev::with_timeout(loop, s.read_message(), room.idle);
}

lev::Task<> session(lev::Loop& loop, Room& room, lev::Fd fd) {
  const int id = room.next_id++;
  // A modest kernel send buffer, so a client that stops reading shows up
  // in the user-space queue (and is cut off) rather than in kernel memory.
  int sndbuf = 64 * 1024;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
  auto stream = std::make_shared<lev::net::Stream>(loop, std::move(fd));
  room.members[id] = Member{stream};
  bool idle = false;
  for (;;) {
    auto line = co_await next_line(loop, room, *stream);
    if (!line || !*line) {
      idle = !line && line.error().is_timeout();
      break;
    }
    broadcast(room, id, std::to_string(id) + ": " + **line);
  }
  const bool cut = room.members[id].cut || idle;
  room.members.erase(id);
  if (cut) ::shutdown(stream->fd(), SHUT_RDWR);  // nothing more is sent to it: close at once
  // What is still queued for a client that leaves is flushed, within --send-timeout.
  if (!co_await lev::with_timeout(loop, stream->close(), room.send_timeout))
    ::shutdown(stream->fd(), SHUT_RDWR);
}

}  // namespace

int main(int argc, char** argv) try {
  example::ServerArgs args;
  Room room;
  example::Cli cli{"chat_server", "Line chat: each line goes to every other client."};
  args.add_to(cli);
  cli.bytes("--max-queue", room.max_queue, 1, std::size_t(1) << 32,
            "disconnect a client once this many bytes wait for it");
  cli.duration("--timeout", room.idle, true, std::chrono::hours(24 * 365),
               "close a connection idle this long (0: never)");
  cli.parse(argc, argv);
  args.loop.check(cli);
  room.send_timeout = args.send_timeout;
  return example::run_server("chat_server", args, [&](lev::Loop& loop, lev::Fd fd) {
    return session(loop, room, std::move(fd));
  });
} catch (const std::exception& e) {
  std::fprintf(stderr, "chat_server: %s\n", e.what());
  return 1;
}
