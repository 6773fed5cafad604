"""The lazy command table of `isobox` matches what the command modules really register."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click

from isobox.cli import main as cli_main

SPREAD_GROUPS = {"image", "system"}  # subcommands come from several modules: load them all


def test_every_command_is_in_the_table_with_its_module() -> None:
    owner: dict[str, str] = {}
    for module in cli_main.COMMAND_MODULES:
        before = set(cli_main.cli.commands)
        importlib.import_module(module)
        for name in set(cli_main.cli.commands) - before:
            owner[name] = module
    for name in cli_main.cli.commands:
        owner.setdefault(name, "isobox.cli.main")
    expected = {n: m for n, m in owner.items() if n not in SPREAD_GROUPS}
    assert expected == cli_main.COMMAND_TABLE
    for name in SPREAD_GROUPS:
        assert isinstance(cli_main.cli.commands[name], click.Group)


def test_running_a_command_loads_only_its_module() -> None:
    code = ("import sys; from isobox.cli.main import main; main(['ps', '--help']); "
            "print(sorted(m for m in sys.modules if m.startswith('isobox.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()[-1]
    assert "isobox.cli.container_cmds" in out
    for other in ("isobox.cli.image_cmds", "isobox.cli.network_cmds", "isobox.cli.vm_cmds"):
        assert other not in out


def test_help_lists_every_command() -> None:
    code = "import sys; from isobox.cli.main import main; sys.exit(main(['--help']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    for name in ("run", "images", "network", "vm", "snapshot", "system", "volume"):
        assert f"  {name} " in out


def test_groups_spread_over_modules_get_all_their_subcommands() -> None:
    code = ("import sys; from isobox.cli.main import main; "
            "sys.exit(main(['system', '--help']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    for name in ("boot", "info", "prune", "df"):
        assert f"  {name} " in out
