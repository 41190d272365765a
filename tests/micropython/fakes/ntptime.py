# Fake of the board's `ntptime` module (it needs `socket`, which this port lacks): settime()
# fails `fail` times (set by the test), then succeeds; the port's clock is already right.
host = "pool.ntp.org"
fail = 0
calls = 0


def settime():
    global fail, calls  # noqa: PLW0603 - module state, as the real module keeps it
    calls += 1
    if fail > 0:
        fail -= 1
        raise OSError(110)  # ETIMEDOUT, as the real one raises when the server does not answer
