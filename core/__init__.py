"""What both daemons share and neither owns: the Ruuvi decoders, the wire format, the settings loader and the MQTT
connection settings, the backoff. `edge` (the gateway) and `cloud` (the receiver) import this package, never each
other."""
