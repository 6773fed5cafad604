"""The engine tests' fixtures — a private isobox root with a busybox image and the `isobox`
CLI bound to it, with a leak check after every test — live in tests/conftest.py, shared with
the API tests (one root per run)."""
