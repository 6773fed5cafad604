"""The ``isobox`` console script. Ctrl-C while the CLI's modules load (50-80 ms) ends it
with "isobox: interrupted" and status 130, as later; Python's own handler would print a
KeyboardInterrupt traceback from whichever import it hit."""

import _signal  # type: ignore[import-not-found]  # signal without its enum import


def _interrupted(_signum: int, _frame: object) -> None:
    import posix

    posix.write(2, b"isobox: interrupted\n")
    posix._exit(130)


def entry() -> int:
    quiet = _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler  # not if ignored
    if quiet:
        _signal.signal(_signal.SIGINT, _interrupted)
    from isobox.cli.main import entry as cli_entry

    if quiet:  # from here main() turns KeyboardInterrupt into the same message and status
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    return cli_entry()
