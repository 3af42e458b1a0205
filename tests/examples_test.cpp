// Smoke-runs every example: the servers against their own clients over
// loopback, the rest for their expected output; and every example's command
// line. Bounded in time. (Servers under hostile clients: hostile_test.cpp.)
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "examples_support.hpp"

using namespace lev::examples_test;

TEST_SUITE("examples") {
  TEST_CASE("echo_server echoes for echo_client and stops cleanly on SIGINT and SIGTERM") {
    for (int sig : {SIGINT, SIGTERM}) {
      auto [server, port] = start_server({example_path("echo_server"), "--port", "0"});
      Run client =
          run({example_path("echo_client"), "--port", port, "--count", "500", "--size", "200"});
      CHECK(client.code == 0);
      CHECK(client.out == "echoed 500 messages\n");
      ::kill(server.pid, sig);
      CHECK(wait_exit(server.pid, std::chrono::seconds(10)) == 0);
      ::close(server.out);
    }
  }

  TEST_CASE("echo_server --model reactor serves the same echo") {
    auto [server, port] =
        start_server({example_path("echo_server"), "--port", "0", "--model", "reactor"});
    Run client =
        run({example_path("echo_client"), "--port", port, "--count", "300", "--model", "reactor"});
    CHECK(client.code == 0);
    CHECK(client.out == "echoed 300 messages\n");
    ::kill(server.pid, SIGINT);
    CHECK(wait_exit(server.pid, std::chrono::seconds(10)) == 0);
    ::close(server.out);
  }

  TEST_CASE("echo_server --recv pool echoes through the loop's buffer pool, both models") {
    for (const char* model : {"proactor", "reactor"}) {
      auto [server, port] = start_server(
          {example_path("echo_server"), "--port", "0", "--recv", "pool", "--model", model});
      Run client =
          run({example_path("echo_client"), "--port", port, "--count", "300", "--size", "5000"});
      CHECK(client.code == 0);
      CHECK(client.out == "echoed 300 messages\n");
      ::kill(server.pid, SIGINT);
      CHECK(wait_exit(server.pid, std::chrono::seconds(10)) == 0);
      ::close(server.out);
    }
  }

  TEST_CASE("reactor_timers: every ticks three times, a timer cancels another") {
    Run r = run({example_path("reactor_timers")});
    CHECK(r.code == 0);
    CHECK(r.out.find("every: tick 3\n") != std::string::npos);
    CHECK(r.out.find("every: tick 4") == std::string::npos);
    CHECK(r.out.find("at: cancelled by the 40ms timer") != std::string::npos);
    CHECK(r.out.find("epoll: done") != std::string::npos);
  }

  TEST_CASE("watchers: the reader receives what the writer's watcher sent") {
    Run r = run({example_path("watchers")});
    CHECK(r.code == 0);
    CHECK(r.out == "reader got: hello from a watcher\n");
  }

  TEST_CASE("signals: counts SIGUSR1 and stops on SIGINT") {
    Run r = run({example_path("signals"), "--self-test"});
    CHECK(r.code == 0);
    CHECK(r.out.find("signal 2 (SIGINT): stopping") != std::string::npos);
    CHECK(r.out.find("got 3 SIGUSR1") != std::string::npos);
  }

  TEST_CASE("wakeup: a worker thread's results reach the loop") {
    Run r = run({example_path("wakeup")});
    CHECK(r.code == 0);
    CHECK(r.out == "loop received 1..100, sum 5050\n");
  }

  TEST_CASE("pidfd: reports an exit code and a kill") {
    Run r = run({example_path("pidfd")});
    CHECK(r.code == 0);
    CHECK(r.out.find("child quick exited with code 3") != std::string::npos);
    CHECK(r.out.find("child sleeper killed by signal 9") != std::string::npos);
  }

  TEST_CASE("line_server answers line_client, connected by host name, on both models") {
    for (const char* model : {"proactor", "reactor"}) {
      CAPTURE(model);
      auto [server, port] =
          start_server({example_path("line_server"), "--port", "0", "--model", model});
      Run client = run(
          {example_path("line_client"), "--port", port, "--host", "localhost", "--model", model},
          std::chrono::seconds(20), "one\ntwo\nthree\n");
      CHECK(client.code == 0);
      CHECK(client.out == "echo: one\necho: two\necho: three\n");
      ::kill(server.pid, SIGTERM);
      CHECK(wait_exit(server.pid, std::chrono::seconds(10)) == 0);
      ::close(server.out);
    }
  }

  TEST_CASE("spawn streams a child's output and reports its exit status") {
    Run r = run({example_path("spawn")});
    CHECK(r.code == 0);
    CHECK(r.out.find("child says: hello\nchild says: world\n") == 0);
    CHECK(r.out.find("exited with code 7") != std::string::npos);
  }

  TEST_CASE("chat_server relays lines and disconnects a client that does not read") {
    auto [server, port] =
        start_server({example_path("chat_server"), "--port", "0", "--max-queue", "65536"});
    auto connect_to = [&](int rcvbuf) {
      int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (rcvbuf) ::setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<std::uint16_t>(std::stoi(port)));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
      return s;
    };
    int talker = connect_to(0), listener = connect_to(0), sleeper = connect_to(4096);
    ::usleep(100'000);  // all three have joined
    REQUIRE(::send(talker, "hello\n", 6, MSG_NOSIGNAL) == 6);
    std::string got = read_until(listener, "\n", std::chrono::seconds(5));
    CHECK(got.find(": hello\n") != std::string::npos);
    // The sleeper never reads; the listener keeps reading. Flood.
    std::string line(1000, 'x');
    line += '\n';
    bool listener_alive = true;
    for (int i = 0; i < 4000; ++i) {
      if (::send(talker, line.data(), line.size(), MSG_NOSIGNAL) !=
          static_cast<ssize_t>(line.size()))
        break;
      char sink[65536];
      while (::recv(listener, sink, sizeof(sink), MSG_DONTWAIT) > 0) {
      }
      if (i % 500 == 0) listener_alive = ::send(listener, "", 0, MSG_NOSIGNAL) == 0;
    }
    CHECK(listener_alive);
    // The sleeper was cut off: draining what it holds ends in EOF or a reset.
    bool ended = false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!ended && std::chrono::steady_clock::now() < deadline) {
      char sink[65536];
      pollfd p{sleeper, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      ssize_t n = ::recv(sleeper, sink, sizeof(sink), 0);
      ended = n <= 0;
    }
    CHECK(ended);
    ::close(talker);
    ::close(listener);
    ::close(sleeper);
    ::kill(server.pid, SIGINT);
    CHECK(wait_exit(server.pid, std::chrono::seconds(10)) == 0);
    ::close(server.out);
  }

  TEST_CASE("socket_lifecycle walks connect, send, shutdown, read to EOF, close") {
    Run r = run({example_path("socket_lifecycle")});
    CHECK(r.code == 0);
    CHECK(r.out ==
          "1. connected\n2. sent 16 bytes\n3. shut down the write side\n"
          "4. read to EOF: \"you said: hello, lifecycle\"\n5. closed\n");
  }

  TEST_CASE("echo_server --max-seconds stops by itself") {
    auto [server, port] =
        start_server({example_path("echo_server"), "--port", "0", "--max-seconds", "1"});
    CHECK(wait_exit(server.pid, std::chrono::seconds(10)) == 0);
    ::close(server.out);
  }

  TEST_CASE("echo_server rejects a bad --model with a clear message and exit code") {
    Run r = run({example_path("echo_server"), "--port", "0", "--model", "kqueue"});
    CHECK(r.code == 2);
  }

  TEST_CASE("timers prints ticks in deadline order and cancels the hour timer") {
    Run r = run({example_path("timers")});
    CHECK(r.code == 0);
    CHECK(r.out.find("fast tick 1\nslow tick 1\nfast tick 2\ncallback at 25ms\nfast tick 3\nslow "
                     "tick 2\n") == 0);
    CHECK(r.out.find("hour timer cancelled") != std::string::npos);
  }

  TEST_CASE("read_write carries lines through a pipe and reads a file at an offset") {
    Run r = run({example_path("read_write")});
    CHECK(r.code == 0);
    CHECK(r.out == "pipe carried: line 1\nline 2\nline 3\nfile at offset 7: world\n");
  }

  TEST_CASE("echo_server --threads 2 serves 200 concurrent connections across both loops") {
    auto [server, port] =
        start_server({example_path("echo_server"), "--port", "0", "--threads", "2"});
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(std::stoi(port)));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    constexpr int kConns = 200;
    std::vector<int> fds;
    for (int i = 0; i < kConns; ++i) {  // all open at once
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      REQUIRE(fd >= 0);
      timeval tv{5, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
      fds.push_back(fd);
    }
    for (int i = 0; i < kConns; ++i) {
      std::string msg = "conn " + std::to_string(i) + "\n";
      REQUIRE(::send(fds[static_cast<std::size_t>(i)], msg.data(), msg.size(), MSG_NOSIGNAL) ==
              static_cast<ssize_t>(msg.size()));
    }
    int echoed = 0;
    for (int i = 0; i < kConns; ++i) {
      std::string msg = "conn " + std::to_string(i) + "\n", got;
      char buf[64];
      while (got.size() < msg.size()) {
        ssize_t n = ::recv(fds[static_cast<std::size_t>(i)], buf, sizeof buf, 0);
        if (n <= 0) break;
        got.append(buf, static_cast<std::size_t>(n));
      }
      echoed += got == msg;
    }
    CHECK(echoed == kConns);
    for (int fd : fds) ::close(fd);
    ::kill(server.pid, SIGTERM);
    std::string tail = read_until(server.out, "\n", std::chrono::seconds(10));
    CHECK(wait_exit(server.pid, std::chrono::seconds(10)) == 0);
    ::close(server.out);
    // "connections per loop: A B": every connection counted once, both loops used
    long a = -1, b = -1;
    REQUIRE(std::sscanf(tail.c_str(), "connections per loop: %ld %ld", &a, &b) == 2);
    CHECK(a + b == kConns);
    CHECK(a > 0);
    CHECK(b > 0);
  }

  TEST_CASE("timeout_client gets its reply, and says so clearly when none comes in time") {
    auto [server, port] = start_server({example_path("echo_server"), "--port", "0"});
    Run ok = run({example_path("timeout_client"), "--port", port, "--message", "ping"});
    CHECK(ok.code == 0);
    CHECK(ok.out == "reply: ping\n");
    ::kill(server.pid, SIGTERM);
    CHECK(wait_exit(server.pid, std::chrono::seconds(10)) == 0);
    ::close(server.out);

    // A listener that never answers: the kernel completes the connect, no reply follows.
    int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(l, 8) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(l, reinterpret_cast<sockaddr*>(&addr), &len);
    const std::string silent = std::to_string(ntohs(addr.sin_port));
    for (const char* model : {"proactor", "reactor"}) {
      Run t = run({example_path("timeout_client"), "--port", silent, "--timeout-ms", "150",
                   "--model", model});
      CHECK(t.code == 3);
      CHECK(t.out == "timed out: no reply from 127.0.0.1:" + silent + " within 150 ms\n");
    }
    ::close(l);
  }

  TEST_CASE("fan_out gathers 50 concurrent exchanges with when_all") {
    auto [server, port] =
        start_server({example_path("echo_server"), "--port", "0", "--threads", "2"});
    Run r = run({example_path("fan_out"), "--port", port, "--connections", "50", "--size", "100"});
    CHECK(r.code == 0);
    CHECK(r.out == "50 replies, 5000 bytes\n");
    ::kill(server.pid, SIGINT);
    CHECK(wait_exit(server.pid, std::chrono::seconds(10)) == 0);
    ::close(server.out);
  }

  TEST_CASE("resp_server speaks RESP2 and inline commands, pipelined, both models, both recvs") {
    for (const char* model : {"proactor", "reactor"})
      for (const char* recv : {"own", "pool"}) {
        CAPTURE(model);
        CAPTURE(recv);
        auto [server, port] = start_server(
            {example_path("resp_server"), "--port", "0", "--model", model, "--recv", recv});
        int fd = connect_to(port);
        // one write, many commands (pipelining), a command split across writes
        send_str(fd,
                 "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n41\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"
                 "GET k\r\nPING\r\nECHO hi\r\nTTL k\r\nSET t v PX 100000\r\nEXISTS k t nope\r\n");
        send_str(fd,
                 "MSET a 1 b 2\r\nMGET a b c\r\nDEL a b c\r\nINCR a\r\nDECR a\r\nSET s x\r\nINCR "
                 "s\r\n*2\r\n$3\r\nGE");
        ::usleep(20'000);
        send_str(fd,
                 "T\r\n$1\r\nk\r\nEXPIRE k 100\r\nTTL nope\r\nCONFIG GET save\r\nCOMMAND\r\nNOSUCH "
                 "x\r\nGET\r\nQUIT\r\n");
        const std::string expect =
            "+OK\r\n:42\r\n$2\r\n42\r\n+PONG\r\n$2\r\nhi\r\n:-1\r\n+OK\r\n:2\r\n"
            "+OK\r\n*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n:2\r\n:1\r\n:0\r\n+OK\r\n"
            "-ERR value is not an integer or out of range\r\n$2\r\n42\r\n:1\r\n:-2\r\n*0\r\n*0\r\n"
            "-ERR unknown command 'NOSUCH'\r\n-ERR wrong number of arguments for 'get' "
            "command\r\n+OK\r\n";
        CHECK(read_all(fd) == expect);  // QUIT: the server closed the connection
        ::close(fd);
        // malformed input: an error, the connection closed, the server still up
        fd = connect_to(port);
        send_str(fd, "*2\r\n#oops\r\n");
        CHECK(read_all(fd) == "-ERR Protocol error: expected '$'\r\n");
        ::close(fd);
        fd = connect_to(port);
        send_str(fd, "PING\r\nQUIT\r\n");
        CHECK(read_all(fd) == "+PONG\r\n+OK\r\n");
        ::close(fd);
        ::kill(server.pid, SIGTERM);
        CHECK(wait_exit(server.pid, std::chrono::seconds(10)) == 0);
        ::close(server.out);
      }
  }

  TEST_CASE("http_hello: keep-alive, pipelining, split requests, bodies, 400, Connection: close") {
    for (const char* model : {"proactor", "reactor"})
      for (const char* recv : {"own", "pool"}) {
        CAPTURE(model);
        CAPTURE(recv);
        auto [server, port] = start_server(
            {example_path("http_hello"), "--port", "0", "--model", model, "--recv", recv});
        const std::string ok =
            "HTTP/1.1 200 OK\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: "
            "13\r\n\r\n"
            "Hello, World!";
        const std::string ok_close =
            "HTTP/1.1 200 OK\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
            "Connection: close\r\n\r\nHello, World!";
        int fd = connect_to(port);
        send_str(fd,
                 "GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: "
                 "4\r\n\r\nbodyGET / HT");
        ::usleep(20'000);
        send_str(
            fd,
            "TP/1.1\r\nHost: a\r\n\r\nGET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        CHECK(read_all(fd) == ok + ok + ok + ok_close);
        ::close(fd);
        fd = connect_to(port);  // a body split across receives
        send_str(fd, "POST /y HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\nabcd");
        ::usleep(20'000);
        send_str(fd, "efghGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        CHECK(read_all(fd) == ok + ok_close);
        ::close(fd);
        fd = connect_to(port);
        send_str(fd, "GET / HTTP/1.0\r\n\r\n");  // 1.0 without keep-alive: closed after
        CHECK(read_all(fd) == ok_close);
        ::close(fd);
        fd = connect_to(port);
        send_str(fd, "NOT A REQUEST\r\n\r\n");
        std::string bad = read_all(fd);
        CHECK(bad.rfind("HTTP/1.1 400 Bad Request\r\n", 0) == 0);
        ::close(fd);
        ::kill(server.pid, SIGTERM);
        CHECK(wait_exit(server.pid, std::chrono::seconds(10)) == 0);
        ::close(server.out);
      }
  }

  // Issue 14: no --help anywhere, --port 99999 listened on 34463, unknown
  // flags and flags without their value were ignored, spawn --help tried
  // to exec "--help", echo_client --count -5 exited 0.
  TEST_CASE("every example prints its usage for --help and rejects bad arguments with exit 2") {
    const std::vector<std::string> all = {
        "echo_server", "echo_client",      "timers",         "read_write", "reactor_timers",
        "watchers",    "signals",          "wakeup",         "pidfd",      "line_server",
        "line_client", "spawn",            "chat_server",    "socket_lifecycle",
        "timeout_client", "fan_out",       "resp_server",    "http_hello",
        "copy_file",   "udp_echo"};
    for (const auto& name : all) {
      CAPTURE(name);
      Run help = run({example_path(name), "--help"}, std::chrono::seconds(5));
      CHECK(help.code == 0);
      CHECK(help.out.rfind("usage: " + name, 0) == 0);
      CHECK(help.out.find("--help") != std::string::npos);
      CHECK(run({example_path(name), "--no-such-flag"}, std::chrono::seconds(5)).code == 2);
      CHECK(run({example_path(name), "--help=x"}, std::chrono::seconds(5)).code == 2);
    }
    // A flag missing its value, ports out of range, a value that is no number.
    const std::vector<std::vector<std::string>> bad = {
        {"echo_server", "--port"},
        {"echo_server", "--port", "99999"},
        {"echo_server", "--port", "-1"},
        {"echo_server", "--port", "80x"},
        {"echo_server", "--port", "0", "--port", "0"},
        {"echo_server", "--threads", "0"},
        {"echo_server", "--model", "reactor", "--backend", "uring"},
        {"echo_server", "--send-timeout", "0"},
        {"echo_server", "--timeout", "5 minutes"},
        {"echo_client", "--port", "7", "--count", "-5"},
        {"echo_client", "--port", "7", "--size", "0"},
        {"echo_client", "--count", "5"},  // no port
        {"echo_client", "--port", "7", "--host", "not-an-address"},
        {"fan_out", "--port", "7", "--connections", "0"},
        {"timeout_client", "--port", "7", "--timeout-ms", "-1"},
        {"line_client", "--port", "65536"},
        {"resp_server", "--query-buffer-limit", "1x"},
        {"resp_server", "--output-low", "2mb", "--output-high", "1mb"},
        {"http_hello", "--max-headers", "0"},
        {"http_hello", "--recv"},
        {"chat_server", "--max-queue", "-1"},
        {"timers", "--backend", "kqueue"},
        {"signals", "--self-test=yes"},
        {"watchers", "extra"},
        {"copy_file", "--depth", "0", "a", "b"},
        {"copy_file", "--chunk", "1x", "a", "b"},
        {"copy_file", "only-one"},
        {"udp_echo", "server", "--port", "99999"},
        {"udp_echo", "client", "--count", "5"},  // no port
        {"udp_echo", "client", "--port", "7", "--max-seconds", "1"},  // a server flag
        {"udp_echo", "both"},
    };
    for (auto args : bad) {
      const std::string joined = [&] {
        std::string j;
        for (auto& a : args) j += a + " ";
        return j;
      }();
      CAPTURE(joined);
      args[0] = example_path(args[0]);
      CHECK(run(args, std::chrono::seconds(5)).code == 2);
    }
  }

  TEST_CASE("spawn --help prints its usage instead of running --help; -- passes a command on") {
    Run help = run({example_path("spawn"), "--help"});
    CHECK(help.code == 0);
    CHECK(help.out.rfind("usage: spawn", 0) == 0);
    Run cmd = run({example_path("spawn"), "--", "sh", "-c", "echo --help; exit 3"});
    CHECK(cmd.code == 0);
    CHECK(cmd.out.find("child says: --help\n") == 0);
    CHECK(cmd.out.find("exited with code 3") != std::string::npos);
  }

  // Issue 14: echo_client sent a whole message before reading any of its
  // echo, so one larger than the socket buffers deadlocked.
  TEST_CASE("echo_client reads while it writes: a 10 MB message does not deadlock") {
    auto [server, port] = start_server({example_path("echo_server"), "--port", "0"});
    Run client = run({example_path("echo_client"), "--port", port, "--count", "2", "--size",
                      "10000000"},
                     std::chrono::seconds(30));
    CHECK(client.code == 0);
    CHECK(client.out == "echoed 2 messages\n");
    CHECK(stop_server(server) == 0);
  }

  TEST_CASE("copy_file copies a file byte for byte on both models") {
    const lev::test::TempDir dir("copy");
    const std::string src = dir.file("src"), dst = dir.file("dst");
    std::string data(3 * 1024 * 1024 + 123, '\0');
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + i / 977);
    {
      std::FILE* f = std::fopen(src.c_str(), "wb");
      REQUIRE(f);
      std::fwrite(data.data(), 1, data.size(), f);
      std::fclose(f);
    }
    for (const char* model : {"proactor", "reactor"}) {
      CAPTURE(model);
      Run r = run({example_path("copy_file"), "--depth", "8", "--chunk", "65536", "--model",
                   model, src, dst});
      CHECK(r.code == 0);
      CHECK(r.out.find("copied " + std::to_string(data.size()) + " bytes") == 0);
      std::FILE* f = std::fopen(dst.c_str(), "rb");
      REQUIRE(f);
      std::string back(data.size() + 1, '\0');
      back.resize(std::fread(back.data(), 1, back.size(), f));
      std::fclose(f);
      CHECK(back == data);
    }
    CHECK(run({example_path("copy_file"), dir.file("missing"), dst}).code == 1);
  }

  TEST_CASE("udp_echo server echoes for udp_echo client on both models") {
    for (const char* model : {"proactor", "reactor"}) {
      CAPTURE(model);
      auto [server, port] = start_server(
          {example_path("udp_echo"), "server", "--port", "0", "--max-seconds", "10", "--model", model});
      Run r = run({example_path("udp_echo"), "client", "--port", port, "--count", "200", "--model",
                   model});
      CHECK(r.code == 0);
      CHECK(r.out == "echoed 200 of 200\n");
      ::kill(server.pid, SIGTERM);
      CHECK(wait_exit(server.pid, std::chrono::seconds(10)) == 0);
      ::close(server.out);
    }
  }
}
