#!/usr/bin/env python3
"""Builds the API reference and checks what a reader lands on (the 'docs'
test suite's `reference` test):

    check_reference.py DOXYGEN DOXYFILE HTML_DIR

- doxygen ends without a warning (the Doxyfile turns one into a failure);
- the main page links every guide, both namespace pages and the class list;
- the namespace pages list the free functions (when_all, with_timeout,
  run, stat, net::connect...);
- the pages of the classes users call most show no lev::detail type in a
  signature (an operation's awaiter reads Awaitable<Result<T>>).
"""
import pathlib
import re
import subprocess
import sys

GUIDES = ["tutorial", "cancellation", "buffers", "files", "companions"]
FREE = {
    "namespacelev.html": ["when_all", "when_any", "with_timeout", "run", "until_stopped", "stat",
                          "mkdir", "rename", "unlink", "set_log_handler", "current_stop_token"],
    "namespacelev_1_1net.html": ["connect", "resolve"],
}
CLEAN = ["classlev_1_1Loop.html", "classlev_1_1File.html", "classlev_1_1FakeOp.html",
         "classlev_1_1net_1_1DatagramSocket.html", "namespacelev.html"]


def main():
    doxygen, doxyfile, html = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
    run = subprocess.run([doxygen, doxyfile], capture_output=True, text=True)
    problems = []
    if run.returncode != 0 or run.stderr.strip():
        problems.append(f"doxygen failed or warned:\n{run.stderr}")
    index = (html / "index.html").read_text()
    for g in GUIDES:
        if f'href="md_docs_{g}.html"' not in index:
            problems.append(f"the main page does not link the {g} guide")
    for page in ["namespacelev.html", "namespacelev_1_1net.html", "annotated.html"]:
        if not (html / page).exists():
            problems.append(f"no {page}")
    for page in ["namespacelev.html", "namespacelev_1_1net.html"]:
        if f'href="{page}"' not in index:
            problems.append(f"the main page does not link {page}")
    for page, names in FREE.items():
        text = (html / page).read_text() if (html / page).exists() else ""
        for n in names:
            if not re.search(rf'mem(?:Templ)?ItemRight" valign="bottom">(<a class="el" href="{re.escape(page)}#\w+">{n}</a>|<b>{n}</b>) \(', text):
                problems.append(f"{page} does not list {n}")
    for page in CLEAN:
        text = (html / page).read_text() if (html / page).exists() else ""
        for m in sorted(set(re.findall(r"detail::\w+", text)) - {"detail::TimeoutOf"}):
            problems.append(f"{page} shows {m}")
    print("\n".join(problems) if problems else "reference: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
