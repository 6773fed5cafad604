"""Container names: Docker's validation rule and its ``adjective_noun`` random names."""

from __future__ import annotations

import os
import re

from isobox.errors import ConfigError

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

_ADJECTIVES = (
    "admiring", "agitated", "amazing", "bold", "brave", "busy", "clever", "cool", "dazzling",
    "eager", "elated", "epic", "focused", "gallant", "gifted", "happy", "hopeful", "jolly",
    "keen", "kind", "lucid", "magical", "modest", "nice", "nifty", "optimistic", "peaceful",
    "quirky", "relaxed", "serene", "sharp", "stoic", "tender", "upbeat", "vibrant", "zealous",
)
_NOUNS = (
    "agnesi", "babbage", "bell", "bohr", "curie", "darwin", "dijkstra", "einstein", "euler",
    "feynman", "gauss", "hopper", "hypatia", "johnson", "kepler", "knuth", "lamport",
    "lovelace", "mccarthy", "meitner", "newton", "noether", "pascal", "ritchie", "shannon",
    "thompson", "torvalds", "turing", "wiles", "wozniak",
)


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError("--name", f"Invalid container name ({name}), only "
                          "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name.lstrip("/")


def _below(n: int) -> int:
    """A random number in [0, n) from the kernel's CSPRNG (what `secrets` does, without its
    imports of `random` and `base64` on every `isobox run`; the modulo bias is < 2**-50)."""
    return int.from_bytes(os.urandom(8), "little") % n


def random_name() -> str:
    return (f"{_ADJECTIVES[_below(len(_ADJECTIVES))]}_{_NOUNS[_below(len(_NOUNS))]}"
            f"{_below(100) if _below(4) == 0 else ''}")


def new_id() -> str:
    return os.urandom(32).hex()
