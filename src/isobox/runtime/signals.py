"""Signal names and numbers (Linux x86_64), without importing :mod:`signal` (it imports enum)."""

from __future__ import annotations

SIGNALS: dict[str, int] = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
    "STKFLT": 16, "CHLD": 17, "CLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21,
    "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28,
    "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}
SIGRTMIN = 34
SIGRTMAX = 64
SIGKILL = 9
SIGTERM = 15


def parse_signal(text: str) -> int:
    """``TERM``, ``SIGTERM``, ``15``, ``RTMIN+3`` → a signal number; ValueError if unknown."""
    raw = text.strip()
    if raw.isdigit():
        num = int(raw)
        if 1 <= num <= SIGRTMAX:
            return num
        raise ValueError(f"invalid signal number {raw}")
    name = raw.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name in SIGNALS:
        return SIGNALS[name]
    for base, start in (("RTMIN", SIGRTMIN), ("RTMAX", SIGRTMAX)):
        if name == base:
            return start
        rest = name[len(base) + 1:]
        if name.startswith(base) and name[len(base):len(base) + 1] in "+-" and rest.isdigit():
            num = start + int(rest) if name[len(base)] == "+" else start - int(rest)
            if SIGRTMIN <= num <= SIGRTMAX:
                return num
    raise ValueError(f"unknown signal {text!r}")
