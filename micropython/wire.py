# The edge-gw wire format, version 1.1 (docs/wire-format.md): topics and the canonical JSON bytes,
# written by hand so the bytes equal the Python gateway's (edge.wire) whatever the float width,
# and the parser of the cloud's confirmation.
import json
from binascii import hexlify

import ruuvi

VERSION = 1
MAX_BATCH_BYTES = 256 * 1024
CONFIRM_MAX_RANGES = 64
MAX_SEQ = 9007199254740991  # 2**53 - 1


def batch_topic(prefix, gateway_id):
    return "%s/%s/batch" % (prefix, gateway_id)


def status_topic(prefix, gateway_id):
    return "%s/%s/status" % (prefix, gateway_id)


def confirm_topic(prefix, gateway_id):
    return "%s/%s/confirm" % (prefix, gateway_id)


def status(gateway_id, online):
    # Retained status message; the last will is the same with "offline".
    return ('{"v":1,"gateway":"%s","state":"%s"}' % (gateway_id, "online" if online else "offline")).encode()


def mac_text(mac):
    return hexlify(mac, ":").decode()


def write_reading(out, mac, time_ns, synced, rssi, raw):
    out.extend('{"mac":"')
    out.extend(mac_text(mac) if isinstance(mac, (bytes, bytearray)) else mac)
    out.extend('","time_ns":')
    out.extend(str(time_ns))
    out.extend(',"clock_synced":')
    out.extend("true" if synced else "false")
    out.extend(',"rssi":')
    out.extend("null" if rssi is None else str(rssi))
    out.extend(',"data_format":')
    out.extend(str(raw[0]))
    out.extend(',"raw":"')
    out.extend(hexlify(raw))
    out.extend('","fields":')
    ruuvi.write_fields(raw, out)
    out.extend("}")


def batch_chunks(gateway_id, seq, records, buf):
    # The batch as a sequence of chunks: the header, one chunk per reading (built in `buf`, a
    # bytearray reused for every reading, so valid only until the next chunk), and the end.
    # With a ring.records() generator as `records` a batch of any size needs one reading's memory.
    yield ('{"v":1,"gateway":"%s","seq":%d,"readings":[' % (gateway_id, seq)).encode()
    first = True
    for r in records:
        buf[:] = b""  # keeps the capacity: no new allocation once it has grown to one reading
        if not first:
            buf.extend(",")
        first = False
        write_reading(buf, r.mac, r.time_ns, r.synced, r.rssi, r.raw)
        yield buf
    yield b"]}"


def encode_batch(gateway_id, seq, records):
    # The whole batch as one bytearray (tests, small batches); the gateway streams batch_chunks().
    out = bytearray()
    for chunk in batch_chunks(gateway_id, seq, records, bytearray()):
        out.extend(chunk)
    return out


def parse_confirm(payload, gateway_id):
    # The [first, last] seq ranges of a confirmation for `gateway_id` (as edge.wire.parse_confirm),
    # or ValueError: a bad confirmation deletes nothing.  `payload` may be a memoryview of the
    # MQTT receive buffer.  A range may be as wide as 0..2**53-1, so callers test their own seqs
    # against it and never walk it.
    try:
        try:
            obj = json.loads(payload)
        except TypeError:  # CPython's json takes no memoryview (MicroPython's does, without a copy)
            obj = json.loads(bytes(payload))
    except ValueError:
        raise ValueError("confirmation is not JSON")
    # type(x) is int: a bool is an int subclass, and 1.0 or "1" is not a version
    if not isinstance(obj, dict) or type(obj.get("v")) is not int or obj["v"] != VERSION:
        raise ValueError("confirmation: expected an object with v = 1")
    if obj.get("gateway") != gateway_id:
        raise ValueError("confirmation for gateway %r, not %r" % (obj.get("gateway"), gateway_id))
    seqs = obj.get("seqs")
    if not isinstance(seqs, list) or not 1 <= len(seqs) <= CONFIRM_MAX_RANGES:
        raise ValueError("confirmation: seqs must be 1 to %d ranges" % CONFIRM_MAX_RANGES)
    for r in seqs:
        if (
            not isinstance(r, list)
            or len(r) != 2
            or type(r[0]) is not int
            or type(r[1]) is not int
            or not 0 <= r[0] <= r[1] <= MAX_SEQ
        ):
            raise ValueError("confirmation: bad range %r" % (r,))
    return seqs
