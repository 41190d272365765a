"""cloud-ingest: MQTT -> InfluxDB receiver for edge-gw and Ruuvi Gateway traffic."""

__version__ = "0.1.0"
