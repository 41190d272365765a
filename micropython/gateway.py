# The gateway: BLE adverts -> dedup -> flash ring -> MQTT batches (QoS 1), plus a status line.
# A batch leaves the ring when the cloud confirms it (uplink.confirm = "cloud", the default) or
# on its PUBACK ("broker", for a receiver that does not confirm).
# Hardware objects are passed in (BLE, WLAN, clock, MQTT client factory), so tests run the same
# code with fakes; boot() wires the real ones.
import gc
import time

import asyncio
import mqtt
import net
import wire
from ring import ACKED, DONE, DUE, Ring
from scanner import Scanner


def _log(msg):
    print("[edge-gw] " + msg)


class Gateway:
    def __init__(self, cfg, ble, wlan, clock, opener=open, client_factory=None):
        self.cfg = cfg
        self.clock = clock
        self.gateway_id = cfg["gateway_id"]
        self.batch_topic = wire.batch_topic(cfg["topic_prefix"], self.gateway_id)
        self.status_topic = wire.status_topic(cfg["topic_prefix"], self.gateway_id)
        self.confirm_topic = wire.confirm_topic(cfg["topic_prefix"], self.gateway_id)
        self._confirm_topic_b = self.confirm_topic.encode()
        up = cfg["uplink"]
        self.cloud = up["confirm"] == "cloud"
        self.timeout_factor = 1  # doubles on each confirm timeout in a row, up to 16
        buf = cfg["buffer"]
        self.ring = Ring(buf["path"], buf["bytes"], buf["page_bytes"], opener)
        self.scanner = Scanner(ble, max_tags=cfg["scan"]["max_tags"])
        w = cfg["wifi"]
        self.wifi = net.Wifi(wlan, w["ssid"], w["password"], w["timeout_s"])
        self.client_factory = client_factory or self._client
        self.client = None
        self.backoff = net.Backoff()
        self.pending = []  # (ticks_ms, mac, rssi, payload) heard before the clock synced
        self.pending_dropped = 0
        self.batches = 0
        self.acked = 0  # readings deleted from the ring (confirmed, or PUBACKed in broker mode)
        self.confirms = 0  # valid confirmations
        self.bad_confirms = 0  # confirmations ignored as invalid
        self.timeouts = 0  # batches sent again because no confirmation came in time
        self.publish_errors = 0
        self.connects = 0
        self.last_ack = None  # ticks_ms of the last PUBACK
        self.last_error = None
        self._buf = bytearray(640)  # one encoded reading; reused for every reading of every batch

    # ---- readings -------------------------------------------------------------------------------
    def on_advert(self, mac, rssi, payload):
        t, ticks = self.clock.stamp()
        if t is not None:
            self.ring.append(mac, t, True, rssi, payload)
            return
        # Held back in RAM until NTP gives the time; the oldest goes first when full.
        if len(self.pending) >= self.cfg["ntp"]["pending_max"]:
            if not self.pending:
                self.pending_dropped += 1
                return
            self.pending.pop(0)
            self.pending_dropped += 1
        self.pending.append((ticks, mac, rssi, payload))

    def settle_pending(self):
        # After the clock synced: give held-back readings their real time and store them.
        for ticks, mac, rssi, payload in self.pending:
            self.ring.append(mac, self.clock.corrected(ticks), True, rssi, payload)
        n = len(self.pending)
        self.pending = []
        return n

    def poll_ble(self):
        return self.scanner.drain(self.on_advert)

    # ---- uplink ---------------------------------------------------------------------------------
    def _client(self):
        b = self.cfg["broker"]
        ctx = mqtt.tls_context(b["ca_file"], b["insecure"]) if b["tls"] else None
        return mqtt.MQTTClient(
            self.gateway_id, b["host"], b["port"], b["username"], b["password"], b["keepalive_s"], ctx, b["timeout_s"]
        )

    def connect(self):
        c = self.client_factory()
        c.set_last_will(self.status_topic, wire.status(self.gateway_id, False), retain=True, qos=1)
        c.on_message = self.on_message
        self.connects += 1
        try:
            c.connect()
            if self.cloud:  # before publishing anything, so no confirmation can be missed
                c.subscribe(self.confirm_topic, 1)
            c.publish(self.status_topic, wire.status(self.gateway_id, True), retain=True, qos=1)
        except mqtt.MQTTError:
            c.close()
            raise
        self.client = c
        self.ring.resend_all()  # what was not confirmed on the old connection goes again

    def drop_connection(self):
        if self.client is not None:
            self.client.close()
            self.client = None

    def _chunks(self, seq, start, end, limit):
        return wire.batch_chunks(self.gateway_id, seq, self.ring.records(limit, start, end), self._buf)

    def on_message(self, topic, payload):
        # A confirmation (the only topic we subscribe to); payload None: too big to be one.
        if payload is None or topic != self._confirm_topic_b:
            self.bad_confirms += 1
            return
        try:
            ranges = wire.parse_confirm(payload, self.gateway_id)
        except ValueError:
            self.bad_confirms += 1
            return
        self.confirms += 1
        matched, freed = self.ring.confirm(ranges)
        if matched:
            self.timeout_factor = 1
        self.acked += freed

    def check_timeouts(self):
        # Batches PUBACKed but not confirmed within the timeout are due to be sent again.
        now = time.ticks_ms()
        limit = self.cfg["uplink"]["confirm_timeout_s"] * 1000 * self.timeout_factor
        n = 0
        for e in self.ring.inflight:
            if e[3] == ACKED and time.ticks_diff(now, e[4]) >= limit:
                e[3] = DUE
                n += 1
        if n:
            self.timeouts += n
            self.timeout_factor = min(self.timeout_factor * 2, 16)
        return n

    def publish_once(self):
        # Publish one batch: a batch due again first, else the next committed records if fewer
        # than max_unconfirmed_batches are in flight.  Returns the readings sent, or None when
        # there is nothing to send.
        ring = self.ring
        for e in ring.inflight:
            if e[3] == DUE:
                return self._send(e[1], e[2], e)
        if ring.unsent() and len(ring.inflight) < self.cfg["uplink"]["max_unconfirmed_batches"]:
            return self._send(ring.sent_end, None, None)
        return None

    def _send(self, start, end, entry):
        # The batch is streamed from flash twice, once to measure it (MQTT sends the length
        # first) and once to send it, so its size costs no RAM.  Its records stay in the ring
        # until the confirmation (or, in broker mode, the PUBACK).
        ring = self.ring
        limit = self.cfg["uplink"]["batch_max_readings"] if end is None else end - start
        seq = ring.batch_seq  # what new_seq() will hand out below
        length = 0
        chunks = -2  # header and end
        for chunk in self._chunks(seq, start, end, limit):
            length += len(chunk)
            chunks += 1
        end = ring.peek_end
        now = time.ticks_ms()
        if chunks <= 0:  # only unreadable slots: nothing to send, nothing to wait for
            if entry is None:
                ring.add_batch(-1, start, end, now)
            else:
                entry[3] = DONE
            self.acked += ring.confirm(())[1]
            return 0
        client = self.client
        if client is None:
            raise mqtt.MQTTError("not connected")
        seq = ring.new_seq()
        if entry is None:
            ring.add_batch(seq, start, end, now)
        else:
            ring.resend(entry, seq)
        try:
            client.publish_chunks(self.batch_topic, length, self._chunks(seq, start, end, limit), qos=1)
        except mqtt.MQTTError:
            self.publish_errors += 1
            raise
        now = time.ticks_ms()
        self.batches += 1
        self.last_ack = now
        if self.cloud:
            ring.mark_acked(seq, now)
        else:
            self.acked += ring.confirm(((seq, seq),))[1]
        return chunks

    def disconnect(self):
        # A clean shutdown: publish "offline" ourselves (a DISCONNECT suppresses the will).
        if self.client is not None:
            try:
                self.client.publish(self.status_topic, wire.status(self.gateway_id, False), retain=True, qos=1)
            except mqtt.MQTTError:
                pass
            self.client.disconnect()
            self.client = None

    async def uplink_step(self):
        # One round: Wi-Fi, NTP, MQTT, then publish everything committed.  Raises on failure.
        if not await self.wifi.ensure(asyncio.sleep_ms):
            raise OSError("wifi not connected")
        if not self.clock.synced:
            try:
                self.clock.sync(self.cfg["ntp"]["host"])
            except OSError as e:
                _log("ntp: %r" % (e,))
            else:
                _log("clock synced, %d held-back readings stored" % self.settle_pending())
        if self.client is None:
            self.connect()
        if self.cloud:
            self.poll()
            self.check_timeouts()
        sent = 0
        while True:
            n = self.publish_once()
            if n is None:
                break
            sent += n
            await asyncio.sleep_ms(0)
        if self.cloud:
            self.poll()
        if not sent and self.cfg["broker"]["keepalive_s"] and self.client is not None:
            self.client.ping()
        return sent

    def poll(self):
        # Handle the confirmations the broker has sent meanwhile.
        while self.client is not None and self.client.check_msg():
            pass

    # ---- status ---------------------------------------------------------------------------------
    def status_line(self):
        if self.last_ack is None:
            ack = "never"
        else:
            ack = "%ds ago" % (time.ticks_diff(time.ticks_ms(), self.last_ack) // 1000)
        r = self.ring
        s = self.scanner
        waiting, age = r.unconfirmed(time.ticks_ms(), time.ticks_diff)
        return (
            "buffer=%d/%d pending=%d dropped=%d lost=%d last_ack=%s acked=%d batches=%d unconfirmed=%d "
            "oldest_unconfirmed=%ds bad_confirms=%d tags=%d adverts=%d dup=%d bad=%d heap_free=%d wifi=%s mqtt=%s clock=%s"
            " tls=%s"
            % (
                r.depth(),
                r.slots,
                len(self.pending),
                r.dropped + self.pending_dropped,
                r.lost,
                ack,
                self.acked,
                self.batches,
                waiting,
                age // 1000,
                self.bad_confirms,
                s.tags_seen(),
                s.adverts,
                s.duplicates,
                s.decode_errors,
                gc.mem_free(),
                "up" if self.wifi.isconnected() else "down",
                "up" if self.client is not None else "down",
                "synced" if self.clock.synced else "unsynced",
                self._tls_state(),
            )
        )

    def _tls_state(self):
        b = self.cfg["broker"]
        if not b["tls"]:
            return "off"
        return "verified" if b["ca_file"] else "INSECURE"

    # ---- tasks ----------------------------------------------------------------------------------
    async def _ble_task(self):
        while True:
            self.poll_ble()
            if self.scanner.scan_done:  # the stack ended the scan: start it again
                self.scanner.start(active=self.cfg["scan"]["active"])
            await asyncio.sleep_ms(100)

    async def _flush_task(self):
        while True:
            await asyncio.sleep(self.cfg["buffer"]["flush_s"])
            self.ring.flush()

    async def _status_task(self):
        while True:
            _log(self.status_line())
            await asyncio.sleep(self.cfg["status_interval_s"])

    async def _uplink_task(self):
        while True:
            try:
                await self.uplink_step()
                self.backoff.reset()
                delay = self.cfg["uplink"]["interval_s"] * 1000
            except (OSError, mqtt.MQTTError) as e:
                self.last_error = repr(e)
                _log("uplink: %r" % (e,))
                self.drop_connection()
                delay = self.backoff.next()
            await asyncio.sleep_ms(delay)

    async def run(self):
        self.scanner.start(active=self.cfg["scan"]["active"])
        asyncio.create_task(self._ble_task())
        asyncio.create_task(self._flush_task())
        asyncio.create_task(self._status_task())
        await self._uplink_task()


def boot(path="config.json"):
    # Entry point from main.py.  A bad config.json is reported on the REPL and nothing starts,
    # so the board stays reachable with mpremote.
    import bluetooth
    import network
    import ntptime

    import config
    from timebase import Clock

    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        _log(str(e))
        return None
    gw = Gateway(cfg, bluetooth.BLE(), network.WLAN(network.STA_IF), Clock(ntptime))
    _log("gateway %s starting, buffer %d records" % (cfg["gateway_id"], gw.ring.slots))
    if cfg["broker"]["tls"] and not cfg["broker"]["ca_file"]:
        _log("WARNING: TLS without verifying the broker (broker.insecure = true)")
    if gw.ring.resized:
        _log("buffer.bytes changed: the old buffer file was discarded")
    try:
        asyncio.run(gw.run())
    except KeyboardInterrupt:
        # Ctrl-C on the REPL: keep what is in the RAM page, say "offline" ourselves.
        gw.scanner.stop()
        gw.ring.flush()
        gw.disconnect()
        _log("stopped; " + gw.status_line())
    return gw
