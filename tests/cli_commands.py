"""Every command of a click CLI, for the tests that check each one is documented."""

from __future__ import annotations

import click


def all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    """("sub command", command) for every command and group below `group`, depth first, sorted by name."""
    out: list[tuple[str, click.Command]] = []
    for name, cmd in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        out.append((path, cmd))
        if isinstance(cmd, click.Group):
            out.extend(all_commands(cmd, path + " "))
    return out
