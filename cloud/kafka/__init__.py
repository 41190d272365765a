"""The Kafka path (docs/kafka.md): MQTT -> `cloud-ingest bridge` -> Kafka -> `cloud-ingest run --kafka` -> InfluxDB.

records.py is the contract between the two sides: how a Point becomes a Kafka record (key, value, headers) and back.
"""
