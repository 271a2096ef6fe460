"""python -m deploy.local demo [--parties alice,bob] [--rows N] [--once] …"""

from __future__ import annotations

import sys

from deploy.local import demo


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: python -m deploy.local demo [options]   (see: python -m deploy.local demo --help)"
        )
        return 0 if argv else 2
    if argv[0] != "demo":
        print(f"unknown command {argv[0]!r}; the command is: demo")
        return 2
    return demo.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
