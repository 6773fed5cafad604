"""Typed wrappers for the Linux syscalls Python 3.11 lacks. No policy lives here."""
