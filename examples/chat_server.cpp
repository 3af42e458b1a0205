// Line chat: each line from one client goes to every other client as
// "<id>: <line>".
//   chat_server --port N [--max-queue BYTES] [--max-memory BYTES] [--timeout T]
//               [--model proactor|reactor] [--backend uring|epoll|auto]
//               [--send-timeout T] [--max-clients N]   (--help: all, with defaults)
// First line on stdout: "listening on 127.0.0.1:PORT". SIGINT, SIGTERM and
// SIGHUP stop it at once: no more reading or broadcasting, then every
// connection closes.
//
// Memory: a line is one reference-counted message shared by every member
// it is queued for, never copied per member. A member is disconnected
// (once, with one line on stderr) when more than --max-queue bytes wait
// for it, or, when the messages of the whole room pass --max-memory, the
// members holding the most are cut until they fit again: a client that
// does not read can neither grow the server's memory nor slow the others
// down.
// Time (one IdleDeadline per direction per member, no timer per line): a
// member that neither sends a whole line nor takes a delivery for
// --timeout is disconnected (a trickled line does not count); a delivery
// that makes no progress for --send-timeout cuts the member off.
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <string>

#include "common.hpp"
#include "lev/lev.hpp"

namespace {

struct Room;

/// One line as every member gets it ("<id>: <line>\n"), shared by the
/// queues it waits in; the room counts it until the last one lets go.
struct Message {
  Message(Room& room, std::string text);
  ~Message();
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;
  Room& room;
  std::string text;
};
using Shared = std::shared_ptr<const Message>;

/// What one queued message costs a member beyond its text (its queue slot),
/// and what a message costs the room beyond its text (the shared record).
constexpr std::size_t kSlotCost = sizeof(Shared);
constexpr std::size_t kMessageCost = 64;

struct Member {
  Member(lev::Loop& loop, int id, int fd, std::string peer)
      : id(id), fd(fd), peer(std::move(peer)), wake(loop) {}
  int id;
  int fd;                                // borrowed: the session's Stream owns it
  std::string peer;                      // its address, as the cut line names it
  std::deque<Shared> queue;              // messages to deliver, oldest first
  std::size_t sent = 0;                  // bytes of queue.front() already delivered
  std::size_t held = 0;                  // what the queue costs (texts and slots)
  lev::Event wake;                       // set when the writer has something to do
  bool done = false;                     // no more lines from it: deliver what is queued, then end
  bool cut = false;                      // disconnected: nothing more is queued or delivered
  lev::IdleDeadline* reading = nullptr;  // its read deadline, moved on by deliveries
};

struct Room {
  std::size_t max_queue = 1 << 20;                  // per member
  std::size_t max_memory = 64u << 20;               // all messages
  example::Millis idle{std::chrono::seconds(300)};  // 0: none
  example::Millis send_timeout{std::chrono::seconds(60)};
  std::map<int, Member*> members;
  std::size_t memory = 0;  // what the messages alive cost
  int next_id = 1;
  bool stopping = false;
};

Message::Message(Room& r, std::string t) : room(r), text(std::move(t)) {
  room.memory += text.size() + kMessageCost;
}
Message::~Message() { room.memory -= text.size() + kMessageCost; }

/// Disconnects `m`: drops its queue, ends both its directions at once.
/// `why` (when given) is said once on stderr.
void cut(Member& m, const char* why) {
  if (m.cut) return;
  m.cut = true;
  if (why)
    std::fprintf(stderr, "chat_server: client %d (%s) %s (%zu bytes queued); disconnecting it\n",
                 m.id, m.peer.c_str(), why, m.held);
  m.queue.clear();  // a message nobody else holds goes now
  m.held = 0;
  ::shutdown(m.fd, SHUT_RDWR);  // its read ends, its delivery fails
  m.wake.set();
}

void broadcast(Room& room, const Member& from, std::string text) {
  const auto msg = std::make_shared<const Message>(room, std::move(text));
  const std::size_t cost = msg->text.size() + kSlotCost;
  for (auto& [id, m] : room.members) {
    if (m == &from || m->cut || m->done) continue;  // done: it left, and gets no more
    if (m->held + cost > room.max_queue) {
      cut(*m, "is not reading");
      continue;
    }
    m->queue.push_back(msg);
    m->held += cost;
    if (m->queue.size() == 1) m->wake.set();
  }
  // The room's cap: cut the members holding the most until it fits.
  while (room.memory > room.max_memory) {
    Member* most = nullptr;
    for (auto& [id, m] : room.members)
      if (!m->cut && m->held > 0 && (!most || m->held > most->held)) most = m;
    if (!most) break;
    cut(*most, "holds the most while the room is over --max-memory");
  }
}

/// The stop: no more reading or broadcasting, every member cut at once.
void stop_room(Room& room) {
  room.stopping = true;
  for (auto& [id, m] : room.members) cut(*m, nullptr);
}

// Reads lines and broadcasts them until the member leaves, falls silent
// for --timeout, is cut, or the room stops.
lev::Task<> read_lines(lev::Loop& loop, Room& room, Member& m, lev::net::Stream& stream,
                       lev::IdleDeadline& deadline) {
  const std::string prefix = std::to_string(m.id) + ": ";
  for (;;) {
    if (room.idle.count() > 0) deadline.limit_until(loop.now() + room.idle);
    auto line = co_await stream.read_message(deadline);
    if (room.stopping || m.cut) break;
    if (!line) {
      if (line.error().is_timeout()) cut(m, nullptr);  // silent for --timeout
      break;
    }
    if (!*line) break;  // it closed: what is queued for it is still delivered
    std::string text;
    text.reserve(prefix.size() + (*line)->size() + 1);
    text.append(prefix).append(**line).push_back('\n');
    broadcast(room, m, std::move(text));
  }
  m.done = true;
  m.wake.set();
}

// Delivers the member's queue, up to 64 messages per writev, until it is
// done and empty, cut, or the room stops. A delivery with no progress for
// --send-timeout cuts it (one IdleDeadline, no timer per message).
lev::Task<> write_queue(lev::Loop& loop, Room& room, Member& m) {
  lev::IdleDeadline progress{loop, room.send_timeout};
  std::array<iovec, 64> iov;
  std::array<Shared, 64> sending;  // alive while sent, should a cut clear the queue
  while (!m.cut && !room.stopping) {
    if (m.queue.empty()) {
      if (m.done) break;
      m.wake.reset();
      if (!co_await m.wake.wait()) break;
      continue;
    }
    std::size_t n = 0;
    for (const Shared& s : m.queue) {
      std::string_view t = s->text;
      if (n == 0) t.remove_prefix(m.sent);
      iov[n] = iovec{const_cast<char*>(t.data()), t.size()};
      sending[n++] = s;
      if (n == iov.size()) break;
    }
    auto wrote = co_await progress(loop.writev(m.fd, std::span(iov.data(), n)));
    for (std::size_t i = 0; i < n; ++i) sending[i].reset();
    if (m.cut || room.stopping) break;
    if (!wrote) {
      cut(m, wrote.error().is_timeout() ? "is not reading" : nullptr);
      break;
    }
    std::size_t left = *wrote;
    while (left > 0 && !m.queue.empty()) {
      const std::size_t rest = m.queue.front()->text.size() - m.sent;
      if (left < rest) {
        m.sent += left;
        break;
      }
      left -= rest;
      m.held -= m.queue.front()->text.size() + kSlotCost;
      m.queue.pop_front();
      m.sent = 0;
    }
    // A member that takes deliveries is not idle.
    if (m.reading && room.idle.count() > 0) m.reading->limit_until(loop.now() + room.idle);
  }
}

/// The peer's address ("127.0.0.1:41234"), or "?" when the socket has none.
std::string peer_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  return lev::SocketAddress{reinterpret_cast<sockaddr*>(&ss), len}.to_string();
}

lev::Task<> session(lev::Loop& loop, Room& room, lev::Fd fd) {
  const int id = room.next_id++;
  // A modest kernel send buffer, so a client that stops reading shows up
  // in its queue (and is cut off) rather than in kernel memory.
  int sndbuf = 64 * 1024;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
  lev::net::Stream stream{loop, std::move(fd)};
  lev::IdleDeadline reading{loop, lev::Duration::max()};
  Member m{loop, id, stream.fd(), peer_of(stream.fd())};
  m.reading = &reading;
  if (room.stopping) co_return;
  room.members.emplace(id, &m);
  co_await lev::when_all(read_lines(loop, room, m, stream, reading), write_queue(loop, room, m));
  room.members.erase(id);
  if (!m.cut) ::shutdown(stream.fd(), SHUT_RDWR);
  (void)co_await stream.close();  // nothing is queued in the Stream: it closes
}

}  // namespace

int main(int argc, char** argv) try {
  example::ServerArgs args;
  Room room;
  example::Cli cli{"chat_server", "Line chat: each line goes to every other client."};
  args.add_to(cli);
  cli.bytes("--max-queue", room.max_queue, 1, std::size_t(1) << 32,
            "disconnect a client once this many bytes wait for it");
  cli.bytes("--max-memory", room.max_memory, 1, std::size_t(1) << 40,
            "most bytes all queued lines may take; past it the members holding most are cut");
  cli.duration("--timeout", room.idle, true, std::chrono::hours(24 * 365),
               "disconnect a client that sends no whole line and takes no delivery for this "
               "long (0: never)");
  cli.parse(argc, argv);
  args.loop.check(cli);
  room.send_timeout = args.send_timeout;
  return example::run_server(
      "chat_server", args,
      [&](lev::Loop& loop, lev::Fd fd) { return session(loop, room, std::move(fd)); }, {},
      [&] { stop_room(room); });
} catch (const std::exception& e) {
  std::fprintf(stderr, "chat_server: %s\n", e.what());
  return 1;
}
