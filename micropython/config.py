# config.json on the board: read, fill in defaults, validate.  load() raises ConfigError with
# every problem listed, so the REPL shows what to fix in one go.
import json

DEFAULTS = {
    "wifi": {"ssid": None, "password": "", "timeout_s": 20},
    "broker": {
        "host": None,
        "port": None,  # 1883, or 8883 with tls
        "tls": False,
        "ca_file": None,  # PEM/DER CA certificate on the board: required with tls, unless insecure is true
        "insecure": False,  # tls without verifying the broker (no ca_file); the status line says tls=INSECURE
        "username": None,  # defaults to gateway_id (the broker ACL expects that)
        "password": None,
        "keepalive_s": 60,
        "timeout_s": 10,
    },
    "gateway_id": None,
    "topic_prefix": "edge-gw",
    "buffer": {"path": "/ring.bin", "bytes": 65536, "page_bytes": 1024, "flush_s": 10},
    "uplink": {
        "batch_max_readings": 50,
        "interval_s": 5,
        "confirm": "cloud",  # delete a reading once the receiver confirms it; "broker": on the PUBACK
        "confirm_timeout_s": 60,  # then the batch is sent again (doubling in a row, up to 16x)
        "max_unconfirmed_batches": 16,  # batches in flight; past that nothing new is sent
    },
    "ntp": {"host": "pool.ntp.org", "pending_max": 256},
    "scan": {"active": False, "max_tags": 256},
    "status_interval_s": 60,
}

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


class ConfigError(ValueError):
    pass


def _merge(defaults, given, where, problems):
    out = {}
    for key, default in defaults.items():
        value = given.get(key, default)
        if isinstance(default, dict):
            if not isinstance(value, dict):
                problems.append("%s%s must be an object" % (where, key))
                value = {}
            value = _merge(default, value, where + key + ".", problems)
        out[key] = value
    for key in given:
        if key not in defaults:
            problems.append("%s%s is not a known setting" % (where, key))
    return out


def _int(cfg, section, key, lo, hi, problems):
    value = cfg[section][key] if section else cfg[key]
    name = (section + "." if section else "") + key
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        problems.append("%s must be an integer from %d to %d, got %r" % (name, lo, hi, value))


def _text(value, name, problems, required=True):
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        problems.append("%s must be a non-empty string" % name)


def validate(given):
    problems = []  # type: list[str]
    if not isinstance(given, dict):
        raise ConfigError("config.json must hold a JSON object")
    cfg = _merge(DEFAULTS, given, "", problems)
    gid = cfg["gateway_id"]
    if (
        not isinstance(gid, str)
        or not 1 <= len(gid) <= 64
        or gid == "dlq"
        or any(c not in _ID_CHARS for c in gid)
    ):
        problems.append("gateway_id must be 1-64 characters from A-Z a-z 0-9 . _ - (not 'dlq'), got %r" % (gid,))
    prefix = cfg["topic_prefix"]
    # As edge.wire.check_prefix: levels of [A-Za-z0-9._-], no wildcards, not Ruuvi Gateway's ruuvi/ tree
    if (
        not isinstance(prefix, str)
        or any(not level or any(c not in _ID_CHARS for c in level) for level in prefix.split("/"))
        or prefix == "ruuvi"
        or prefix.startswith("ruuvi/")
    ):
        problems.append("topic_prefix must be levels of A-Z a-z 0-9 . _ - joined by /, not under ruuvi/, got %r" % (prefix,))
    _text(cfg["wifi"]["ssid"], "wifi.ssid", problems)
    if not isinstance(cfg["wifi"]["password"], str):
        problems.append("wifi.password must be a string")
    _int(cfg, "wifi", "timeout_s", 1, 300, problems)
    b = cfg["broker"]
    _text(b["host"], "broker.host", problems)
    if not isinstance(b["tls"], bool):
        problems.append("broker.tls must be true or false")
    if b["port"] is None:
        b["port"] = 8883 if b["tls"] is True else 1883
    _int(cfg, "broker", "port", 1, 65535, problems)
    _int(cfg, "broker", "keepalive_s", 0, 65535, problems)
    _int(cfg, "broker", "timeout_s", 1, 120, problems)
    _text(b["ca_file"], "broker.ca_file", problems, required=False)
    if not isinstance(b["insecure"], bool):
        problems.append("broker.insecure must be true or false")
    elif b["tls"] is True and not b["ca_file"] and not b["insecure"]:
        problems.append(
            "broker.tls needs broker.ca_file to verify the broker; set broker.insecure = true to connect without "
            "verifying it (not recommended)"
        )
    _text(b["username"], "broker.username", problems, required=False)
    _text(b["password"], "broker.password", problems, required=False)
    if b["username"] is None:
        b["username"] = gid
    _text(cfg["buffer"]["path"], "buffer.path", problems)
    _int(cfg, "buffer", "page_bytes", 256, 8192, problems)
    _int(cfg, "buffer", "bytes", 4096, 16 * 1024 * 1024, problems)
    _int(cfg, "buffer", "flush_s", 1, 3600, problems)
    page = cfg["buffer"]["page_bytes"]
    if isinstance(page, int) and page % 64:
        problems.append("buffer.page_bytes must be a multiple of 64 (one record), got %d" % page)
    _int(cfg, "uplink", "batch_max_readings", 1, 500, problems)
    _int(cfg, "uplink", "interval_s", 1, 3600, problems)
    if cfg["uplink"]["confirm"] not in ("cloud", "broker"):
        problems.append("uplink.confirm must be \"cloud\" or \"broker\", got %r" % (cfg["uplink"]["confirm"],))
    _int(cfg, "uplink", "confirm_timeout_s", 1, 86400, problems)
    _int(cfg, "uplink", "max_unconfirmed_batches", 1, 256, problems)
    _text(cfg["ntp"]["host"], "ntp.host", problems)
    _int(cfg, "ntp", "pending_max", 0, 10000, problems)
    if not isinstance(cfg["scan"]["active"], bool):
        problems.append("scan.active must be true or false")
    _int(cfg, "scan", "max_tags", 1, 10000, problems)
    _int(cfg, "", "status_interval_s", 1, 86400, problems)
    if problems:
        raise ConfigError("config.json is not valid:\n  - " + "\n  - ".join(problems))
    return cfg


def load(path="config.json"):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("%s not found: copy one to the board (see micropython/README.md)" % path)
    try:
        given = json.loads(text)
    except ValueError as e:
        raise ConfigError("%s is not valid JSON: %s" % (path, e))
    return validate(given)
