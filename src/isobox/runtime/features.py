"""``features``: what this runtime supports, as runtime-spec ``features.md`` describes."""

from __future__ import annotations

from isobox import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def features() -> dict[str, Any]:
    from isobox.linux import capabilities as caps
    from isobox.linux import seccomp as sec
    from isobox.runtime.mountopts import FLAG_OPTIONS, PROPAGATION_OPTIONS
    from isobox.runtime.namespaces import NS_FLAGS

    try:
        seccomp_version = sec.libseccomp_version()
        seccomp_enabled = True
    except Exception:  # libseccomp missing: report, don't fail
        seccomp_version, seccomp_enabled = "", False
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": sorted([*FLAG_OPTIONS, *PROPAGATION_OPTIONS, "tmpcopyup"]),
        "linux": {
            "namespaces": sorted(NS_FLAGS),
            "capabilities": list(caps.NAMES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": True},
            "seccomp": {
                "enabled": seccomp_enabled,
                "actions": sorted(a for a in sec.KNOWN_ACTIONS if a != "SCMP_ACT_NOTIFY"),
                "operators": sorted(sec.KNOWN_OPERATORS),
                "archs": sorted(sec.KNOWN_ARCHES),
                "knownFlags": list(sec.KNOWN_FLAGS),
                "supportedFlags": list(sec.KNOWN_FLAGS),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {
            "io.github.isobox.runtime.version": __version__,
            "io.github.seccomp.libseccomp.version": seccomp_version,
        },
    }


def features_json() -> str:
    import json

    return json.dumps(features(), indent=2)
