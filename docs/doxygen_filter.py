#!/usr/bin/env python3
"""Doxygen's INPUT_FILTER for lev's public headers: shows each operation's
awaiter as what a reader needs, `Awaitable<Result<T>>` (co_await it once for
a Result<T>), instead of the internal type that implements it
(`Loop::Awaiter<detail::ReadOp>`, `detail::PollAwaiter`...). T comes from the
operation's description (`using Result = ...;` in include/lev/detail/ops/).
Lines are rewritten in place, never added or removed, so that the
reference's line numbers stay the header's. The headers themselves are
untouched: this changes only what the reference shows.

    doxygen_filter.py FILE    prints FILE, filtered, on stdout
"""
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
OPS = HERE.parent / "include" / "lev" / "detail" / "ops"


def op_results():
    """{'ReadOp': 'std::size_t', ...} from the op descriptions."""
    out = {}
    for header in sorted(OPS.glob("*.hpp")):
        text = header.read_text()
        for m in re.finditer(r"struct (\w+Op)\b[^;{]*\{", text):
            r = re.search(r"using Result = ([^;]+);", text[m.end():])
            if r:
                out[m.group(1)] = r.group(1).strip()
    return out


RESULTS = op_results()


def awaitable(result):
    return f"Awaitable<Result<{result}>>"


def by_op(m):
    op = m.group("op")
    if op not in RESULTS:  # an op the table does not know: say so, loudly
        raise SystemExit(f"doxygen_filter.py: no `using Result` for {op}")
    return awaitable(RESULTS[op])


RULES = [
    # Loop::Awaiter<detail::ReadOp>, Deadline<lev::detail::SendOp>, ...
    (re.compile(r"(?:Loop::)?(?:Awaiter|Deadline)<(?:lev::)?detail::(?P<op>\w+Op)>"), by_op),
    (re.compile(r"(?:lev::)?detail::PollAwaiter\b"), lambda m: awaitable("unsigned")),
    (re.compile(r"(?:lev::)?detail::RecvBufferAwaiter\b"), lambda m: awaitable("Buffer")),
    (re.compile(r"(?:lev::)?detail::DatagramReceiveAwaiter\b"),
     lambda m: awaitable("ReceivedDatagram")),
    (re.compile(r"detail::OffloadAwaiter<std::decay_t<F>>"),
     lambda m: "Awaitable<std::invoke_result_t<F>>"),
    (re.compile(r"^(\s*)Sleep (?=\w+\()", re.M), lambda m: m.group(1) + awaitable("Expired") + " "),
    # Constraints on internal concepts read as what the comment says.
    (re.compile(r"detail::CompletionHandler<[^>]*>"), lambda m: "class"),
    (re.compile(r"detail::DirectAwaitable\b"), lambda m: "class"),
    (re.compile(r"requires detail::\w+<[^>]*>"), lambda m: ""),
    (re.compile(r"detail::ValueOf<"), lambda m: "ValueOf<"),
    # The sync waiters' shared base is an implementation detail.
    (re.compile(r"\s*:\s*public detail::ParkedAwaiter\b"), lambda m: ""),
]


def main():
    text = pathlib.Path(sys.argv[1]).read_text()
    for pattern, repl in RULES:
        text = pattern.sub(repl, text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
