"""cloud-ingest's per-message CPU from a received PUBLISH packet to its place in a write batch, without sockets:
the input's packet parser (MqttInput._on_publish), Receiver._accept (monitor, Router, the Ruuvi Gateway parser,
the message, the batcher) for Ruuvi Gateway traffic, one DF5 reading per message. Then each closed batch goes
through the write path's CPU work: dedup and line protocol (as the sink encodes it), no HTTP.

CPU time (time.process_time), best of --repeat passes; each pass is a fresh Receiver (empty caches and dedup
memory), fed the packets the way gmqtt hands them over (fixed header split off). Not a test.

CPU time on this shared VM moves by 30 % from one minute to the next, more than most changes to this path.
`--instructions` runs the bench under valgrind's callgrind and also counts the instructions each part executes:
deterministic, so a before/after (`--tree`) needs one run each (about 20 s for 10,000 messages).

    python bench/bench_accept.py
    python bench/bench_accept.py --messages 200000 --qos 1 --repeat 7
    python bench/bench_accept.py --tree /tmp/base     # the receiver of another checkout, for a before/after
    python bench/bench_accept.py --instructions --messages 10000
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# --tree DIR: import cloud/ and core/ from that checkout (read before argparse: the imports below need it).
TREE = Path(sys.argv[sys.argv.index("--tree") + 1]) if "--tree" in sys.argv[:-1] else ROOT
sys.path[:0] = [str(TREE), str(ROOT / "bench"), str(ROOT / "tests")]

from servers import callgrind_instructions  # noqa: E402

from cloud.formats import Router  # noqa: E402
from cloud.lineproto import Encoder  # noqa: E402
from cloud.receiver import Receiver  # noqa: E402
from cloud.receiver_settings import MqttSettings, ReceiverSettings  # noqa: E402
from cloud.sinks import open_sink  # noqa: E402

S = 1_000_000_000


def packets(msgs: list[tuple[str, bytes]], qos: int) -> list[tuple[int, bytes]]:
    """(first byte of the fixed header, the rest after Remaining Length) per message, MQTT v5, no properties."""
    out = []
    for i, (topic, payload) in enumerate(msgs):
        t = topic.encode()
        mid = struct.pack("!H", i % 65535 + 1) if qos else b""
        out.append((0x30 | (qos << 1), struct.pack("!H", len(t)) + t + mid + b"\x00" + payload))
    return out


def instructions() -> int:
    """Instructions this process has executed so far, all threads (under callgrind: --instructions), else 0."""
    return callgrind_instructions(os.getpid()) if os.environ.get("BENCH_UNDER_CALLGRIND") else 0


STAGES = ("packet -> batch (input, accept, parse, batcher)", "dedup (and the acknowledgements)",
          "line protocol")


class Stages:
    """CPU seconds and instructions per stage, added up over the chunks of a pass."""

    def __init__(self) -> None:
        self.cpu = [0.0] * len(STAGES)
        self.instructions = [0] * len(STAGES)
        self._at = (0.0, 0)

    def start(self) -> None:
        self._at = (time.process_time(), instructions())

    def lap(self, stage: int) -> None:
        now = (time.process_time(), instructions())
        self.cpu[stage] += now[0] - self._at[0]
        self.instructions[stage] += now[1] - self._at[1]
        self._at = (time.process_time(), instructions())


def one_pass(pkts: list[tuple[int, bytes]], now_ns: int, window: int) -> tuple[Stages, int]:
    """The stages' costs for all packets, and the points written."""
    receiver = Receiver(ReceiverSettings(mqtt=MqttSettings(receive_maximum=window),
                                         batch_max_messages=window // 2, batch_max_points=window),
                        sink=open_sink("http://127.0.0.1:9/bench"), router=Router(), clock=lambda: now_ns)
    mqtt = receiver.mqtt
    assert Path(sys.modules["cloud"].__file__ or "").is_relative_to(TREE), "cloud/ was not imported from --tree"
    assert mqtt is not None
    mqtt._protocol.protocol_version = 5  # as on a connection that agreed MQTT v5
    dedup = receiver.write_path.dedup
    assert dedup is not None
    line = Encoder().line
    on_publish = mqtt._on_publish
    stages = Stages()
    written = 0
    for start in range(0, len(pkts), window // 2):
        chunk = pkts[start:start + window // 2]
        stages.start()
        for cmd, packet in chunk:
            on_publish(cmd, packet)
        stages.lap(0)
        batches = list(receiver._ready)
        receiver._ready.clear()
        closed = receiver.batcher.close("drain", 0.0)
        if closed is not None:
            batches.append(closed)
        kept = []
        for batch in batches:
            kept.extend(dedup.filter([p for _, pts in batch for p in pts]).kept)
            for msg in batch.messages:
                msg.acknowledge()
        stages.lap(1)
        for p in kept:
            line(p)
        stages.lap(2)
        written += len(kept)
    if receiver.journal is not None:
        receiver.journal.close()
    return stages, written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--qos", type=int, choices=(0, 1), default=0)
    ap.add_argument("--window", type=int, default=20000, help="mqtt.receive_maximum (a batch holds half)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose receiver is measured")
    ap.add_argument("--instructions", action="store_true", help="run under callgrind and count instructions too")
    args = ap.parse_args()
    if args.instructions and not os.environ.get("BENCH_UNDER_CALLGRIND"):
        if shutil.which("valgrind") is None:
            sys.exit("--instructions needs valgrind (apt install valgrind)")
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, *sys.argv]
        sys.exit(subprocess.run(argv, check=False, env={**os.environ, "BENCH_UNDER_CALLGRIND": "1"},
                                stderr=subprocess.DEVNULL).returncode)
    # After cloud/ is imported from --tree: bench_parse puts this checkout first on sys.path.
    from bench_parse import ruuvi_gateway_messages

    gc.set_threshold(50_000, 50, 100)  # what `cloud-ingest run` sets
    now_ns = time.time_ns()
    pkts = packets(ruuvi_gateway_messages(args.messages, now_ns // S - 3600), args.qos)
    runs = [one_pass(pkts, now_ns, args.window) for _ in range(args.repeat)]
    assert all(r[1] == args.messages for r in runs), [r[1] for r in runs]
    n = args.messages
    cpu = [min(r[0].cpu[k] for r in runs) / n * 1e6 for k in range(len(STAGES))]
    print(f"{n} Ruuvi Gateway messages at QoS {args.qos} ({args.tree}), CPU µs per message, best of {args.repeat}:")
    for name, t in zip(STAGES, cpu, strict=True):
        print(f"  {name:50} {t:6.2f}")
    print(f"  {'total':50} {sum(cpu):6.2f}")
    if os.environ.get("BENCH_UNDER_CALLGRIND"):
        ins = [min(r[0].instructions[k] for r in runs) / n for k in range(len(STAGES))]
        print("instructions per message (callgrind; the CPU times above are valgrind's, not the machine's):")
        for name, i in zip(STAGES, ins, strict=True):
            print(f"  {name:50} {i:8.0f}")
        print(f"  {'total':50} {sum(ins):8.0f}")


if __name__ == "__main__":
    main()
