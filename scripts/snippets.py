#!/usr/bin/env python3
"""Keeps the code in a Markdown file identical to compiled sources.

In the Markdown, a code block preceded by a marker line

    <!-- snippet: examples/tutorial_ask.hpp#ask -->

must hold exactly the lines of that file between `// [ask]` and
`// [/ask]` (`# [ask]` and `# [/ask]` in a shell, CMake or Meson file; the
whole file when no #region is given).

    snippets.py --check docs/tutorial.md    exit 1 and a diff when any differs
    snippets.py --update docs/tutorial.md   rewrite the blocks from the sources
    snippets.py --extract README.md tests/consumer/commands.sh#install
                                            print that block as the Markdown
                                            shows it (CI runs the README's
                                            commands this way, verbatim)
"""
import argparse
import difflib
import pathlib
import re
import sys

MARKER = re.compile(r"^<!-- snippet: (?P<path>[^#\s]+)(?:#(?P<region>[\w-]+))? -->$")


def region_lines(root, path, region):
    lines = (root / path).read_text().splitlines()
    if region is None:
        return lines
    stripped = [line.strip() for line in lines]
    for comment in ("//", "#"):
        begin, end = f"{comment} [{region}]", f"{comment} [/{region}]"
        if begin in stripped and end in stripped:
            return lines[stripped.index(begin) + 1 : stripped.index(end)]
    raise SystemExit(f"{path}: no region [{region}]")


def blocks(doc):
    """(snippet name, code lines) for each marked block of `doc`."""
    lines = doc.read_text().splitlines()
    for i, line in enumerate(lines):
        m = MARKER.match(line)
        if m and i + 1 < len(lines) and lines[i + 1].startswith("```"):
            end = i + 2
            while end < len(lines) and lines[end] != "```":
                end += 1
            name = m["path"] + (f"#{m['region']}" if m["region"] else "")
            yield name, lines[i + 2 : end]


def process(doc, root, update):
    lines = doc.read_text().splitlines()
    out, problems, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        m = MARKER.match(line)
        if not m:
            continue
        if i >= len(lines) or not lines[i].startswith("```"):
            raise SystemExit(f"{doc}:{i}: a snippet marker must be followed by a code block")
        fence = lines[i]
        end = i + 1
        while end < len(lines) and lines[end] != "```":
            end += 1
        shown = lines[i + 1 : end]
        source = region_lines(root, m["path"], m["region"])
        if shown != source:
            where = m["path"] + (f"#{m['region']}" if m["region"] else "")
            problems.append(
                "\n".join(difflib.unified_diff(source, shown, where, f"{doc}:{i + 2}", lineterm=""))
            )
        out += [fence] + source + ["```"]
        i = end + 1
    return out, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--update", action="store_true")
    mode.add_argument("--extract", metavar="PATH#REGION")
    ap.add_argument("docs", nargs="+", type=pathlib.Path)
    ap.add_argument("--root", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent.parent)
    args = ap.parse_args()
    if args.extract:
        for doc in args.docs:
            for name, code in blocks(doc):
                if name == args.extract:
                    print("\n".join(code))
                    return 0
        print(f"no block marked '<!-- snippet: {args.extract} -->' in {' '.join(map(str, args.docs))}",
              file=sys.stderr)
        return 1
    failed = False
    for doc in args.docs:
        out, problems = process(doc, args.root, args.update)
        if args.update:
            doc.write_text("\n".join(out) + "\n")
        elif problems:
            failed = True
            print(f"{doc}: {len(problems)} snippet(s) differ from their sources "
                  f"(run scripts/snippets.py --update {doc}):")
            print("\n".join(problems))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
