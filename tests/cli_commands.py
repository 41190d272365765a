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


def readme_table(readme: str, prog: str) -> dict[str, list[str]]:
    """The README's CLI table for `prog`: {"sub command": [the --options its row shows]}."""
    section = readme.split(f"### {prog}\n", 1)[1].split("\n#", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) < 3 or not cells[1].strip().startswith(f"`{prog} "):
            continue
        usage = cells[1].strip().strip("`").removeprefix(f"{prog} ")
        words = usage.replace("[", " ").replace("]", " ").split()
        name = " ".join(w for w in words[:2] if w.replace("-", "").isalpha() and not w.startswith("-")
                        and w.islower() and w not in ("HEX", "FILE"))
        rows[name] = [w for w in words if w.startswith("--")]
    return rows


def check_readme_table(group: click.Group, prog: str, readme: str) -> None:
    """Every command has a row, every row names a real command, and every option a row shows is the command's."""
    commands = {name: cmd for name, cmd in all_commands(group) if not isinstance(cmd, click.Group)}
    rows = readme_table(readme, prog)
    assert set(rows) == set(commands), (sorted(rows), sorted(commands))
    for name, options in rows.items():
        known = {opt for p in commands[name].params for opt in (*p.opts, *p.secondary_opts)}
        for opt in options:
            assert opt in known, f"README shows `{prog} {name} ... {opt}`, which `{prog} {name} --help` lacks"
