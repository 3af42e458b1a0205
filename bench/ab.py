#!/usr/bin/env python3
"""A/B rows under redis-benchmark or wrk, alternated round by round (A B C A B C),
medians, ratios against the first row. Reuses compare.py's servers and loads.

    python3 bench/ab.py P1 5 redis resp_server resp_server::own resp_server:reactor
    python3 bench/ab.py wrk 5 nginx http_hello http_hello::own

Mode: P<N> (redis-benchmark -P N, SET and GET) or wrk. A row is `redis`,
`nginx`, or EXAMPLE[:MODEL[:RECV]] (an example server of the build, with
--model MODEL and --recv RECV when given), optionally after VAR=VALUE@ to
start the server with that environment variable set (e.g.
LEV_URING_LIBURING_ENTER=1@http_hello).
"""
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import Server, redis_load, start_nginx, start_redis, wrk_load  # noqa: E402


def start(row, build, tmp):
    env, _, row = row.rpartition("@")
    if env:
        var, _, value = env.partition("=")
        os.environ[var] = value
        try:
            return start(row, build, tmp)
        finally:
            del os.environ[var]
    if row == "redis":
        return start_redis(tmp)
    if row == "nginx":
        return start_nginx(tmp)
    name, model, recv = (row.split(":") + ["", ""])[:3]
    argv = [f"{build}/examples/{name}", "--port", "0"]
    if model:
        argv += ["--model", model]
    if recv:
        argv += ["--recv", recv]
    return Server(argv)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    mode, rounds, rows = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    build = os.environ.get("BUILD", "build-release")
    if mode != "wrk" and not (mode.startswith("P") and mode[1:].isdigit()):
        sys.exit(f"ab.py: mode must be P<N> or wrk, got {mode!r}")
    got = {row: [] for row in rows}
    tmp = tempfile.mkdtemp()
    for _ in range(rounds):
        for row in rows:
            s = start(row, build, tmp)
            try:
                out = wrk_load(s, 3) if mode == "wrk" else redis_load(s, int(mode[1:]), 100000)
            finally:
                s.stop()
            got[row].append(out)
            print(f"{row:32s} {out[0]:10.0f} req/s {out[2]:6.2f} us/req", flush=True)
    print(f"{rounds} rounds, medians; ratios against {rows[0]}")
    print(f"{'row':32s} {'req/s':>10s} {'cpu us/req':>10s} {'req/s vs':>9s} {'cpu vs':>7s}")
    base = None
    for row in rows:
        rps = statistics.median(x[0] for x in got[row])
        cpu = statistics.median(x[2] for x in got[row])
        base = base or (rps, cpu)
        print(f"{row:32s} {rps:10.0f} {cpu:10.2f} {rps / base[0]:8.2f}x {cpu / base[1]:6.2f}x")


if __name__ == "__main__":
    main()
