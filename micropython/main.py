# Runs at boot (after boot.py).  Kept as source: the board runs main.py, not main.mpy.
# Ctrl-C on the REPL stops the gateway; a bad config.json is reported and nothing starts.
import gateway

gateway.boot()
