#!/usr/bin/env python3
"""Soak: thousands of connections to the example servers, every byte checked.

  python3 bench/soak.py [--build build] [--seconds 20] [--concurrency 400]
                        [--reset-rate 0.1] [--seed N] [--servers echo,line,resp,chat,http]
                        [--models proactor,reactor] [--rounds 1] [--chat-members 40]

For each server (echo_server, line_server, resp_server, chat_server,
http_hello) on each model, for --seconds: connections opened --concurrency
at a time, each sending a random number of messages of random sizes (echo:
raw bytes up to 256 KiB, written while the echo is read; line: up to 20
lines of up to 8 KiB; resp: SET of a random binary value up to 256 KiB,
then GET of it and a pipeline of INCRs; chat: the fan-out, --chat-members
at a time, in pairs (paced, so that every member, all reading everything,
keeps up) whose listener must get its talker's lines in order
and whole among everybody else's (every line anyone gets is checked), and
a few sleepers that never read and must be cut off, and nobody else
(the server's log names each member it cuts), --max-queue 256kb
here; http: keep-alive
requests, some pipelined, some with a body, and slow-body clients that
declare 1 GiB and send a byte every 300 ms, which the server must cut
within its body limit, --body-timeout 2s here), every reply checked byte
for byte. A fraction (--reset-rate) of the connections
is reset (SO_LINGER 0) at a random point, mid-message included. The
server's RSS and open descriptors are read from /proc before the first
connection and after the last one has closed (and the server had a moment
to settle; with --rounds N, after each of N soaks of the same server, so
that growth from round to round shows), and once more after malloc_trim(0) (called through gdb when it
is installed: glibc keeps freed memory, which is not a leak). Prints one table; exits 1 when a byte was lost or wrong or an
fd leaked. Bounded: each run stops starting connections after --seconds
and gives the ones in flight 30 s more.
"""
import argparse
import asyncio
import logging
import os
import random
import re
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib


class Server:
    def __init__(self, argv):
        self.err = tempfile.TemporaryFile()  # not a pipe: nobody reads it while it runs
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err)
        line = self.p.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"{argv[0]}: no 'listening on' line: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])

    def rss_kib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def fds(self):
        return len(os.listdir(f"/proc/{self.p.pid}/fd"))

    def trim(self):
        """RSS after glibc's malloc_trim(0) in the server (through gdb): what
        the allocator kept of freed memory set apart from what is in use."""
        try:
            subprocess.run(["gdb", "-p", str(self.p.pid), "-batch", "-ex", "call (int)malloc_trim(0)"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=True)
        except (OSError, subprocess.SubprocessError):
            return -1
        return self.rss_kib()

    def lines(self):
        """Its stderr so far, by lines."""
        self.err.seek(0)
        return self.err.read().decode(errors="replace").splitlines()

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        return self.p.returncode


class Tally:
    def __init__(self):
        self.connections = 0
        self.resets = 0
        self.checked = 0  # reply bytes compared and equal
        self.wrong = 0  # replies that differed, or ended early without a reset
        self.errors = []
        self.leftover = []  # resp keys a reset connection may have left
        self.sleepers = 0  # chat members that never read (each must be cut off)
        self.sleeper_ports = set()  # their local ports: nobody else may be cut for not reading
        self.slow = 0  # http slow-body clients (each must be cut off)

    def fail(self, what):
        self.wrong += 1
        if len(self.errors) < 5:
            self.errors.append(what)


def reset(writer):
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def round_trip(reader, writer, data, expect, cut, rng, tally, what):
    """One round of a request-reply session. With `cut`, a random part of
    `data` goes out and the connection is reset: "reset". Otherwise `data`
    goes out and `expect` must come back: "ok" (tallied), or "wrong" (the
    failure named by `what`)."""
    if cut:
        writer.write(data[: rng.randint(0, len(data))])
        reset(writer)
        return "reset"
    writer.write(data)
    got = await reader.readexactly(len(expect))
    if got != expect:
        tally.fail(f"{what}: got {got[:60]!r}...")
        return "wrong"
    tally.checked += len(got)
    return "ok"


async def echo_session(port, rng, tally, reset_at):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(rng.randint(1, 8)):
        msg = rng.randbytes(rng.choice([1, rng.randint(1, 512), rng.randint(1, 256 << 10)]))
        writer.write(msg)
        if reset_at == i:
            reset(writer)
            return True
        got = await reader.readexactly(len(msg))  # the write drains meanwhile
        if got != msg:
            tally.fail(f"echo: message {i} of {len(msg)} bytes came back different")
            break
        tally.checked += len(got)
    writer.close()
    await writer.wait_closed()
    return False


PRINTABLE = bytes(32 + b % 95 for b in range(256))  # any byte to one of ' '..'~'


async def line_session(port, rng, tally, reset_at):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    for i in range(rng.randint(1, 8)):
        count = rng.randint(1, 20)
        sizes = [rng.choice([rng.randint(0, 80), rng.randint(0, 8 << 10)]) for _ in range(count)]
        lines = [rng.randbytes(n).translate(PRINTABLE) for n in sizes]
        writer.write(b"".join(l + b"\n" for l in lines))
        if reset_at == i:
            reset(writer)
            return True
        for line in lines:
            got = await reader.readline()
            if got != b"echo: " + line + b"\n":
                tally.fail(f"line: got {got[:40]!r}... for a line of {len(line)} bytes")
                writer.close()
                return False
            tally.checked += len(got)
    writer.close()
    await writer.wait_closed()
    return False


def resp_bulk(*words):
    out = [b"*%d\r\n" % len(words)]
    for w in words:
        out.append(b"$%d\r\n%s\r\n" % (len(w), w))
    return b"".join(out)


async def resp_session(port, rng, tally, reset_at, conn_id):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    for i in range(rng.randint(1, 6)):
        key = b"soak:%d:%d" % (conn_id, i)
        value = rng.randbytes(rng.choice([0, rng.randint(1, 100), rng.randint(1, 256 << 10)]))
        incrs = rng.randint(0, 20)
        counter = b"soak:n:%d:%d" % (conn_id, i)
        request = resp_bulk(b"SET", key, value) + resp_bulk(b"GET", key)
        request += b"".join(resp_bulk(b"INCR", counter) for _ in range(incrs))
        request += resp_bulk(b"DEL", key, counter)
        expect = b"+OK\r\n" + b"$%d\r\n%s\r\n" % (len(value), value)
        expect += b"".join(b":%d\r\n" % n for n in range(1, incrs + 1))
        expect += b":%d\r\n" % (2 if incrs else 1)
        # a reset cuts the pipeline anywhere
        done = await round_trip(reader, writer, request, expect, reset_at == i, rng, tally,
                                f"resp: round {i}")
        if done == "reset":
            tally.leftover += [key, counter]  # deleted at the end
            return True
        if done == "wrong":
            break
    writer.close()
    await writer.wait_closed()
    return False


SOAK_LINE = re.compile(rb"^(\d+): soak:(\d+):(\d+):([0-9a-f]{8}):(.*)$")


def soak_line(conn_id, seq, data):
    return b"soak:%d:%d:%08x:%s" % (conn_id, seq, zlib.crc32(data), data)


class ChatReader:
    """Reads a chat member's lines in the background from the start (a
    member that pauses is cut off by the server), checking every one
    (format and CRC), and collects those from one talker (by its soak
    connection id)."""

    def __init__(self, reader, tally, talker_id):
        self.reader, self.tally, self.talker_id = reader, tally, talker_id
        self.got = []  # (seq, data) from the talker, in arrival order
        self.changed = asyncio.Event()
        self.ended = None  # what ended the reading, if it ended
        self.task = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            while True:
                line = await self.reader.readline()
                if not line.endswith(b"\n"):
                    raise asyncio.IncompleteReadError(line, None)
                m = SOAK_LINE.match(line[:-1])
                if not m or zlib.crc32(m.group(5)) != int(m.group(4), 16):
                    self.tally.fail(f"chat: a line came garbled: {line[:60]!r}")
                    raise ConnectionError("garbled")
                self.tally.checked += len(line)
                if int(m.group(2)) == self.talker_id:
                    self.got.append((int(m.group(3)), m.group(5)))
                    self.changed.set()
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as e:
            self.ended = e
            self.changed.set()

    async def until(self, count, seconds=30):
        """Waits until `count` lines from the talker are in (or raises)."""
        async def go():
            while len(self.got) < count:
                if self.ended:
                    raise self.ended
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(go(), seconds)

    def stop(self):
        self.task.cancel()


async def chat_session(port, rng, tally, reset_at, conn_id):
    """A talker and a listener; the listener must get the talker's lines,
    in order and whole, among everybody else's."""
    lr, lw = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    tr, tw = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    listener = ChatReader(lr, tally, conn_id)
    talker = ChatReader(tr, tally, -1)  # reads (and checks) what the others say
    try:
        # Both are members once the listener has the talker's first line.
        tw.write(soak_line(conn_id, 0, b"hello") + b"\n")
        await listener.until(1)
        sent = [(0, b"hello")]
        for i in range(rng.randint(1, 6)):
            await asyncio.sleep(rng.uniform(0.05, 0.3))  # paced: every member reads all of it
            lines = [rng.randbytes(rng.choice([rng.randint(0, 80), rng.randint(0, 512)]))
                     .translate(PRINTABLE) for _ in range(rng.randint(1, 20))]
            for data in lines:
                sent.append((len(sent), data))
                tw.write(soak_line(conn_id, sent[-1][0], data) + b"\n")
            if reset_at == i:
                reset(rng.choice([tw, lw]))
                return True
            await listener.until(len(sent))
        if listener.got != sent:
            tally.fail(f"chat: connection {conn_id}: the listener got {len(listener.got)} lines, "
                       f"not the {len(sent)} sent, or not in order")
    finally:
        listener.stop()
        talker.stop()
        for w in (tw, lw):
            w.close()
    return False


CHAT_MAX_QUEUE = 256 << 10  # the soak's chat_server --max-queue
CHAT_CUT = re.compile(r"client \d+ \(127\.0\.0\.1:(\d+)\) is not reading")


def chat_cuts(server):
    """The ports of the members chat_server has cut "for not reading" so
    far, in order (its log names each one)."""
    return [int(m.group(1)) for line in server.lines() if (m := CHAT_CUT.search(line))]


async def chat_sleeper(port, rng, tally, conn_id, max_queue=CHAT_MAX_QUEUE):
    """A member that never reads, and a companion that sends the room 500
    lines of 1 KB at about 200 KB/s (everybody else keeps up with that):
    past --max-queue the server must cut the sleeper off. It then reads what
    was sent before the cut: EOF must follow within about the limit plus
    the kernel's buffers. The companion is a member too: it reads (and
    checks) everything the room says, as every member but the sleeper does,
    or the server cuts it as well, rightly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    companion = cw = None
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        tally.sleeper_ports.add(sock.getsockname()[1])
        await asyncio.sleep(0.5)  # a member now
        cr, cw = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        companion = ChatReader(cr, tally, -1)
        data = b"s" * 1000
        for seq in range(500):
            cw.write(soak_line(conn_id, seq, data) + b"\n")
            if seq % 20 == 19:
                await cw.drain()
                await asyncio.sleep(0.1)
        await cw.drain()
        companion.stop()
        cw.close()
        companion = cw = None
        await asyncio.sleep(1)
        got = 0
        while True:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 30)
            except (ConnectionError, OSError):
                return  # cut off (reset)
            except asyncio.TimeoutError:
                tally.fail(f"chat: a member that never read was not cut off ({got} bytes, no EOF)")
                return
            if not chunk:
                return  # cut off: EOF after what was queued before the cut
            got += len(chunk)
            if got > max_queue + (512 << 10):
                tally.fail(f"chat: a member that never read got {got} bytes before a cut")
                return
    finally:
        if companion:
            companion.stop()
        if cw:
            cw.close()
        sock.close()


HTTP_OK = (b"HTTP/1.1 200 OK\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
           b"\r\nHello, World!")
HTTP_CLOSE = (b"HTTP/1.1 200 OK\r\nServer: lev\r\nContent-Type: text/plain\r\nContent-Length: 13"
              b"\r\nConnection: close\r\n\r\nHello, World!")


async def http_session(port, rng, tally, reset_at):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rounds = rng.randint(1, 8)
    for i in range(rounds):
        requests, expect = [], b""
        for _ in range(rng.choice([1, 1, rng.randint(1, 10)])):  # sometimes pipelined
            if rng.random() < 0.2:
                body = rng.randbytes(rng.randint(0, 64 << 10))
                requests.append(b"POST /p HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n"
                                % len(body) + body)
            else:
                requests.append(b"GET /%d HTTP/1.1\r\nHost: soak\r\n\r\n" % i)
            expect += HTTP_OK
        last = i == rounds - 1
        if last:  # the last request closes
            requests[-1] = requests[-1].replace(b"Host: soak\r\n", b"Host: soak\r\nConnection: close\r\n", 1)
            expect = expect[: -len(HTTP_OK)] + HTTP_CLOSE
        done = await round_trip(reader, writer, b"".join(requests), expect, reset_at == i, rng,
                                tally, f"http: round {i}")
        if done == "reset":
            return True
        if done == "wrong":
            break
    writer.close()
    await writer.wait_closed()
    return False


async def http_slow_body(port, tally, limit=12.0):
    """Declares a 1 GiB body and sends a byte every 300 ms: the server must
    cut it within its body limit (--body-timeout 2s + the minimum rate)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /slow HTTP/1.1\r\nHost: soak\r\nContent-Length: 1073741824\r\n\r\n")
    got = await reader.readexactly(len(HTTP_OK))
    if got != HTTP_OK:
        tally.fail(f"http: slow body: got {got[:60]!r}")
    began = time.monotonic()
    try:
        while time.monotonic() - began < limit:
            writer.write(b"x")
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), 0.3) == b"":
                    return  # cut off
            except asyncio.TimeoutError:
                pass
        tally.fail(f"http: a slow body was still open after {limit:g} s")
    except (ConnectionError, OSError):
        return  # cut off (reset)
    finally:
        writer.close()


async def soak(kind, port, seconds, concurrency, reset_rate, seed):
    tally = Tally()
    rng_all = random.Random(seed)
    deadline = time.monotonic() + seconds
    next_id = 0

    async def one(conn_id):
        rng = random.Random(rng_all.random())
        reset_at = rng.randint(0, 5) if rng.random() < reset_rate else -1
        try:
            if kind == "echo":
                was_reset = await echo_session(port, rng, tally, reset_at)
            elif kind == "line":
                was_reset = await line_session(port, rng, tally, reset_at)
            elif kind == "chat" and rng.random() < 0.02:
                await chat_sleeper(port, rng, tally, conn_id)
                was_reset = False
                tally.sleepers += 1
            elif kind == "chat":
                was_reset = await chat_session(port, rng, tally, reset_at, conn_id)
            elif kind == "http" and rng.random() < 0.05:
                await http_slow_body(port, tally)
                was_reset = False
                tally.slow += 1
            elif kind == "http":
                was_reset = await http_session(port, rng, tally, reset_at)
            else:
                was_reset = await resp_session(port, rng, tally, reset_at, conn_id)
            tally.resets += was_reset
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as e:
            tally.fail(f"{kind}: connection {conn_id}: {e!r}")
        tally.connections += 1

    async def worker():
        nonlocal next_id
        while time.monotonic() < deadline:
            next_id += 1
            await one(next_id)

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    done, pending = await asyncio.wait(workers, timeout=seconds + 30)
    for w in pending:
        w.cancel()
        tally.fail(f"{kind}: a connection still running 30 s after the end")
    if tally.leftover:  # the store ends empty, so that RSS can go back
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(resp_bulk(b"DEL", *tally.leftover))
        await reader.readline()
        writer.close()
        await writer.wait_closed()
    return tally


def settle(server, before_fds, limit=10.0):
    """Waits until the server holds no more descriptors than before (or limit s)."""
    end = time.monotonic() + limit
    while time.monotonic() < end and server.fds() > before_fds:
        time.sleep(0.1)
    time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=400)
    ap.add_argument("--reset-rate", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--servers", default="echo,line,resp,chat,http")
    ap.add_argument("--chat-members", type=int, default=40,
                    help="chat: members at a time (pairs of them; every line goes to all)")
    ap.add_argument("--models", default="proactor,reactor")
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    # asyncio says "socket.send() raised exception." for writes to a peer a
    # reset (ours) or a cut (the server's) has closed: expected here.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * a.concurrency + 64)), hard))
    print(f"soak: seed {seed}, {a.seconds:g} s per run, {a.concurrency} connections at a time, "
          f"{a.reset_rate:.0%} reset at a random point")
    head = (f"{'server':<12} {'model':<9} {'round':>5} {'conns':>6} {'resets':>6} {'cut':>4} "
            f"{'MiB checked':>11} {'wrong':>5} "
            f"{'RSS KiB before':>14} {'after':>7} {'trimmed':>7} {'fds before':>10} {'after':>5} {'exit':>4}")
    print(head)
    failed = False
    for kind in a.servers.split(","):
        for model in a.models.split(","):
            binary = "http_hello" if kind == "http" else kind + "_server"
            extra = {"http": ["--body-timeout", "2s"],
                     "chat": ["--max-queue", str(CHAT_MAX_QUEUE)]}.get(kind, [])
            server = Server([f"{a.build}/examples/{binary}", "--port", "0", "--model", model] + extra)
            conc = max(1, a.chat_members // 2) if kind == "chat" else a.concurrency
            time.sleep(0.2)
            rss0, fds0 = server.rss_kib(), server.fds()
            sleeper_ports, cuts_seen = set(), 0  # chat: of all rounds, as the server's log is
            for r in range(1, a.rounds + 1):
                tally = asyncio.run(soak(kind, server.port, a.seconds, conc, a.reset_rate,
                                         seed + r))
                settle(server, fds0)
                if kind == "chat":  # every member it cut must have been a sleeper
                    sleeper_ports |= tally.sleeper_ports
                    cuts = chat_cuts(server)[cuts_seen:]
                    readers = [p for p in cuts if p not in sleeper_ports]
                    cuts_seen += len(cuts)
                    for port in readers:
                        tally.fail(f"chat: the server cut 127.0.0.1:{port} for not reading; it read")
                rss1, fds1 = server.rss_kib(), server.fds()
                rss2 = server.trim()
                code = server.stop() if r == a.rounds else 0
                print(f"{binary:<12} {model:<9} {r:>5} {tally.connections:>6} {tally.resets:>6} "
                      f"{tally.sleepers + tally.slow:>4} {tally.checked / 2**20:>11.1f} {tally.wrong:>5} {rss0:>14} {rss1:>7} {rss2:>7} "
                      f"{fds0:>10} {fds1:>5} {code:>4}", flush=True)
                if kind == "chat":
                    print(f"    the server cut {len(cuts)} members for not "
                          f"reading ({tally.sleepers} sleepers, {len(readers)} members that read)")
                for e in tally.errors:
                    print(f"    {e}")
                failed |= tally.wrong > 0 or fds1 > fds0 or code != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
