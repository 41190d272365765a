"""micropython/ring.py inside the WebAssembly port: order, drop-oldest, persistence, and a simulated reset at every
write step (each write torn at several byte offsets) never loses or corrupts a committed record."""

from __future__ import annotations

from mpy_harness import MicroPython

COMMON = r"""
import os, ring
from binascii import unhexlify
from testkit import dump

DF5 = unhexlify("0512fc5394c37c0004fffc040cac364200cdcbb8334c884f")
E1 = unhexlify("e1170c5668c79e0065007004bd11ca00c90a0213e0acffffffdecdee01ffffffffffcbb8334c884f")

def content(seq):
    # What record `seq` holds in these tests: varied formats, rssi, sync flag and time.
    raw = E1 if seq % 5 == 0 else DF5[:16] + bytes((seq >> 8 & 0xFF, seq & 0xFF)) + DF5[18:]
    rssi = None if seq % 7 == 0 else -(seq % 100)
    mac = bytes((0xC0, 0, 0, 0, seq >> 8 & 0xFF, seq & 0xFF))
    return mac, 1763913600000000000 + seq * 1000003, seq % 3 != 0, rssi, raw

def same(rec):
    return (rec.mac, rec.time_ns, rec.synced, rec.rssi, rec.raw) == content(rec.seq)

def fresh(path):
    for p in (path, path + ".meta"):
        try:
            os.remove(p)
        except OSError:
            pass
"""

ORDER = (
    COMMON
    + r"""
fresh("/r.bin")
r = ring.Ring("/r.bin", 2048, 256)  # 32 slots, pages of 4
for s in range(10):
    r.append(*content(s))
before_flush = [r.committed(), r.depth()]  # 8 written as two full pages, 2 in RAM
r.flush()
first = r.peek(4)
r.ack(first[-1].seq, 1)
for s in range(10, 100):
    r.append(*content(s))
r.flush()
recs = r.peek(1000)
again = ring.Ring("/r.bin", 2048, 256)  # reboot
recs2 = again.peek(1000)
# corrupt one committed slot: it is skipped and counted, the rest still come out
f = open("/r.bin", "r+b"); f.seek((80 % 32) * 64 + 30); f.write(b"\x00"); f.close()
third = ring.Ring("/r.bin", 2048, 256)
recs3 = third.peek(1000)
# buffer.bytes changed between boots: the old file cannot be mapped, so it is started afresh
resized = ring.Ring("/r.bin", 4096, 256)
resized.append(*content(0))
resized.flush()
again_resized = ring.Ring("/r.bin", 4096, 256)
dump({"resized": [resized.resized, resized.batch_seq, again_resized.resized, again_resized.head,
                  [same(x) for x in again_resized.peek(10)]],
      "before_flush": before_flush, "first": [x.seq for x in first], "seqs": [x.seq for x in recs],
      "ok": all(same(x) for x in recs + recs2 + recs3), "dropped": r.dropped,
      "reboot": [again.head, again.tail, again.batch_seq, again.dropped,
                 [x.seq for x in recs2] == [x.seq for x in recs]],
      "corrupt": [len(recs3), third.lost, 80 in [x.seq for x in recs3], third.peek_end]})
"""
)


def test_ring_keeps_order_drops_oldest_and_survives_a_reboot(mpy: MicroPython) -> None:
    (out,) = mpy.run_json(ORDER)
    assert out["before_flush"] == [8, 10]
    assert out["first"] == [0, 1, 2, 3]
    assert out["seqs"] == list(range(68, 100))  # 32 slots: the newest 32 of 100
    assert out["ok"] is True
    assert out["dropped"] == 100 - 4 - 32  # 4 were acked, the rest beyond 32 were dropped
    assert out["reboot"] == [100, 68, 1, 64, True]
    assert out["corrupt"] == [31, 1, False, 100]
    assert out["resized"] == [True, 1, False, 1, [True]]


CRASH = (
    COMMON
    + r"""
class Reset(Exception):
    pass

class Plan:
    def __init__(self, crash_at, cut):
        self.crash_at = crash_at
        self.cut = cut
        self.writes = 0
        self.sizes = []

class TornFile:
    # A file whose n-th write (over all files) reaches flash only in part, then the board resets.
    def __init__(self, f, plan):
        self.f = f
        self.plan = plan
    def write(self, data):
        p = self.plan
        p.writes += 1
        p.sizes.append(len(data))
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

SLOTS = 16
PAGE = 4

def scenario(plan, state):
    r = ring.Ring("/c.bin", SLOTS * 64, PAGE * 64, lambda path, mode="r": TornFile(open(path, mode), plan))
    for i in range(60):
        r.append(*content(r.head + r._pending))
        state[0], state[1] = r.tail, r.head
        if i % 3 == 2:
            r.flush()
            state[0], state[1] = r.tail, r.head
        if i % 7 == 6:
            recs = r.peek(5)
            if recs:
                r.ack(r.peek_end - 1, r.batch_seq + 1)
            state[0], state[1] = r.tail, r.head

# How many writes does the whole scenario make?
probe = Plan(-1, 0)
fresh("/c.bin")
scenario(probe, [0, 0])
total = probe.writes
problems = []
cases = 0
for at in range(total):
    size = probe.sizes[at]
    for cut in sorted(set((0, 1, 20, 63, 64, 65, size // 2, size - 1))):
        if cut >= size:
            continue
        cases += 1
        fresh("/c.bin")
        state = [0, 0]
        try:
            scenario(Plan(at, cut), state)
            problems.append("no reset at write %d" % at)
            continue
        except Reset:
            pass
        tail, head = state
        r2 = ring.Ring("/c.bin", SLOTS * 64, PAGE * 64)
        recs = r2.peek(1000)
        seqs = [x.seq for x in recs]
        must = range(max(tail, head + PAGE - SLOTS), head)
        where = "write %d cut %d" % (at, cut)
        if any(s not in seqs for s in must):
            problems.append(where + ": lost committed %r from %r" % (list(must), seqs))
        if seqs != sorted(seqs) or (seqs and seqs != list(range(seqs[0], seqs[-1] + 1))):
            problems.append(where + ": out of order %r" % seqs)
        if not all(same(x) for x in recs):
            problems.append(where + ": corrupt record")
        if seqs and seqs[-1] >= head + PAGE:
            problems.append(where + ": record from the future")
        # A torn write into a full ring leaves the oldest record it was replacing unreadable
        # (that record was being dropped anyway); it is counted in `lost`, never returned.
        if r2.lost > PAGE - 1:
            problems.append(where + ": %d unreadable slots" % r2.lost)
        # the ring keeps working after the reset
        for _ in range(PAGE + 1):
            r2.append(*content(r2.head + r2._pending))
        r2.flush()
        after = [x.seq for x in r2.peek(1000)]
        if after[-PAGE - 1:] != list(range(r2.head - PAGE - 1, r2.head)) or not all(same(x) for x in r2.peek(1000)):
            problems.append(where + ": cannot continue after reset")
dump({"writes": total, "cases": cases, "problems": problems[:10], "n_problems": len(problems)})
"""
)


def test_a_reset_at_any_write_step_loses_no_committed_record(mpy: MicroPython) -> None:
    (out,) = mpy.run_json(CRASH, timeout=120)
    assert out["problems"] == [], out
    assert out["n_problems"] == 0
    # 20 page writes + 8 partial-page flushes + 8 ack (meta) writes, each torn at up to 8 offsets
    assert out["writes"] >= 30
    assert out["cases"] >= 4 * out["writes"]
