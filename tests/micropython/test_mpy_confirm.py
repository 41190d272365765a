"""The cloud's confirmation in the MicroPython gateway, inside the WebAssembly port: the parser against every parse case
of tests/vectors/confirm.json, a re-send after no confirmation (new seq, tail unmoved, timeout doubling), out-of-order
confirmations, broker mode, seqs that never repeat across reboots, and a reset at every write while confirmations are
applied. The fake broker (fakes/socket.py) plays the receiver; test_mpy_mqtt_broker.py does it with a real Mosquitto."""

from __future__ import annotations

import json
from typing import Any

from mpy_harness import ROOT, MicroPython

VECTORS = json.loads((ROOT / "tests" / "vectors" / "confirm.json").read_text())

PARSE = r"""
import json, socket, wire
from testkit import make, adv_data, df5, mac, dump

cases = json.load(open("/data/confirm.json"))["parse"]
got = []
for c in cases:
    try:
        got.append(["ok", wire.parse_confirm(c["payload"].encode(), c["gateway"])])
    except ValueError as e:
        got.append(["error", str(e)])

# The same payloads through the gateway, with 3 batches (seqs 0, 1, 2) in flight: an error
# case deletes nothing and is counted.
socket.BROKER.auto_confirm = False
gw, ble = make({"gateway_id": "pi-kitchen"})
await gw.uplink_step()
for i in range(21):
    ble.inject(mac(i), -70, adv_data(df5(i)))
gw.poll_ble()
gw.ring.flush()
await gw.uplink_step()
before = [gw.ring.tail, gw.ring.committed(), [e[0] for e in gw.ring.inflight]]
effects = []
for c in cases:
    if "error" not in c:
        continue
    socket.BROKER.deliver("edge-gw/pi-kitchen/confirm", c["payload"].encode())
    gw.poll()
    effects.append([c["name"], gw.ring.tail, gw.ring.committed(), gw.bad_confirms])
# A topic we did not ask for, and a payload too big to be a confirmation, are refused too.
gw.on_message(b"edge-gw/pi-kitchen/batch", memoryview(b'{"v":1,"gateway":"pi-kitchen","seqs":[[0,9]]}'))
gw.on_message(b"edge-gw/pi-kitchen/confirm", None)
refused = [gw.ring.tail, gw.bad_confirms]
# The wide range: tested against the 3 seqs in flight, never walked (2**53 steps would hang).
wide = next(c for c in cases if c["name"] == "wide range")
socket.BROKER.deliver("edge-gw/pi-kitchen/confirm", wide["payload"].encode())
gw.poll()
dump({"got": got, "before": before, "effects": effects, "refused": refused,
      "after_wide": [gw.ring.tail, gw.ring.committed(), gw.ring.inflight, gw.confirms, gw.acked],
      "pubacks": len(socket.BROKER.pubacks_in)})
"""


def test_confirm_json_parse_cases_and_bad_confirmations_delete_nothing(mpy: MicroPython) -> None:
    (out,) = mpy.run_json(PARSE, files={"/data/confirm.json": json.dumps(VECTORS).encode()})
    cases = VECTORS["parse"]
    assert len(out["got"]) == len(cases) > 20
    for case, (kind, value) in zip(cases, out["got"], strict=True):
        if "error" in case:
            assert kind == "error", case["name"]
            assert value.startswith(case["reason"]), (case["name"], value)
        else:
            assert (kind, value) == ("ok", case["expected"]), case["name"]
    errors = [c for c in cases if "error" in c]
    assert out["before"] == [0, 21, [0, 1, 2]]
    assert [e[0] for e in out["effects"]] == [c["name"] for c in errors]
    assert [e[1:3] for e in out["effects"]] == [[0, 21]] * len(errors)  # nothing deleted
    assert [e[3] for e in out["effects"]] == list(range(1, len(errors) + 1))  # each one counted
    assert out["refused"] == [0, len(errors) + 2]
    assert out["after_wide"] == [21, 0, [], 1, 21]
    assert out["pubacks"] == len(errors) + 1  # every QoS 1 message from the broker got its PUBACK


RESEND = r"""
import asyncio, socket, time
from ring import Ring
from testkit import make, adv_data, df5, mac, dump

socket.BROKER.auto_confirm = False
gw, ble = make({"uplink": {"confirm_timeout_s": 1}})
await gw.uplink_step()
for i in range(3):
    ble.inject(mac(i), -70, adv_data(df5(100 + i)))
gw.poll_ble()
gw.ring.flush()
await gw.uplink_step()  # batch seq 0, PUBACKed, not confirmed
steps = [[gw.ring.tail, gw.ring.committed(), gw.ring.unconfirmed(time.ticks_ms(), time.ticks_diff)[0],
          gw.timeouts, gw.timeout_factor]]
for wait in (1100, 1100, 1100):  # timeout 1 s, then 2 s (doubled), ...
    await asyncio.sleep_ms(wait)
    await gw.uplink_step()
    steps.append([gw.ring.tail, gw.ring.committed(), gw.timeouts, gw.timeout_factor,
                  [e[0] for e in gw.ring.inflight]])
# a late confirmation of the first seq: that batch went again under a new seq, so it is unknown
socket.BROKER.deliver("edge-gw/esp32-1/confirm", b'{"v":1,"gateway":"esp32-1","seqs":[[0,1]]}')
gw.poll()
late = [gw.ring.tail, gw.ring.committed(), gw.confirms, gw.timeout_factor]
socket.BROKER.deliver("edge-gw/esp32-1/confirm", b'{"v":1,"gateway":"esp32-1","seqs":[[2,2]]}')
gw.poll()
done = [gw.ring.tail, gw.ring.committed(), gw.acked, gw.timeout_factor, gw.status_line()]
persisted = Ring("/ring.bin", 8192, 256)
# the factor doubles per timeout in a row and stops at 16
gw.ring.add_batch(gw.ring.new_seq(), 3, 3, 0)
factors = []
for _ in range(6):
    gw.ring.inflight[-1][3] = 1  # ACKED
    gw.ring.inflight[-1][4] = time.ticks_add(time.ticks_ms(), -10**7)
    gw.check_timeouts()
    factors.append(gw.timeout_factor)
batches = [json.loads(p) for t, p, q, r in socket.BROKER.published if t.endswith("/batch")]
dump({"steps": steps, "late": late, "done": done, "persisted": [persisted.tail, persisted.head],
      "factors": factors, "batches": batches})
"""


def test_an_unconfirmed_batch_is_sent_again_under_a_new_seq_and_the_tail_waits(mpy: MicroPython) -> None:
    (out,) = mpy.run_json(RESEND.replace("import asyncio", "import asyncio, json"))
    assert out["steps"][0] == [0, 3, 3, 0, 1]
    assert out["steps"][1] == [0, 3, 1, 2, [1]]  # 1 s: sent again as seq 1, tail unmoved
    assert out["steps"][2] == [0, 3, 1, 2, [1]]  # 1.1 s later: under the doubled 2 s timeout
    assert out["steps"][3] == [0, 3, 2, 4, [2]]  # 2.2 s: sent again as seq 2
    batches = out["batches"]
    assert [b["seq"] for b in batches] == [0, 1, 2]
    assert batches[0]["readings"] == batches[1]["readings"] == batches[2]["readings"]
    assert len(batches[0]["readings"]) == 3
    assert out["late"] == [0, 3, 1, 4]  # seqs 0 and 1 are no longer ours: nothing deleted
    tail, committed, acked, factor, status = out["done"]
    assert [tail, committed, acked, factor] == [3, 0, 3, 1]
    assert " unconfirmed=0 oldest_unconfirmed=0s bad_confirms=0 " in status
    assert out["persisted"] == [3, 3]
    assert out["factors"] == [2, 4, 8, 16, 16, 16]


ORDER = r"""
import socket, time
from ring import Ring
from testkit import make, adv_data, df5, mac, dump

socket.BROKER.auto_confirm = False
gw, ble = make()
await gw.uplink_step()
for i in range(21):
    ble.inject(mac(i), -70, adv_data(df5(i)))
gw.poll_ble()
gw.ring.flush()
await gw.uplink_step()  # seqs 0, 1, 2 of 7 readings each
steps = []
def confirm(first, last):
    socket.BROKER.deliver("edge-gw/esp32-1/confirm",
                          ('{"v":1,"gateway":"esp32-1","seqs":[[%d,%d]]}' % (first, last)).encode())
    gw.poll()
    r = Ring("/ring.bin", 8192, 256)  # what a reboot would find now
    steps.append([gw.ring.tail, gw.ring.committed(), gw.ring.unconfirmed(time.ticks_ms(), time.ticks_diff)[0],
                  [[e[0], e[3]] for e in gw.ring.inflight], r.tail])
confirm(2, 2)  # out of order: waits for 0 and 1
confirm(0, 0)  # the prefix moves over batch 0
confirm(1, 1)  # then over 1 and the already confirmed 2
dump(steps)
"""


def test_out_of_order_confirmations_move_the_tail_over_the_confirmed_prefix_only(mpy: MicroPython) -> None:
    (steps,) = mpy.run_json(ORDER)
    acked, done = 1, 3
    assert steps == [
        [0, 21, 14, [[0, acked], [1, acked], [2, done]], 0],
        [7, 14, 7, [[1, acked], [2, done]], 7],
        [21, 0, 0, [], 21],
    ]


BROKER_MODE = r"""
import socket
from ring import Ring
from testkit import make, adv_data, df5, mac, dump

socket.BROKER.auto_confirm = False
gw, ble = make({"uplink": {"confirm": "broker"}})
await gw.uplink_step()
for i in range(10):
    ble.inject(mac(i), -70, adv_data(df5(i)))
gw.poll_ble()
gw.ring.flush()
await gw.uplink_step()
r = Ring("/ring.bin", 8192, 256)
dump({"subs": [s[1] for s in socket.BROKER.subscriptions], "committed": gw.ring.committed(),
      "acked": gw.acked, "inflight": gw.ring.inflight, "persisted": r.tail,
      "seqs": [json.loads(p)["seq"] for t, p, q, rt in socket.BROKER.published if t.endswith("/batch")]})
"""


def test_broker_mode_deletes_on_the_puback_and_does_not_subscribe(mpy: MicroPython) -> None:
    (out,) = mpy.run_json(BROKER_MODE.replace("import socket", "import socket, json"))
    assert out == {"subs": [], "committed": 0, "acked": 10, "inflight": [], "persisted": 10, "seqs": [0, 1]}


REBOOTS = r"""
import socket
from testkit import make, adv_data, df5, mac, dump

socket.BROKER.auto_confirm = False
runs = []
for boot in range(5):
    gw, ble = make()
    if boot == 0:
        for i in range(4):
            ble.inject(mac(i), -70, adv_data(df5(i)))
        gw.poll_ble()
        gw.ring.flush()
    await gw.uplink_step()  # sends everything unconfirmed, under new seqs
    await gw.uplink_step()
    gw.drop_connection()  # reconnect: sent again
    await gw.uplink_step()
    runs.append([gw.ring.tail, gw.ring.committed(), gw.connects])
batches = [json.loads(p) for t, p, q, r in socket.BROKER.published if t.endswith("/batch")]
dump({"runs": runs, "seqs": [b["seq"] for b in batches], "readings": [len(b["readings"]) for b in batches],
      "same": all(b["readings"] == batches[0]["readings"] for b in batches)})
"""


def test_seqs_never_repeat_across_reboots_and_reconnects(mpy: MicroPython) -> None:
    (out,) = mpy.run_json(REBOOTS.replace("import socket", "import socket, json"))
    assert out["runs"] == [[0, 4, 2]] * 5
    seqs = out["seqs"]
    # two sends per boot (the first connection, then the reconnect); each boot starts a new block of 64
    assert seqs == [s for boot in range(5) for s in (64 * boot, 64 * boot + 1)]
    assert out["readings"] == [4] * 10
    assert out["same"] is True


POWER_CUT = r"""
import os, socket, time
from ring import Ring
from testkit import make, adv_data, df5, mac, dump

class Reset(Exception):
    pass

class Plan:
    def __init__(self, crash_at, cut):
        self.crash_at = crash_at
        self.cut = cut
        self.writes = 0
        self.sizes = []
        self.meta = []  # indexes of the writes to the meta file

class TornFile:
    # The n-th write (over all files) reaches flash only in part, then the board resets.
    def __init__(self, f, plan, meta):
        self.f = f
        self.plan = plan
        self.meta = meta
    def write(self, data):
        p = self.plan
        p.writes += 1
        p.sizes.append(len(data))
        if self.meta:
            p.meta.append(p.writes - 1)
        if p.writes - 1 == p.crash_at:
            k = min(p.cut, len(data) - 1)
            if k > 0:
                self.f.write(bytes(data[:k]))
            self.f.close()
            raise Reset()
        return self.f.write(data)
    def seek(self, *a):
        return self.f.seek(*a)
    def read(self, *a):
        return self.f.read(*a)
    def readinto(self, b):
        return self.f.readinto(b)
    def close(self):
        self.f.close()
    def __enter__(self):
        return self
    def __exit__(self, *a):
        self.f.close()

import gateway, config, network, bluetooth
from testkit import merged

CFG = {"buffer": {"path": "/p.bin", "bytes": 4096, "page_bytes": 256}, "uplink": {"batch_max_readings": 2}}

def fresh():
    for p in ("/p.bin", "/p.bin.meta"):
        try:
            os.remove(p)
        except OSError:
            pass

def confirm(gw, first, last):
    socket.BROKER.deliver("edge-gw/esp32-1/confirm",
                          ('{"v":1,"gateway":"esp32-1","seqs":[[%d,%d]]}' % (first, last)).encode())
    gw.poll()

async def scenario(plan, state):
    # state: [confirmed prefix end, head]; the tail may never pass the first.
    cfg = config.validate(merged(CFG))
    opener = lambda path, mode="r": TornFile(open(path, mode), plan, path.endswith(".meta"))
    clock = gw_clock()
    gw = gateway.Gateway(cfg, bluetooth.BLE(), network.WLAN(network.STA_IF), clock, opener)
    gw.scanner.start()
    await gw.uplink_step()
    n = 0
    for rnd in range(4):
        for i in range(6):
            gw.on_advert(mac(n), -70, df5(n))
            n += 1
        gw.ring.flush()
        state[1] = gw.ring.head
        await gw.uplink_step()  # three batches of 2
        s0, s1, s2 = [e[0] for e in gw.ring.inflight]
        for seq in (s2, s0, s1):  # out of order: s2 waits, then s0 moves the tail, then s1 and s2
            confirm(gw, seq, seq)
            state[0] = gw.ring.tail
    return gw

class gw_clock:
    synced = True
    def stamp(self):
        return 1763913600000000000 + time.ticks_ms(), time.ticks_ms()
    def corrected(self, t):
        return t

def used_seqs():
    return [json.loads(p)["seq"] for t, p, q, r in socket.BROKER.published if t.endswith("/batch")]

socket.BROKER.auto_confirm = False
probe = Plan(-1, 0)
fresh()
await scenario(probe, [0, 0])
total = probe.writes
problems = []
cases = meta_cases = 0
for at in range(total):
    size = probe.sizes[at]
    for cut in sorted(set((0, 1, 8, 20, size // 2, size - 1))):
        if cut >= size:
            continue
        cases += 1
        meta_cases += at in probe.meta
        fresh()
        socket.BROKER.reset()
        socket.BROKER.auto_confirm = False
        state = [0, 0]
        try:
            await scenario(Plan(at, cut), state)
            problems.append("no reset at write %d" % at)
            continue
        except Reset:
            pass
        before = used_seqs()
        confirmed_end, head = state
        where = "write %d cut %d" % (at, cut)
        r2 = Ring("/p.bin", 4096, 256)
        if r2.tail > confirmed_end:
            problems.append(where + ": tail %d past the confirmed %d" % (r2.tail, confirmed_end))
        seqs = [x.seq for x in r2.peek(1000)]
        if seqs != list(range(r2.tail, r2.head)) or r2.head < head:
            problems.append(where + ": records %r, tail %d head %d" % (seqs, r2.tail, head))
        # after the reboot everything not persisted as confirmed is sent again, under new seqs
        socket.BROKER.reset()  # auto_confirm: the receiver confirms what comes now
        gw = gateway.Gateway(config.validate(merged(CFG)), bluetooth.BLE(), network.WLAN(network.STA_IF),
                             gw_clock())
        await gw.uplink_step()
        await gw.uplink_step()
        after = used_seqs()
        resent = [json.loads(p) for t, p, q, r in socket.BROKER.published if t.endswith("/batch")]
        if sum(len(b["readings"]) for b in resent) != len(seqs) or gw.ring.committed():
            n = sum(len(b["readings"]) for b in resent)
            problems.append(where + ": re-sent %d readings of %d" % (n, len(seqs)))
        if before and after and min(after) <= max(before):
            problems.append(where + ": seq reused %r after %r" % (after, before))
dump({"writes": total, "meta_writes": len(probe.meta), "cases": cases, "meta_cases": meta_cases,
      "problems": problems[:10], "n_problems": len(problems)})
"""


def test_a_reset_at_any_write_while_confirming_loses_nothing_and_deletes_nothing_unconfirmed(
    mpy: MicroPython,
) -> None:
    out: dict[str, Any]
    (out,) = mpy.run_json(POWER_CUT.replace("import os", "import json, os"), timeout=180)
    assert out["problems"] == [], out
    assert out["n_problems"] == 0
    # 4 rounds of 8 page writes (6 records, pages of 4), one seq reservation, and 2 meta writes per round for the
    # confirmations that moved the tail
    assert out["meta_writes"] >= 9
    assert out["writes"] >= out["meta_writes"] + 4
    assert out["meta_cases"] >= 4 * out["meta_writes"]
