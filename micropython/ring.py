# Store-and-forward ring buffer in flash: a file of fixed 64-byte slots on LittleFS.
#
# Slot (big-endian):  0 u32 seq | 4 u8 flags | 5 i8 rssi | 6 mac[6] | 12 i64 time_ns |
#                     20 raw[40] (0xFF padded) | 60 u32 crc32 of bytes 0..59
# Record `seq` lives in slot seq % slots, so the slot index and the CRC together say whether a
# slot holds that record.  Nothing committed is ever rewritten: a write only touches slots of new
# records (or, when full, of the oldest records, which are being dropped anyway), so a reset in
# the middle of a write can only lose records of that write.  At boot the newest valid seq gives
# the head, whatever the file system did with the torn write.
#
# Records are collected in a RAM page and written one page at a time (flash wear), or on
# flush().  Only written ("committed") records are handed to the uplink.  The ack position, the
# batch seq reservation, the drop counter and the ring's size in slots live in a second small
# file with two CRC'd copies written alternately, so a torn write there leaves the previous copy.
#
# Batches in flight: a batch covers the records [start, end) after the previous batch.  Its
# entry in `inflight` (RAM only) maps its seq to that range until it is confirmed; the tail (and
# the ack position on flash) moves only over the confirmed prefix, so a batch confirmed out of
# order waits for the ones before it.  After a reboot the table is empty: everything from the
# persisted tail is sent again.  A seq is never used twice, also across a reboot: new_seq()
# persists a reservation of SEQ_BLOCK seqs before it hands out the first of them, because a
# late confirmation of a reused seq would delete readings that never arrived.
import struct
from binascii import crc32

from micropython import const

SLOT = const(64)
_RAW = const(40)
_HEAD = ">IBb6sq"  # seq, flags, rssi, mac, time_ns: 20 bytes
_META = ">IIIIII"  # generation, slots, tail, batch_seq, dropped, crc: 24 bytes
_META_SIZE = const(24)
_SYNCED = const(1)
_NO_RSSI = const(-128)
_PAD = b"\xff" * _RAW
SEQ_BLOCK = const(64)
# inflight entry: [seq, start, end, state, acked_ms, first_sent_ms]
SENT = const(0)  # published, no PUBACK yet
ACKED = const(1)  # PUBACK, waiting for the confirmation
DUE = const(2)  # to be sent again, under a new seq
DONE = const(3)  # confirmed, waiting for the batches before it


class Record:
    __slots__ = ("seq", "mac", "time_ns", "synced", "rssi", "raw")

    def __init__(self, seq, mac, time_ns, synced, rssi, raw):
        self.seq = seq
        self.mac = mac  # 6 bytes
        self.time_ns = time_ns
        self.synced = synced
        self.rssi = rssi  # dBm or None
        self.raw = raw  # manufacturer data after 0x0499, format byte first

    def __repr__(self):
        return "Record(%d)" % self.seq


def _pack(buf, off, seq, mac, time_ns, synced, rssi, raw):
    struct.pack_into(_HEAD, buf, off, seq, _SYNCED if synced else 0, _NO_RSSI if rssi is None else rssi, mac, time_ns)
    n = len(raw)
    buf[off + 20 : off + 20 + n] = raw
    buf[off + 20 + n : off + 60] = _PAD[: _RAW - n]
    struct.pack_into(">I", buf, off + 60, crc32(memoryview(buf)[off : off + 60]))


def _unpack(buf, off, want_seq):
    # The record in buf[off:off+64] if it is record `want_seq` and intact, else None.
    mv = memoryview(buf)
    if struct.unpack_from(">I", buf, off + 60)[0] != crc32(mv[off : off + 60]):
        return None
    seq, flags, rssi, mac, time_ns = struct.unpack_from(_HEAD, buf, off)
    if want_seq is not None and seq != want_seq:
        return None
    raw = bytes(mv[off + 20 : off + 60])
    n = _raw_len(raw[0])
    return Record(seq, mac, time_ns, bool(flags & _SYNCED), None if rssi == _NO_RSSI else rssi, raw[:n])


# The payload length follows from the format byte (ruuvi.LENGTHS); kept here so the ring does
# not import the decoder.
_LENGTHS = {3: 14, 5: 24, 0xC5: 18, 6: 20, 0xE1: 40, 8: 24}


def _raw_len(fmt):
    return _LENGTHS.get(fmt, _RAW)


def _exists(path, opener):
    try:
        opener(path, "rb").close()
        return True
    except OSError:
        return False


class Ring:
    def __init__(self, path, capacity_bytes, page_bytes=1024, opener=open):
        if capacity_bytes < 2 * page_bytes or page_bytes % SLOT:
            raise ValueError("ring: capacity must be >= 2 pages and a page a multiple of 64 bytes")
        self.path = path
        self.meta_path = path + ".meta"
        self.slots = capacity_bytes // SLOT
        self.page_slots = page_bytes // SLOT
        self._open = opener
        self._page = bytearray(page_bytes)
        self._pending = 0  # records in the RAM page
        self.head = 0  # next seq to commit
        self.tail = 0  # oldest unacked seq
        self.batch_seq = 0  # next batch seq to use
        self._seq_limit = 0  # seqs below this may have been used (persisted)
        self.sent_end = 0  # seq after the last record handed to a batch
        self.inflight = []  # type: list[list[int]]
        self.dropped = 0
        self.lost = 0  # slots that failed their CRC when read (torn or worn flash)
        self._lost_mark = 0
        self.peek_end = 0  # seq after the last slot peek() looked at
        self._gen = 0
        self.resized = False  # the file was made for another size and was started afresh
        if not _exists(path, opener):
            opener(path, "wb").close()
        self._load()

    # ---- boot -------------------------------------------------------------------------------
    def _load(self):
        best = -1
        chunk = bytearray(self.page_slots * SLOT)
        with self._open(self.path, "rb") as f:
            base = 0
            while base < self.slots:
                n = f.readinto(chunk)
                if not n:
                    break
                for i in range(n // SLOT):
                    rec = _unpack(chunk, i * SLOT, None)
                    if rec is not None and rec.seq % self.slots == base + i and rec.seq > best:
                        best = rec.seq
                base += n // SLOT
        self.head = best + 1
        gen, slots, tail, batch_seq, dropped = self._read_meta()
        self._gen = gen
        self.batch_seq = self._seq_limit = batch_seq
        self.dropped = dropped
        if gen and slots != self.slots:
            # buffer.bytes changed: record seq no longer maps to its slot, so the old file
            # cannot be read.  Start a new one, and record the new size at once.
            self._open(self.path, "wb").close()
            self.head = self.tail = self.sent_end = 0
            self.resized = True
            self._write_meta()
            return
        # Clamp: records older than one lap were overwritten (dropped while we were down).
        oldest = max(0, self.head - self.slots)
        if tail < oldest:
            self.dropped += oldest - tail
            tail = oldest
        self.tail = self.sent_end = min(tail, self.head)

    def _read_meta(self):
        best = (0, 0, 0, 0, 0)
        try:
            with self._open(self.meta_path, "rb") as f:
                data = f.read()
        except OSError:
            return best
        for off in (0, _META_SIZE):
            if len(data) < off + _META_SIZE:
                continue
            gen, slots, tail, batch_seq, dropped, crc = struct.unpack_from(_META, data, off)
            if crc == crc32(memoryview(data)[off : off + 20]) and gen >= best[0]:
                best = (gen, slots, tail, batch_seq, dropped)
        return best

    def _write_meta(self):
        self._gen += 1
        buf = bytearray(_META_SIZE)
        struct.pack_into(_META, buf, 0, self._gen, self.slots, self.tail, self._seq_limit, self.dropped, 0)
        struct.pack_into(">I", buf, 20, crc32(memoryview(buf)[:20]))
        mode = "r+b" if _exists(self.meta_path, self._open) else "wb"
        with self._open(self.meta_path, mode) as f:
            f.seek((self._gen & 1) * _META_SIZE)
            f.write(buf)

    # ---- writing ------------------------------------------------------------------------------
    def append(self, mac, time_ns, synced, rssi, raw):
        # Queue one record in the RAM page; a full page is written at once.
        if not 0 < len(raw) <= _RAW or len(mac) != 6:
            raise ValueError("ring: a record holds a 6-byte MAC and 1-40 payload bytes")
        seq = self.head + self._pending
        _pack(self._page, self._pending * SLOT, seq, mac, time_ns, synced, rssi, raw)
        self._pending += 1
        if self._pending == self.page_slots:
            self.flush()
        return seq

    def flush(self):
        # Commit the RAM page: after this returns the records survive a reset.
        n = self._pending
        if not n:
            return 0
        first = self.head % self.slots
        with self._open(self.path, "r+b") as f:
            # A page that crosses the end of the file is written in two parts.
            part = min(n, self.slots - first)
            f.seek(first * SLOT)
            f.write(memoryview(self._page)[: part * SLOT])
            if part < n:
                f.seek(0)
                f.write(memoryview(self._page)[part * SLOT : n * SLOT])
        self._pending = 0
        self.head += n
        over = self.head - self.tail - self.slots
        if over > 0:  # drop oldest, also records in flight
            self.tail += over
            self.dropped += over
            self._trim()
        return n

    # ---- reading --------------------------------------------------------------------------------
    def committed(self):
        return self.head - self.tail

    def depth(self):
        return self.head - self.tail + self._pending

    def unsent(self):
        return self.head - self.sent_end

    def records(self, limit, start=None, end=None):
        # Generator over up to `limit` committed records from `start` (default: the oldest
        # unacked one) up to `end`, in order, read one slot at a time (the uplink streams a batch
        # from flash, never holding it all).  Slots that fail their check are skipped and counted
        # in `lost`; when the generator is done, peek_end is the seq after the last slot it
        # looked at.
        seq = self.tail if start is None else max(start, self.tail)
        end = min(self.head, seq + limit, self.head if end is None else end)
        buf = bytearray(SLOT)
        with self._open(self.path, "rb") as f:
            while seq < end:
                f.seek((seq % self.slots) * SLOT)
                rec = _unpack(buf, 0, seq) if f.readinto(buf) == SLOT else None
                if rec is not None:
                    yield rec
                elif seq >= self._lost_mark:
                    self.lost += 1
                    self._lost_mark = seq + 1
                seq += 1
        self.peek_end = seq

    def peek(self, limit):
        return list(self.records(limit))

    def ack(self, last_seq, next_batch_seq=None):
        # Everything up to last_seq is delivered: forget it, persist the position.
        if last_seq + 1 > self.tail:
            self.tail = min(last_seq + 1, self.head)
            self.sent_end = max(self.sent_end, self.tail)
            self._trim()
        if next_batch_seq is not None and next_batch_seq > self.batch_seq:
            self.batch_seq = next_batch_seq
            self._seq_limit = max(self._seq_limit, next_batch_seq)
        self._write_meta()

    # ---- batches in flight ------------------------------------------------------------------------
    def new_seq(self):
        # The next batch seq, never used before: the reservation is on flash before it is used.
        seq = self.batch_seq
        if seq >= self._seq_limit:
            self._seq_limit = seq + SEQ_BLOCK
            self._write_meta()
        self.batch_seq = seq + 1
        return seq

    def add_batch(self, seq, start, end, now_ms):
        # A batch of records [start, end) goes out as `seq` (seq < 0: nothing readable to send).
        self.inflight.append([seq, start, end, DONE if seq < 0 else SENT, now_ms, now_ms])
        if end > self.sent_end:
            self.sent_end = end

    def _entry(self, seq):
        for e in self.inflight:
            if e[0] == seq:
                return e
        return None

    def resend(self, entry, seq):
        # The batch goes out again under a new seq; the old one is forgotten (a late
        # confirmation for it is ignored).
        entry[0] = seq
        entry[3] = SENT

    def mark_acked(self, seq, now_ms):
        e = self._entry(seq)
        if e is not None and e[3] == SENT:
            e[3] = ACKED
            e[4] = now_ms

    def resend_all(self):
        # After a reconnect every batch not confirmed is sent again.
        for e in self.inflight:
            if e[3] != DONE:
                e[3] = DUE

    def confirm(self, ranges):
        # Mark the batches whose seq lies in one of the [first, last] ranges (tested, never
        # walked) and move the tail over the confirmed prefix.  Returns (batches matched,
        # records deleted).
        matched = 0
        for e in self.inflight:
            if e[3] == DONE:
                continue
            s = e[0]
            for r in ranges:
                if r[0] <= s <= r[1]:
                    e[3] = DONE
                    matched += 1
                    break
        return matched, self._advance()

    def _advance(self):
        fl = self.inflight
        n = 0
        while n < len(fl) and fl[n][3] == DONE:
            n += 1
        if not n:
            return 0
        end = fl[n - 1][2]
        del fl[:n]
        freed = max(0, end - self.tail)
        if freed:
            self.tail = end
            self._write_meta()  # the ack position moves only after the confirmation
        return freed

    def _trim(self):
        # Drop-oldest went past the start of batches in flight: they keep what is left.
        fl = self.inflight
        while fl and fl[0][2] <= self.tail:
            fl.pop(0)
        if fl and fl[0][1] < self.tail:
            fl[0][1] = self.tail
        if self.sent_end < self.tail:
            self.sent_end = self.tail

    def unconfirmed(self, now_ms, ticks_diff):
        # (records in batches not confirmed yet, ms since the oldest of them was first sent)
        n = 0
        age = 0
        for e in self.inflight:
            if e[3] != DONE:
                n += e[2] - e[1]
                age = max(age, ticks_diff(now_ms, e[5]))
        return n, age
