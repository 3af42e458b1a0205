#!/usr/bin/env python3
"""User-space instructions per message / op, lev against the hand-written
baselines, under valgrind --tool=callgrind (instruction counts do not
depend on how loaded the machine is, unlike times).

Each workload runs twice with two fixed counts; (total(n2) - total(n1)) /
(n2 - n1) is its cost per message, so start-up and shutdown cancel. lev and
its baseline alternate within each round; the median of the rounds is
reported. bench/cost_budget.txt holds the budget of each workload and the
last measured value; --check fails (exit 1) when a workload is over its
budget, --write records what was measured. A row of kind `info` (the
coroutine floors: echo_floor, nop1_floor, nop32_floor) is measured and
shown, never checked.

  python3 bench/cost.py [--build DIR] [--rounds R] [--only W,...] [--check] [--write]
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUDGET = os.path.join(HERE, 'cost_budget.txt')

# name: (lev command, baseline command (None: absolute budget), client mode, conns, counts)
SERVERS = {
    'echo': (['examples/echo_server'], ['bench/raw_uring_echo'], 'echo'),
    'echo_timeout': (['examples/echo_server', '--timeout', '30s'], ['bench/raw_uring_echo'], 'echo'),
    'echo_reactor': (['examples/echo_server', '--model', 'reactor'],
                     ['bench/raw_uring_echo', '--epoll'], 'echo'),
    'http': (['examples/http_hello'], ['bench/raw_uring_echo', '--http'], 'http'),
    # Not lev: the raw loop resuming a bare C++20 coroutine per connection
    # (bench/raw_coro_echo.cpp), against the raw loop. What a coroutine
    # echo server cannot go below with this compiler; lev's echo over it
    # is what lev's guarantees cost.
    'echo_floor': (['bench/raw_uring_echo', '--coro'], ['bench/raw_uring_echo'], 'echo'),
}
# name: (lev workload, baseline workload or None)
OPS = {
    'nop1': ('nop1', 'raw_nop1'),
    'nop32': ('nop32', 'raw_nop32'),
    # Not lev: the raw loop resuming bare coroutines (bench/raw_coro_nop.hpp).
    'nop1_floor': ('coro_nop1', 'raw_nop1'),
    'nop32_floor': ('coro_nop32', 'raw_nop32'),
    'timer': ('timer', None),
}
# lev's row: its coroutine floor's row.
FLOORS = {'echo': 'echo_floor', 'nop1': 'nop1_floor', 'nop32': 'nop32_floor'}
ORDER = ['echo', 'echo_floor', 'echo_timeout', 'echo_reactor', 'http', 'nop1', 'nop1_floor',
         'nop32', 'nop32_floor', 'timer']
CONNS = 50
SERVER_COUNTS = (100, 400)   # round trips per connection: 5,000 and 20,000 messages
OP_COUNTS = (20000, 80000)


def callgrind_total(out_file):
    with open(out_file) as f:
        for line in f:
            if line.startswith('totals:') or line.startswith('summary:'):
                return int(line.split()[1])
    raise RuntimeError('no totals in ' + out_file)


def valgrind(out_file):
    return ['valgrind', '--tool=callgrind', '--callgrind-out-file=' + out_file,
            '--dump-instr=no', '--compress-strings=no']


def run_server(build, cmd, mode, count, tmp):
    out_file = os.path.join(tmp, 'server.cg')
    proc = subprocess.Popen(valgrind(out_file) + [os.path.join(build, cmd[0])] + cmd[1:] +
                            ['--port', '0'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        port = None
        deadline = time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r'listening on .*:(\d+)\s*$', line)
            if m:
                port = m.group(1)
                break
        if not port:
            raise RuntimeError('%s did not start: %s' % (cmd[0], proc.stderr.read()[-2000:]))
        client = subprocess.run([os.path.join(build, 'bench/cost_client'), '--port', port,
                                 '--mode', mode, '--conns', str(CONNS), '--count', str(count)],
                                capture_output=True, text=True, timeout=600)
        m = re.search(r'messages (\d+)', client.stdout)
        if client.returncode != 0 or not m or int(m.group(1)) != CONNS * count:
            raise RuntimeError('client against %s failed: %s %s' %
                               (cmd[0], client.stdout, client.stderr))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return callgrind_total(out_file), CONNS * count


def run_op(build, workload, count, tmp):
    out_file = os.path.join(tmp, 'op.cg')
    r = subprocess.run(valgrind(out_file) + [os.path.join(build, 'bench/cost_ops'), workload,
                                             str(count)], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError('cost_ops %s failed: %s' % (workload, r.stderr[-2000:]))
    return callgrind_total(out_file), count


def per_message(measure):
    """Cost per message from two run lengths."""
    (t1, n1), (t2, n2) = measure(0), measure(1)
    return (t2 - t1) / (n2 - n1)


def read_budget():
    budget = {}
    with open(BUDGET) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            name, kind, limit, *rest = line.split()
            budget[name] = (kind, float('inf') if limit == '-' else float(limit),
                            rest[0] if rest else '-')
    return budget


def write_budget(budget, results):
    lines = []
    with open(BUDGET) as f:
        for line in f:
            body = line.split('#', 1)[0].strip()
            if not body:
                lines.append(line)
                continue
            name, kind, limit, *_ = body.split()
            value = None
            if name in results:
                value = results[name]['ratio'] if kind != 'instr' else results[name]['lev']
            if value is not None:
                measured = '%.2f' % value if kind != 'instr' else '%.0f' % value
            else:
                measured = budget[name][2]
            lines.append('%-14s %-6s %-7s %s\n' % (name, kind, limit, measured))
    with open(BUDGET, 'w') as f:
        f.writelines(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--build', default='build-release', help='build directory (default build-release)')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--only', default='', help='comma-separated workloads')
    ap.add_argument('--check', action='store_true', help='exit 1 when over budget')
    ap.add_argument('--write', action='store_true', help='record the measured values in the budget file')
    a = ap.parse_args()
    names = [n for n in ORDER if not a.only or n in a.only.split(',')]
    budget = read_budget()
    results = {}
    # Every run of one baseline (echo, echo_timeout and echo_floor share
    # raw_uring_echo): the rows' ratios use the median of all of them, so
    # that the raw loop's batching noise (155-254 a single run) weighs less.
    pooled = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            levs = []
            if name in SERVERS:
                key = tuple(SERVERS[name][1])
            else:
                key = OPS[name][1]
            raws = pooled.setdefault(key, []) if key else []
            for _ in range(a.rounds):
                if name in SERVERS:
                    lev_cmd, raw_cmd, mode = SERVERS[name]
                    levs.append(per_message(lambda i: run_server(
                        a.build, lev_cmd, mode, SERVER_COUNTS[i], tmp)))
                    raws.append(per_message(lambda i: run_server(
                        a.build, raw_cmd, mode, SERVER_COUNTS[i], tmp)))
                else:
                    lev_w, raw_w = OPS[name]
                    levs.append(per_message(lambda i: run_op(a.build, lev_w, OP_COUNTS[i], tmp)))
                    if raw_w:
                        raws.append(per_message(lambda i: run_op(a.build, raw_w, OP_COUNTS[i], tmp)))
            results[name] = {'lev': statistics.median(levs), 'levs': levs, 'raws': raws}
            sys.stderr.write('cost: %s done\n' % name)
    for r in results.values():
        r['raw'] = statistics.median(r['raws']) if r['raws'] else None
        r['ratio'] = r['lev'] / r['raw'] if r['raw'] else None
    over = []
    print('instructions per message / op (callgrind, %d rounds, medians; counts %s and %s)'
          % (a.rounds, SERVER_COUNTS, OP_COUNTS))
    print('%-14s %10s %10s %8s %10s  %s' % ('workload', 'lev', 'baseline', 'ratio', 'budget',
                                           'lev per round'))
    for name in names:
        r = results[name]
        kind, limit, _ = budget.get(name, ('ratio', float('inf'), '-'))
        value = r['ratio'] if kind in ('ratio', 'info') else r['lev']
        ok = kind == 'info' or (value is not None and value <= limit)
        if not ok:
            over.append(name)
        print('%-14s %10.0f %10s %8s %10s  %s%s' % (
            name, r['lev'], '%.0f' % r['raw'] if r['raw'] else '-',
            '%.2fx' % r['ratio'] if r['ratio'] else '-',
            '-' if kind == 'info' else ('%.2fx' if kind == 'ratio' else '%.0f') % limit,
            ' '.join('%.0f' % v for v in r['levs']), '' if ok else '   OVER BUDGET'))
    # lev over the coroutine floor: what lev's own guarantees cost (no raw
    # loop in the quotient, so none of its noise).
    floors = [(n, f) for n, f in FLOORS.items() if n in results and f in results]
    if floors:
        print('lev over the coroutine floor: ' + ', '.join(
            '%s %.2fx' % (n, results[n]['lev'] / results[f]['lev']) for n, f in floors))
    if a.write:
        write_budget(budget, results)
    if a.check and over:
        print('cost: over budget: ' + ', '.join(over))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
