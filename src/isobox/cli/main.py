"""Entry point of ``isobox``. For now it reports its version; the engine arrives with issue 4."""

from __future__ import annotations

import sys

from isobox import __version__


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("--version", "-v", "version"):
        print(f"isobox version {__version__}")
        return 0
    if args[0] in ("-h", "--help", "help"):
        print("usage: isobox --version\n\nThe container engine arrives with the next issues; "
              "use isobox-runtime for OCI bundles.")
        return 0
    print(f"isobox: error: unknown command {args[0]!r} (only --version exists yet)",
          file=sys.stderr)
    return 2
