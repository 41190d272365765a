"""edge-gw: the RuuviTag gateway (BLE adverts -> SQLite store-and-forward -> MQTT)."""

__version__ = "0.1.0"
