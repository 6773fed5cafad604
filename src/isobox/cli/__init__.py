"""The ``isobox`` command: parse, call the engine or the API, print."""

from isobox import dataclass_code

dataclass_code.install()  # before any of the CLI's dataclasses is made
