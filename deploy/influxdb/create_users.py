#!/usr/bin/env python3
"""Create the InfluxDB 1.x users of an edge-gw deployment from deploy/influxdb/users.influxql.

    create_users.py admin --url http://127.0.0.1:8086 --admin-password-file /etc/edge-gw/influx-admin.pw
    cloud-ingest setup --influx http://admin@127.0.0.1:8086/ruuvi --set influx.password_file=...
    create_users.py users --url http://127.0.0.1:8086 --db ruuvi --admin-password-file ... \
        --ingest-password-file ... --grafana-password-file ...

Passwords are read from files that only their owner can read (mode 0600, as edge-gw and cloud-ingest demand), never
from the command line (other users can read it in `ps`). The admin logs in with HTTP basic auth and the statements
go in a POST body, so neither reaches influxd's HTTP access log. Running it again sets the passwords again and
repeats the grants; it never fails because a user already exists. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

TEMPLATE = Path(__file__).with_name("users.influxql")
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELD = re.compile(r"\{(\w+)\}")


class Failed(Exception):
    """A one-line reason to stop, without any secret in it."""


def read_secret(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise Failed(f"{path} is readable by group or others (mode {mode & 0o777:04o}); chmod 600 it")
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise Failed(f"cannot read {path}: {e.strerror}") from None
    if not secret:
        raise Failed(f"{path} is empty")
    return secret


def ident(name: str) -> str:
    """An InfluxQL identifier, quoted when it is not a plain word."""
    if _PLAIN.fullmatch(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def statements() -> list[str]:
    """The template's statements, in order (one per non-comment line)."""
    lines = TEMPLATE.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("--")]


def fill(statement: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        key = m.group(1)
        return literal(values[key]) if key.endswith("_password") else ident(values[key])

    return _FIELD.sub(one, statement)


class Influx:
    def __init__(self, url: str, user: str | None = None, password: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"

    def query(self, q: str) -> list[dict[str, object]]:
        body = urllib.parse.urlencode({"q": q}).encode()
        req = urllib.request.Request(f"{self.url}/query", data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as e:
            reason = e.read().decode("utf-8", "replace").strip()[:200]
            raise Failed(f"InfluxDB answered HTTP {e.code}: {reason}") from None
        except (OSError, ValueError) as e:
            raise Failed(f"cannot reach InfluxDB at {self.url}: {e}") from None
        results: list[dict[str, object]] = answer.get("results", [])
        for r in results:
            if "error" in r:
                raise Failed(f"InfluxDB refused {q.split(' WITH PASSWORD', maxsplit=1)[0]!r}: {r['error']}")
        return results

    def first_column(self, q: str) -> set[str]:
        rows: list[list[object]] = []
        for s in self.query(q)[0].get("series", []):  # type: ignore[attr-defined]
            rows.extend(s.get("values", []))
        return {str(r[0]) for r in rows}

    def users(self) -> set[str]:
        return self.first_column("SHOW USERS")


def run(statement: str, values: dict[str, str], db: Influx, existing: set[str]) -> None:
    """One template statement. CREATE USER for a user that exists becomes SET PASSWORD, so that the script can run
    again."""
    keys = _FIELD.findall(statement)  # CREATE USER {name} WITH PASSWORD {name_password} ...
    if statement.startswith("CREATE USER") and values[keys[0]] in existing:
        user = ident(values[keys[0]])
        db.query(f"SET PASSWORD FOR {user} = {literal(values[keys[1]])}")
        if "ALL PRIVILEGES" in statement:
            db.query(f"GRANT ALL PRIVILEGES TO {user}")
    else:
        db.query(fill(statement, values))
    print(f"ok: {fill(statement.split(' WITH PASSWORD', maxsplit=1)[0], values)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("admin", "users"))
    p.add_argument("--url", default="http://127.0.0.1:8086", help="InfluxDB base URL, no credentials")
    p.add_argument("--db", default="ruuvi")
    p.add_argument("--admin-user", default="admin")
    p.add_argument("--admin-password-file", required=True)
    p.add_argument("--ingest-user", default="ingest")
    p.add_argument("--ingest-password-file")
    p.add_argument("--grafana-user", default="grafana")
    p.add_argument("--grafana-password-file")
    a = p.parse_args(argv)
    try:
        if urllib.parse.urlsplit(a.url).password is not None:
            raise Failed("--url must not carry a password; use --admin-password-file")
        values = {"admin": a.admin_user, "admin_password": read_secret(a.admin_password_file), "db": a.db}
        todo = statements()
        if a.step == "admin":
            admin = Influx(a.url, a.admin_user, values["admin_password"])
            try:
                existing = admin.users()
            except Failed:
                existing = set()  # no admin yet, or a wrong password: try the one unauthenticated statement
            db = admin if existing else Influx(a.url)
            run(todo[0], values, db, existing)
            return 0
        if not (a.ingest_password_file and a.grafana_password_file):
            raise Failed("users needs --ingest-password-file and --grafana-password-file")
        values.update(ingest=a.ingest_user, ingest_password=read_secret(a.ingest_password_file),
                      grafana=a.grafana_user, grafana_password=read_secret(a.grafana_password_file))
        db = Influx(a.url, a.admin_user, values["admin_password"])
        if a.db not in db.first_column("SHOW DATABASES"):
            raise Failed(f"database {a.db} does not exist yet: run cloud-ingest setup as the admin first")
        existing = db.users()
        for statement in todo[1:]:
            run(statement, values, db, existing)
    except Failed as e:
        print(f"create_users.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
