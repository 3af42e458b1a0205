#!/usr/bin/env python3
"""Soak: thousands of connections to the example servers, every byte checked.

  python3 bench/soak.py [--build build] [--seconds 20] [--concurrency 400]
                        [--reset-rate 0.1] [--seed N] [--servers echo,line,resp]
                        [--models proactor,reactor] [--rounds 1]

For each server (echo_server, line_server, resp_server) on each model, for
--seconds: connections opened --concurrency at a time, each sending a random
number of messages of random sizes (echo: raw bytes up to 256 KiB, written
while the echo is read; line: up to 20 lines of up to 8 KiB; resp: SET of a random
binary value up to 256 KiB, then GET of it and a pipeline of INCRs), every
reply checked byte for byte. A fraction (--reset-rate) of the connections
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
import os
import random
import resource
import socket
import struct
import subprocess
import sys
import time


class Server:
    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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

    def fail(self, what):
        self.wrong += 1
        if len(self.errors) < 5:
            self.errors.append(what)


def reset(writer):
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


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
        if reset_at == i:  # part of the pipeline, cut anywhere
            writer.write(request[: rng.randint(0, len(request))])
            reset(writer)
            tally.leftover += [key, counter]  # deleted at the end
            return True
        writer.write(request)
        expect = b"+OK\r\n" + b"$%d\r\n%s\r\n" % (len(value), value)
        expect += b"".join(b":%d\r\n" % n for n in range(1, incrs + 1))
        expect += b":%d\r\n" % (2 if incrs else 1)
        got = await reader.readexactly(len(expect))
        if got != expect:
            tally.fail(f"resp: round {i}: got {got[:60]!r}...")
            break
        tally.checked += len(got)
    writer.close()
    await writer.wait_closed()
    return False


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
            else:
                was_reset = await resp_session(port, rng, tally, reset_at, conn_id)
            tally.resets += was_reset
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
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
    ap.add_argument("--servers", default="echo,line,resp")
    ap.add_argument("--models", default="proactor,reactor")
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * a.concurrency + 64)), hard))
    print(f"soak: seed {seed}, {a.seconds:g} s per run, {a.concurrency} connections at a time, "
          f"{a.reset_rate:.0%} reset at a random point")
    head = (f"{'server':<12} {'model':<9} {'round':>5} {'conns':>6} {'resets':>6} {'MiB checked':>11} {'wrong':>5} "
            f"{'RSS KiB before':>14} {'after':>7} {'trimmed':>7} {'fds before':>10} {'after':>5} {'exit':>4}")
    print(head)
    failed = False
    for kind in a.servers.split(","):
        for model in a.models.split(","):
            server = Server([f"{a.build}/examples/{kind}_server", "--port", "0", "--model", model])
            time.sleep(0.2)
            rss0, fds0 = server.rss_kib(), server.fds()
            for r in range(1, a.rounds + 1):
                tally = asyncio.run(soak(kind, server.port, a.seconds, a.concurrency, a.reset_rate,
                                         seed + r))
                settle(server, fds0)
                rss1, fds1 = server.rss_kib(), server.fds()
                rss2 = server.trim()
                code = server.stop() if r == a.rounds else 0
                print(f"{kind + '_server':<12} {model:<9} {r:>5} {tally.connections:>6} {tally.resets:>6} "
                      f"{tally.checked / 2**20:>11.1f} {tally.wrong:>5} {rss0:>14} {rss1:>7} {rss2:>7} "
                      f"{fds0:>10} {fds1:>5} {code:>4}", flush=True)
                for e in tally.errors:
                    print(f"    {e}")
                failed |= tally.wrong > 0 or fds1 > fds0 or code != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
