"""Points as Kafka records, and back: the contract between `cloud-ingest bridge` and `cloud-ingest run --kafka`.

A record is keyed by the tag's MAC (else its gateway, else the measurement), so that Kafka keeps each tag's readings
in order in one partition. Its value is one reading (`kafka.record = "reading"`) or all the readings of one tag in
one write batch (`"batch"`), in JSON or in Avro (schema: reading.avsc; a batch is an array of it). The headers say
which: `content-type` (`application/json` or `application/avro`), `record` (`reading` or `batch`) and, for Avro,
`schema-fingerprint` (the schema's CRC-64-AVRO fingerprint, 16 hex digits), so that a consumer refuses a record
written with another schema instead of misreading it.

Both encodings keep the field types InfluxDB fixes per field (docs/wire-format.md "InfluxDB types"): Avro by its
union `boolean | long | double | string`, JSON because msgspec writes every float with a decimal point or exponent.
Pure: no I/O.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

import msgspec
import orjson

from cloud.model import FieldValue, Point

ENCODINGS = ("json", "avro")
RECORD_KINDS = ("reading", "batch")
CONTENT_TYPES = {"json": b"application/json", "avro": b"application/avro"}


# JSON records decode straight into type-checked Points, in C (msgspec): 1.9 instead of 4.6 us per reading with
# orjson and the checks in Python (cloud/model.py). Its messages name a bad field only as `$.fields[...]`, so a record
# it refuses is read again the slow way (_point), which says which field and why.
_JSON_READING = msgspec.json.Decoder(Point)
_JSON_BATCH = msgspec.json.Decoder(Annotated[list[Point], msgspec.Meta(min_length=1)])
_json_encode = msgspec.json.Encoder().encode


class RecordError(ValueError):
    """A record that cannot be decoded into points: a poison record. The one-line reason goes to the DLQ headers."""


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None  # None: no key (a dead letter whose record had none)
    value: bytes
    headers: list[tuple[str, bytes]]
    readings: int  # how many points the value holds


def record_key(p: Point) -> bytes:
    tags = p.tags
    return (tags.get("mac") or tags.get("gateway") or p.measurement).encode()


def _load_schema() -> dict[str, Any]:
    text = resources.files("cloud.kafka").joinpath("reading.avsc").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


class Codec:
    """Encodes points into records and decodes records into points, for one encoding."""

    def __init__(self, encoding: str = "json") -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
        self.encoding = encoding
        self._avro_schemas: _Avro | None = _Avro() if encoding == "avro" else None
        self.fingerprint = self._avro_schemas.fingerprint if self._avro_schemas else ""
        base = [("content-type", CONTENT_TYPES[encoding])]
        if self.fingerprint:
            base.append(("schema-fingerprint", self.fingerprint.encode()))
        self._headers = {kind: [*base, ("record", kind.encode())] for kind in RECORD_KINDS}
        self._last_headers: Sequence[tuple[str, bytes | None]] | None = []
        self._last_read = _read_headers(self._last_headers)

    @property
    def _avro(self) -> _Avro:
        if self._avro_schemas is None:
            self._avro_schemas = _Avro()  # a JSON codec reads Avro too; it parses the schema on first use
        return self._avro_schemas

    # ---- encode ----------------------------------------------------------------------------------------------

    def records(self, points: Sequence[Point], kind: str = "reading") -> list[Record]:
        """The records for these points: one per point, or one per key holding that key's points in order."""
        if kind == "reading":
            headers = self._headers["reading"]
            return [Record(record_key(p), self.encode_reading(p), headers, 1) for p in points]
        if kind != "batch":
            raise ValueError(f"record kind must be one of {', '.join(RECORD_KINDS)}, got {kind!r}")
        groups: dict[bytes, list[Point]] = {}
        for p in points:
            groups.setdefault(record_key(p), []).append(p)
        headers = self._headers["batch"]
        return [Record(key, self.encode_batch(pts), headers, len(pts)) for key, pts in groups.items()]

    def encode_reading(self, p: Point) -> bytes:
        if self.encoding == "json":
            return _json_encode(p)
        obj = {"measurement": p.measurement, "time_ns": p.time_ns, "tags": p.tags, "fields": p.fields}
        return self._avro.write(self._avro.reading, obj)

    def encode_batch(self, points: Sequence[Point]) -> bytes:
        if self.encoding == "json":
            return _json_encode(points)
        objs = [{"measurement": p.measurement, "time_ns": p.time_ns, "tags": p.tags, "fields": p.fields}
                for p in points]
        return self._avro.write(self._avro.batch, objs)

    # ---- decode ----------------------------------------------------------------------------------------------

    def decode(self, value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None = None) -> list[Point]:
        """The points of one record; RecordError says why a record cannot be read. A record without headers is
        read as one JSON reading (what another producer most likely wrote)."""
        if headers != self._last_headers:  # a producer sends the same headers with every record: read them once
            self._last_read = _read_headers(headers)  # first: headers it refuses must not be taken as read
            self._last_headers = headers
        content_type, kind, fingerprint = self._last_read
        if value is None:
            raise RecordError("record has no value (a tombstone)")
        if content_type == CONTENT_TYPES["json"]:
            try:
                return [_JSON_READING.decode(value)] if kind == "reading" else _JSON_BATCH.decode(value)
            except (msgspec.DecodeError, RecursionError) as e:  # RecursionError: deep nesting under a skipped key
                _explain_json(value, kind)
                raise RecordError(f"malformed record: {e}") from None  # only if the slow way found nothing
        if content_type != CONTENT_TYPES["avro"]:
            raise RecordError(f"unknown content-type {content_type.decode(errors='replace')!r}")
        obj = self._read_avro(value, kind, fingerprint)
        return _points(obj, kind, check_finite=True)  # unlike JSON, Avro can carry NaN and infinities

    def _read_avro(self, value: bytes, kind: str, fingerprint: bytes | None) -> Any:
        avro = self._avro
        if fingerprint is not None and fingerprint.decode(errors="replace") != avro.fingerprint:
            raise RecordError(f"Avro record with schema fingerprint {fingerprint.decode(errors='replace')!r}, "
                              f"expected {avro.fingerprint!r} (reading.avsc)")
        return avro.read(avro.reading if kind == "reading" else avro.batch, value)


class _Avro:
    """reading.avsc parsed, for one reading and for an array of them."""

    def __init__(self) -> None:
        import fastavro  # only where Avro is used

        self._fastavro = fastavro
        raw = _load_schema()
        self.reading = fastavro.parse_schema(raw)
        self.batch = fastavro.parse_schema({"type": "array", "items": raw})
        self.fingerprint: str = fastavro.schema.fingerprint(fastavro.schema.to_parsing_canonical_form(raw),
                                                            "CRC-64-AVRO")

    def write(self, schema: Any, obj: Any) -> bytes:
        buf = io.BytesIO()
        self._fastavro.schemaless_writer(buf, schema, obj)
        return buf.getvalue()

    def read(self, schema: Any, value: bytes) -> Any:
        buf = io.BytesIO(value)
        try:
            obj = self._fastavro.schemaless_reader(buf, schema, None)
        except Exception as e:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ... on garbage
            raise RecordError(f"malformed Avro: {type(e).__name__}: {e}"[:300]) from None
        if buf.tell() != len(value):
            raise RecordError(f"malformed Avro: {len(value) - buf.tell()} bytes after the record")
        return obj


def _read_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> tuple[bytes, str, bytes | None]:
    """(content type, record kind, schema fingerprint); RecordError for an unknown kind."""
    h = {k: v for k, v in headers or () if v is not None}
    kind = h.get("record", b"reading").decode(errors="replace")
    if kind not in RECORD_KINDS:
        raise RecordError(f"unknown record kind {kind!r} in the 'record' header")
    return h.get("content-type", CONTENT_TYPES["json"]), kind, h.get("schema-fingerprint")


def _explain_json(value: bytes, kind: str) -> None:
    """Raise the RecordError that says what is wrong with a JSON record msgspec refused."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise RecordError(f"malformed JSON: {e}") from None
    _points(obj, kind, check_finite=False)  # JSON cannot carry a non-finite number (tested)


def _points(obj: Any, kind: str, *, check_finite: bool) -> list[Point]:
    if kind == "reading":
        return [_point(obj, check_finite)]
    if not isinstance(obj, list) or not obj:
        raise RecordError("a batch record must hold a non-empty array of readings")
    return [_point(o, check_finite) for o in obj]


_FIELD_TYPES = frozenset((bool, int, str, float))
_isfinite = math.isfinite


def _point(obj: Any, check_finite: bool) -> Point:
    # Once per Avro reading: plain loops and type() identity, no generators. Keys need no check: JSON object keys
    # and Avro map keys are strings.
    if type(obj) is not dict:
        raise RecordError(f"a reading must be an object, got {type(obj).__name__}")
    measurement = obj.get("measurement")
    time_ns = obj.get("time_ns")
    tags = obj.get("tags")
    fields = obj.get("fields")
    if type(measurement) is not str or not measurement:
        raise RecordError("reading.measurement must be a non-empty string")
    if type(time_ns) is not int:
        raise RecordError(f"reading.time_ns must be an integer, got {type(time_ns).__name__}")
    if type(tags) is not dict:
        raise RecordError("reading.tags must be an object of strings")
    for v in tags.values():
        if type(v) is not str:
            raise RecordError("reading.tags must be an object of strings")
    if type(fields) is not dict or not fields:
        raise RecordError("reading.fields must be a non-empty object")
    for k, v in fields.items():
        if type(v) not in _FIELD_TYPES:
            raise RecordError(f"reading.fields.{k} must be a number, a boolean or a string, got {type(v).__name__}")
    if check_finite:
        for k, v in fields.items():
            if type(v) is float and not _isfinite(v):
                raise RecordError(f"reading.fields.{k} is not finite")
    typed: dict[str, FieldValue] = fields
    return Point(measurement, tags, typed, time_ns)
