"""isobox's HTTP API: a Docker-Engine-compatible server over a unix socket (``isobox serve``).

Layers: :mod:`.http` (HTTP/1.1 exchange: bodies, chunked streams, hijacking), :mod:`.routing`
(versioned paths, errors), one ``routes_*`` module per resource group, :mod:`.docker_json`
(Docker's JSON shapes to and from the engine's types). No business logic lives here: every
route calls the same :mod:`isobox.engine` functions as the CLI.
"""
