"""RUN steps: what the builder hands to whoever runs workloads.

The images package must not start workloads itself (DESIGN.md): a RUN step is described by
:class:`RunStep` and executed by a :class:`StepRunner`; the engine's build hook
(``isobox.engine.build_hook``) is the implementation that runs it in a real container; the
caller (the CLI or the API) passes it in, so ``images`` never imports ``engine``.
The step carries only what an image may decide (argv, env, cwd, numeric user): the sandbox
(capabilities, seccomp, masks, namespaces) is chosen by the runner, never by the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class RunStep:
    """One RUN: ``rootfs`` is the snapshot's mounted overlay root (writable)."""

    rootfs: str
    args: list[str]
    env: list[str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    hostname: str = "buildkitsandbox"
    quiet: bool = False  # discard the step's output instead of streaming it


class StepRunner(Protocol):
    def run(self, step: RunStep) -> int:
        """Run the step to completion; its exit status (128+N when killed by signal N).

        Must leave nothing behind (runtime state, cgroups, mounts) whatever happens,
        including KeyboardInterrupt, which it re-raises after cleaning up."""
        ...

