"""Throwaway certificates for the TLS tests, made with the openssl CLI: one CA, and certificates it signs for a
server on 127.0.0.1 / localhost or for a client. Valid for 2 days. One set of commands for every suite (MQTT, Kafka,
the deployment, Ansible's target, MicroPython), so that a fix to them (an extension a TLS stack insists on) is made
once.

EC P-256 keys by default: generated in milliseconds, and openssl 3 writes them as PKCS#8, which Kafka's PEM keystore
wants. `key="rsa"` for the TLS stacks of the MicroPython port and the Ansible target's tests, which use RSA 2048.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_NEW_KEY = {
    "ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
    "rsa": ["-newkey", "rsa:2048"],
}
# RSA key exchange (TLS 1.2 without ECDHE) needs keyEncipherment; EC certificates only sign.
_KEY_USAGE = {"ec": "digitalSignature", "rsa": "digitalSignature,keyEncipherment"}


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def make_ca(d: Path, name: str, *, key: str = "ec") -> Path:
    """A self-signed CA in `d`: <name>.crt and <name>.key (mode 0600). Returns the certificate."""
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", *_NEW_KEY[key], "-nodes", "-keyout", d / f"{name}.key", "-out", d / f"{name}.crt",
            "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    os.chmod(d / f"{name}.key", 0o600)
    return d / f"{name}.crt"


def make_cert(d: Path, name: str, ca: str, *, server: bool, cn: str | None = None,
              key: str = "ec") -> tuple[Path, Path]:
    """<name>.crt and <name>.key (mode 0600) in `d`, signed by the CA <ca> made there by make_ca(): for a server
    (IP 127.0.0.1 and localhost) or for a client. The subject's CN is `cn`, else the name."""
    ext = d / f"{name}.ext"
    usage = "serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost" if server else "clientAuth"
    ext.write_text(f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,{_KEY_USAGE[key]}\n"
                   "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
                   f"extendedKeyUsage={usage}\n")
    openssl("req", "-new", *_NEW_KEY[key], "-nodes", "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr",
            "-subj", f"/CN={cn or name}")
    openssl("x509", "-req", "-in", d / f"{name}.csr", "-CA", d / f"{ca}.crt", "-CAkey", d / f"{ca}.key",
            "-CAcreateserial", "-out", d / f"{name}.crt", "-days", "2", "-extfile", ext)
    os.chmod(d / f"{name}.key", 0o600)
    return d / f"{name}.crt", d / f"{name}.key"
