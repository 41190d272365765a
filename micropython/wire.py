# The edge-gw wire format, version 1 (docs/wire-format.md): topics and the canonical JSON bytes,
# written by hand so the bytes equal the Python gateway's (edge.wire) whatever the float width.
from binascii import hexlify

import ruuvi

VERSION = 1
MAX_BATCH_BYTES = 256 * 1024


def batch_topic(prefix, gateway_id):
    return "%s/%s/batch" % (prefix, gateway_id)


def status_topic(prefix, gateway_id):
    return "%s/%s/status" % (prefix, gateway_id)


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


def encode_batch(gateway_id, seq, records, out=None):
    # records: objects with mac (6 bytes), time_ns, synced, rssi, raw (ring.Record).  Appends to
    # `out` (a bytearray, reused between batches to spare the heap) and returns it.
    if out is None:
        out = bytearray()
    out.extend('{"v":1,"gateway":"')
    out.extend(gateway_id)
    out.extend('","seq":')
    out.extend(str(seq))
    out.extend(',"readings":[')
    first = True
    for r in records:
        if not first:
            out.extend(",")
        first = False
        write_reading(out, r.mac, r.time_ns, r.synced, r.rssi, r.raw)
    out.extend("]}")
    return out
