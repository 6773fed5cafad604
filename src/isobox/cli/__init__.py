"""The ``isobox`` command: parse, call the engine or the API, print."""
