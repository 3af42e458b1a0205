#!/usr/bin/env python3
"""lev's servers against the servers users would otherwise pick, under the
users' own load tools. Run through bench/compare.sh (which installs them).

  resp_server (lev proactor, lev reactor) vs redis-server (one thread, no
  persistence) under redis-benchmark -P 1 and -P 16, 50 clients;
  http_hello (lev proactor, lev reactor) vs nginx (one worker, `return 200`)
  under wrk, 50 connections;
  bench/https_hello (lev::tls) vs nginx with TLS, both TLS 1.3 with
  AES-128-GCM on one EC P-256 certificate, under wrk over https: keep-alive,
  and "Connection: close" (a new connection and handshake per request);
  then the echo bench (lev vs raw liburing / raw epoll) at 64 B and 4 KiB,
  50 and 1,000 connections.

Server on CPU 0, load tool on CPU 1; peers alternated round by round (A B C,
B C A, ...); medians. Server CPU per request comes from /proc/PID/stat
(utime + stime) read around each load run. Every load is bounded in time or
count and runs on 127.0.0.1."""

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class Server:
    """A server process pinned to CPU 0; stopped with SIGTERM."""

    def __init__(self, argv, port=None, cwd=None):
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, cwd=cwd, text=True)
        if port is None:  # lev examples print "listening on 127.0.0.1:PORT"
            line = self.proc.stdout.readline()
            m = re.search(r":(\d+)\s*$", line)
            if not m:
                self.stop()
                raise RuntimeError(f"unexpected first line: {line!r}")
            port = int(m.group(1))
        self.port = port
        wait_port(port, self.proc)

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_redis(tmp):
    port = free_port()
    return Server(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--io-threads", "1", "--protected-mode", "no",
                   "--daemonize", "no", "--logfile", "", "--dir", tmp], port=port)


def make_cert(tmp):
    """One throw-away EC P-256 certificate for localhost / 127.0.0.1: the
    same for lev and nginx."""
    cert, key = os.path.join(tmp, "https.pem"), os.path.join(tmp, "https.key")
    if not os.path.exists(cert):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
    return cert, key


TLS_SUITE = "TLS_AES_128_GCM_SHA256"  # TLS 1.3 only, AES-128-GCM, on both sides


def start_nginx(tmp, tls=False):
    """nginx, one worker, answering "Hello, World!"; with `tls`, TLS 1.3
    with TLS_SUITE on make_cert's certificate."""
    port = free_port()
    name, listen, ssl = "nginx", f"127.0.0.1:{port}", ""
    if tls:
        cert, key = make_cert(tmp)
        name, listen = "nginx-tls", listen + " ssl"
        ssl = f"""
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites {TLS_SUITE};"""
    conf = os.path.join(tmp, name + ".conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
master_process off;
daemon off;
error_log {tmp}/{name}-error.log;
pid {tmp}/{name}.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen {listen};{ssl}
    location / {{ default_type text/plain; return 200 "Hello, World!"; }}
  }}
}}
""")
    return Server(["nginx", "-c", conf, "-p", tmp], port=port)


def start_lev_https(build, tmp, model):
    cert, key = make_cert(tmp)
    return Server([f"{build}/bench/https_hello", "--port", "0", "--model", model, "--cert", cert,
                   "--key", key, "--tls13-only", "--ciphersuites", TLS_SUITE])


def client(argv, timeout):
    return subprocess.run(["taskset", "-c", "1"] + argv, capture_output=True, text=True,
                          timeout=timeout)


def redis_load(server, pipeline, requests):
    """redis-benchmark SET and GET; returns (req/s, p99 ms, cpu us/req)."""
    c0 = server.cpu()
    r = client(["redis-benchmark", "-p", str(server.port), "-c", "50", "-n", str(requests),
                "-P", str(pipeline), "-t", "set,get", "--csv"], timeout=600)
    c1 = server.cpu()
    rows = [line.replace('"', "").split(",") for line in r.stdout.splitlines()]
    rows = [row for row in rows if row and row[0] in ("SET", "GET")]
    if r.returncode != 0 or len(rows) != 2:
        raise RuntimeError(f"redis-benchmark failed: {r.stdout[-300:]} {r.stderr[-300:]}")
    rps = statistics.mean(float(row[1]) for row in rows)
    p99 = max(float(row[6]) for row in rows)
    return rps, p99, (c1 - c0) * 1e6 / (2 * requests)


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v


def wrk_load(server, seconds, scheme="http", close=False):
    """wrk, 50 connections (close: "Connection: close", a new connection,
    and over https a full handshake, per request); returns (req/s, p99 ms,
    cpu us/req)."""
    c0 = server.cpu()
    extra = ["-H", "Connection: close"] if close else []
    r = client(["wrk", "-t1", "-c50", f"-d{seconds}s", "--latency"] + extra +
               [f"{scheme}://127.0.0.1:{server.port}/"], timeout=seconds + 60)
    c1 = server.cpu()
    out = r.stdout
    if r.returncode != 0 or "Socket errors" in out or "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors: {out[-400:]}")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # not "+/- Stdev 85.99%"
    return rps, p99, (c1 - c0) * 1e6 / max(total, 1)


def check_resp(build, tmp):
    """resp_server passes redis-benchmark's own command set without errors."""
    s = Server([f"{build}/examples/resp_server", "--port", "0"])
    try:
        r = client(["redis-benchmark", "-p", str(s.port), "-t", "ping,set,get,incr,mset", "-q",
                    "-n", "20000"], timeout=300)
        bad = [line for line in (r.stdout + r.stderr).splitlines()
               if "rror" in line and "CONFIG" not in line]
        return r.returncode == 0 and not bad, bad
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-release")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3, help="wrk duration per run")
    ap.add_argument("--requests", type=int, default=100000,
                    help="redis-benchmark requests per test at -P 1 (x10 at -P 16)")
    ap.add_argument("--skip-echo", action="store_true")
    ap.add_argument("--only-https", action="store_true",
                    help="only the https rows (lev's https_hello vs nginx with TLS)")
    a = ap.parse_args()
    b = a.build
    tmp = tempfile.mkdtemp(prefix="lev-compare-")

    if not a.only_https:
        ok, bad = check_resp(b, tmp)
        print(f"resp_server under redis-benchmark -t ping,set,get,incr,mset: "
              f"{'no errors' if ok else 'ERRORS: ' + '; '.join(bad[:3])}")

    resp_servers = [
        ("lev proactor", lambda: Server([f"{b}/examples/resp_server", "--port", "0", "--model", "proactor"])),
        ("lev reactor", lambda: Server([f"{b}/examples/resp_server", "--port", "0", "--model", "reactor"])),
        ("redis-server", lambda: start_redis(tmp)),
    ]
    http_servers = [
        ("lev proactor", lambda: Server([f"{b}/examples/http_hello", "--port", "0", "--model", "proactor"])),
        ("lev reactor", lambda: Server([f"{b}/examples/http_hello", "--port", "0", "--model", "reactor"])),
        ("nginx", lambda: start_nginx(tmp)),
    ]
    https_servers = [
        ("lev proactor", lambda: start_lev_https(b, tmp, "proactor")),
        ("lev reactor", lambda: start_lev_https(b, tmp, "reactor")),
        ("nginx", lambda: start_nginx(tmp, tls=True)),
    ]
    benches = [
        ("resp -P 1", resp_servers, lambda s: redis_load(s, 1, a.requests)),
        ("resp -P 16", resp_servers, lambda s: redis_load(s, 16, a.requests * 10)),
        ("http (wrk)", http_servers, lambda s: wrk_load(s, a.seconds)),
        ("https k-a", https_servers, lambda s: wrk_load(s, a.seconds, "https")),
        ("https conn", https_servers, lambda s: wrk_load(s, a.seconds, "https", close=True)),
    ]
    if a.only_https:
        benches = [row for row in benches if row[0].startswith("https")]
        a.skip_echo = True
    results = {}
    for name, servers, load in benches:
        for rnd in range(a.rounds):
            for i in range(len(servers)):
                label, start = servers[(i + rnd) % len(servers)]  # rotate the order
                s = start()
                try:
                    results.setdefault((name, label), []).append(load(s))
                finally:
                    s.stop()

    print()
    print(f"{a.rounds} rounds, medians; server on cpu 0, load tool on cpu 1; "
          "ratios against the peer (redis-server / nginx) of the same rows")
    print(f"{'bench':<12} {'server':<14} {'req/s':>10} {'p99 ms':>8} {'cpu us/req':>11} "
          f"{'req/s vs':>9} {'cpu vs':>8}")
    for name, servers, _ in benches:
        peer = servers[-1][0]
        med = {label: [statistics.median(x[k] for x in results[(name, label)]) for k in range(3)]
               for label, _ in servers}
        for label, _ in servers:
            rps, p99, cpu = med[label]
            print(f"{name:<12} {label:<14} {rps:>10.0f} {p99:>8.3f} {cpu:>11.2f} "
                  f"{rps / med[peer][0]:>8.2f}x {cpu / med[peer][2]:>7.2f}x")
    sys.stdout.flush()

    if not a.skip_echo:
        print()
        for size, conns in ((64, 50), (4096, 50), (64, 1000)):
            subprocess.run([f"{b}/bench/echo_bench", "--size", str(size), "--conns", str(conns),
                            "--seconds", "2", "--rounds", str(a.rounds)], check=False)
            print()


if __name__ == "__main__":
    main()
