"""OCI ``linux.cgroupsPath`` → the cgroup path the manager creates.

Forms accepted (as runc's cgroupfs and systemd drivers):

* absolute ``/a/b``: that path in every hierarchy;
* relative ``a/b``: under the *calling process's own cgroup*, resolved per hierarchy by
  :class:`~isobox.cgroups.CgroupManager` (runc's fs driver does the same: on a host where the
  caller sits in ``/x`` for memory but ``/`` elsewhere, the container lands in ``/x/a/b`` for
  memory and ``/a/b`` elsewhere, so it stays inside the caller's limits). The result stays
  relative;
* empty or absent: runc's default, the relative path ``<container id>``;
* systemd ``slice:prefix:name``: ``/<expanded slice>/<prefix>-<name>.scope`` (a name ending in
  ``.slice`` is used as is; an empty slice means ``system.slice``). systemd itself is not
  contacted: the directories are made in cgroupfs directly.

``..`` components, NUL bytes and the root cgroup itself are rejected.
"""

from __future__ import annotations

from isobox.errors import ConfigError

WHERE = "config.json: linux.cgroupsPath"


def _clean(path: str, original: str) -> str:
    """``path``'s components joined by ``/`` (no leading slash), ``..`` rejected."""
    if "\0" in path or "\n" in path:
        raise ConfigError(WHERE, f"{original!r} contains a NUL or newline character")
    parts = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            raise ConfigError(WHERE, f'"{original}" must not contain ".." components')
        parts.append(comp)
    return "/".join(parts)


def expand_slice(name: str) -> str:
    """A systemd slice unit name → its cgroup path: ``a-b.slice`` → ``/a.slice/a-b.slice``."""
    suffix = ".slice"
    if len(name) <= len(suffix) or not name.endswith(suffix) or "/" in name:
        raise ConfigError(WHERE, f'invalid slice name "{name}"')
    stem = name[: -len(suffix)]
    if stem == "-":
        return "/"
    path = ""
    prefix = ""
    for comp in stem.split("-"):
        if not comp:
            raise ConfigError(WHERE, f'invalid slice name "{name}"')
        path += "/" + prefix + comp + suffix
        prefix += comp + "-"
    return path


def _systemd(value: str, container_id: str) -> str:
    parts = value.split(":")
    if len(parts) != 3:
        raise ConfigError(WHERE, f'expected "slice:prefix:name" for a systemd cgroup, '
                          f'got "{value}"')
    slice_, prefix, name = parts
    name = name or container_id
    if name.endswith(".slice"):
        unit = name
    else:
        unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    if "/" in unit or unit in (".", ".."):
        raise ConfigError(WHERE, f'invalid unit name "{unit}" in "{value}"')
    if "/" in prefix:
        raise ConfigError(WHERE, f'invalid prefix "{prefix}" in "{value}"')
    parent = expand_slice(slice_ or "system.slice")
    return "/" + _clean(f"{parent}/{unit}", value)


def resolve_path(cgroups_path: str | None, container_id: str) -> str:
    """The cgroup path for a container: absolute (``/a/b``) or relative (``a/b``, resolved by
    :class:`~isobox.cgroups.CgroupManager` against the caller's own cgroups).

    Raises :class:`ConfigError` naming ``config.json: linux.cgroupsPath`` for bad forms.
    """
    if not cgroups_path:
        rel = _clean(container_id, container_id)
        if not rel or "/" in rel:
            raise ConfigError(WHERE, f'container id "{container_id}" is not a valid cgroup name')
        return rel
    if cgroups_path.startswith("/"):
        clean = _clean(cgroups_path, cgroups_path)
        if not clean:
            raise ConfigError(WHERE, f'"{cgroups_path}" is the root cgroup')
        return "/" + clean
    if ":" in cgroups_path:
        return _systemd(cgroups_path, container_id)
    clean = _clean(cgroups_path, cgroups_path)
    if not clean:
        raise ConfigError(WHERE, f'"{cgroups_path}" is empty after cleaning')
    return clean
