"""confluent-kafka (the client cloud-ingest uses) against aiokafka, on a private single-node Kafka 4.x broker
(tests/kafka_server.py), in one run: how fast small keyed records go in (idempotent producer, acks=all) and come out
(one consumer in a group, offsets committed per batch), and the client process's CPU for it.

The records are about the size of one reading as JSON (about 110 bytes), keyed by one of 1000 tag MACs. The produce
clock runs from the first send to the last acknowledgement. The consume clock starts at the first record received
(the group join before it is reported apart) and stops when all have been processed and their offsets committed.
Each client has its own topic; the clients take turns in the order given. CPU is this process's user + system
time (librdkafka's threads included) over the phase. aiokafka is not a dependency: `pip install aiokafka` for this.

    python bench/bench_kafka_client.py                 # 200,000 records, 3 partitions, both clients
    python bench/bench_kafka_client.py --records 1000000 --partitions 6 --clients confluent
    python bench/bench_kafka_client.py --clients confluent,confluent-async-commit,aiokafka
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka_server import Kafka

Records = list[tuple[bytes, bytes]]


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def produce_confluent(bootstrap: str, topic: str, records: Records, linger_ms: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": linger_ms})
    p.list_topics(timeout=10)
    for key, value in records:
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:  # the local queue is full: serve delivery reports, then go on
                p.poll(0.01)
        p.poll(0)
    assert p.flush(120) == 0


def consume_confluent(bootstrap: str, topic: str, n: int, batch: int, asynchronous: bool = False) -> float:
    """Consumes n records; returns the time of the first one (the clock starts there)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got, first = 0, 0.0
    while got < n:
        records = [m for m in c.consume(num_messages=batch, timeout=1.0) if m.error() is None]
        if not records:
            continue
        if not first:
            first = time.perf_counter()
        got += len(records)
        c.commit(asynchronous=asynchronous)
    c.close()
    return first


def produce_aiokafka(bootstrap: str, topic: str, records: Records, linger_ms: int) -> None:
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=linger_ms)
        await p.start()
        try:
            pending = []
            for key, value in records:
                pending.append(await p.send(topic, value=value, key=key))  # queued; the future is the ack
                if len(pending) >= 10_000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
        finally:
            await p.stop()

    asyncio.run(run())


def consume_aiokafka(bootstrap: str, topic: str, n: int, batch: int) -> float:
    from aiokafka import AIOKafkaConsumer

    async def run() -> float:
        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-{topic}",
                             enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        got, first = 0, 0.0
        try:
            while got < n:
                parts = await c.getmany(timeout_ms=1000, max_records=batch)
                count = sum(len(v) for v in parts.values())
                if not count:
                    continue
                if not first:
                    first = time.perf_counter()
                got += count
                await c.commit()
        finally:
            await c.stop()
        return first

    return asyncio.run(run())


def consume_confluent_async(bootstrap: str, topic: str, n: int, batch: int) -> float:
    """The same with commit(asynchronous=True): what the synchronous commit's round trip costs per batch."""
    return consume_confluent(bootstrap, topic, n, batch, asynchronous=True)


CLIENTS: dict[str, tuple[Callable[[str, str, Records, int], None], Callable[[str, str, int, int], float]]] = {
    "confluent": (produce_confluent, consume_confluent),
    "confluent-async-commit": (produce_confluent, consume_confluent_async),
    "aiokafka": (produce_aiokafka, consume_aiokafka),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--linger-ms", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1000, help="records per consume call and per commit")
    ap.add_argument("--clients", default="confluent,aiokafka", help="comma-separated, in the order to run")
    args = ap.parse_args()
    n = args.records
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]

    with tempfile.TemporaryDirectory() as tmp:
        kafka = Kafka(Path(tmp) / "kafka", heap="512m").start()
        try:
            print(f"broker started in {kafka.started_in:.2f} s")
            admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
            for f in admin.create_topics([NewTopic(f"bench-{c}", num_partitions=args.partitions,
                                                   replication_factor=1) for c in clients]).values():
                f.result(30)
            macs = [f"cb:b8:33:4c:{i // 256:02x}:{i % 256:02x}".encode() for i in range(1000)]
            records = [
                (macs[i % 1000], b'{"mac":"%s","t":%d,"temperature":21.37,"humidity":45.2,"pressure":100812,'
                                 b'"battery":2.95}' % (macs[i % 1000], 1_700_000_000_000 + i))
                for i in range(n)
            ]
            size = sum(len(v) for _, v in records) / n
            results: dict[str, tuple[float, float, float, float]] = {}
            for client in clients:
                produce, consume = CLIENTS[client]
                topic = f"bench-{client}"
                cpu0, began = cpu_s(), time.perf_counter()
                produce(kafka.bootstrap, topic, records, args.linger_ms)
                produce_s, produce_cpu = time.perf_counter() - began, cpu_s() - cpu0
                print(f"{client} produce: {n} records of {size:.0f} B in {produce_s:.2f} s = "
                      f"{n / produce_s:,.0f} records/s, {produce_cpu / n * 1e5:.2f} CPU s per 100k "
                      f"(idempotent, acks=all, linger.ms={args.linger_ms}, {args.partitions} partitions)")
                cpu0, joined = cpu_s(), time.perf_counter()
                first = consume(kafka.bootstrap, topic, n, args.batch)
                consume_s, consume_cpu = time.perf_counter() - first, cpu_s() - cpu0
                print(f"{client} consume: group join + first fetch {first - joined:.2f} s, then {n} records in "
                      f"{consume_s:.2f} s = {n / consume_s:,.0f} records/s, {consume_cpu / n * 1e5:.2f} CPU s per "
                      f"100k (join included) (commit every {args.batch})")
                results[client] = (n / produce_s, produce_cpu, n / consume_s, consume_cpu)
            if "confluent" in results and "aiokafka" in results:
                c, a = results["confluent"], results["aiokafka"]
                print(f"confluent-kafka / aiokafka: produce {c[0] / a[0]:.2f}x the rate at {c[1] / a[1]:.2f}x the "
                      f"CPU; consume {c[2] / a[2]:.2f}x the rate at {c[3] / a[3]:.2f}x the CPU")
            status = Path(f"/proc/{kafka.proc.pid}/status").read_text()  # type: ignore[union-attr]
            rss = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
            print(f"broker RSS after the run: {int(rss) // 1024} MiB (heap -Xmx512m)")
        finally:
            kafka.stop()


if __name__ == "__main__":
    main()
