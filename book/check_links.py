#!/usr/bin/env python3
"""Fails when a chapter of the book links to a file of the book that does not exist.

mdBook renders a link to a missing page or image without a word; CI runs this beside `mdbook build`.
Usage: python3 book/check_links.py book/src
"""
import re
import sys
from pathlib import Path

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def broken_links(src: Path):
    for page in sorted(src.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        # Links inside code blocks are code, not links.
        text = re.sub(r"```.*?```", "", text, flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            if path and not (page.parent / path).exists():
                yield page.relative_to(src), target


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "book/src")
    bad = list(broken_links(src))
    for page, target in bad:
        print(f"{src / page}: link to a missing file: {target}", file=sys.stderr)
    print(f"book links: {len(bad)} broken")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
