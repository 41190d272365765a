# Ruuvi advertisement decoder for MicroPython: the same formats, field names, units, nulls,
# rounding and key order as core.ruuvi.decode (docs/wire-format.md, "Decoded fields").
#
# ESP32 MicroPython floats are single precision, so every value is first computed as a scaled
# integer (the exact decimal).  decode() divides it once (exact in the double-precision ports,
# nearest float32 on an ESP32); fields_json() prints the exact decimal, so the bytes on the wire
# are the same as the Python gateway's on any board.
import struct
from binascii import hexlify, unhexlify

from micropython import const

from collections import OrderedDict

_NA16 = const(0xFFFF)
_NA_I16 = const(-32768)
_NA9 = const(0x1FF)
_NA24 = const(0xFFFFFF)
_NO_VOLTS = const(2047)
_NO_TX = const(31)
_MAC6_NA = b"\xff\xff\xff\xff\xff\xff"
_MAC3_NA = b"\xff\xff\xff"
# Exact payload lengths, as core.ruuvi checks them.
LENGTHS = {3: 14, 5: 24, 0xC5: 18, 6: 20, 0xE1: 40, 8: 24}
_POW10 = (1, 10, 100, 1000, 10000)
_INT = const(-1)  # "decimals" of a value that is not a scaled decimal (int, bool, str, None)

# DF6 luminosity is a log code: lux = exp(code * ln(65536) / 254) - 1, rounded to 2 decimals.
# The float32 exp() of an ESP32 cannot reproduce the double result, so the 255 values are a
# table of hundredths (3 bytes each), computed once in CPython; tests check it against the formula.
_LUX6 = unhexlify(
    "00000000000400000900000e00001300001800001e00002400002a00003000003700003e00004500004c00005400005d"
    "00006500006e00007700008100008b0000960000a10000ad0000b90000c60000d30000e10000f00000ff00010f00011f"
    "00013000014200015500016900017e0001930001aa0001c10001d90001f300020e00022a0002470002650002850002a6"
    "0002c90002ee00031300033b0003640003900003bd0003ec00041d0004510004860004bf0004f90005370005770005b9"
    "0005ff0006480006950006e400073700078e0007e90008480008ab00091300097f0009f0000a66000ae1000b62000be8"
    "000c75000d07000da1000e41000ee8000f9700104d00110c0011d30012a400137d00146000154d001645001748001857"
    "001971001a98001bcd001d0f001e5f001fbe00212e0022ad00243e0025e000279600295e002b3b002d2e002f36003156"
    "00338e0035e000384c003ad4003d7800403b00431d004621004946004c90004fff005396005755005b3f005f5600639c"
    "006813006cbc00719b0076b1007c0200818f00875c008d6b0093bf009a5c00a14400a87a00b00400b7e300c01d00c8b4"
    "00d1ae00db0e00e4d900ef1400f9c40104ee011098011cc70129810136cd0144b001533201625a01722f0182b9019400"
    "01a60c01b8e701cc9901e12b01f6a9020d1d022491023d110256a9027165028d5302aa8002c8fa02e8d1030a13032cd1"
    "03511c037706039ea103c80003f33804205e044f880480cd04b44404ea08052232055cdd059a2705da2d061d0f0662ec"
    "06abe806f8260747cb079afe07f1e7084cb208ab8a090e9d09761c09e23a0a532b0ac9260b44660bc5250c4ba40cd823"
    "0d6ae80e04390ea4620f4bb10ffa7710b10a116fc312370013072013e08b14c3a915b0eb16a8c317abab18ba2119d4a9"
    "1afbcd1c301d1d72301ec2a220221921913f2310c824a16f2643f727f92d29c1e72b9f032d91692f9a0f31b9f033f218"
    "36439b38af9c3b37473ddbdb409ea14380f246843649a9e64cf38c5062c253f93457b8a55ba2e75fb9e463ff9c"
)


class DecodeError(ValueError):
    pass


def _mac(raw, na):
    return None if raw == na else hexlify(raw, ":").decode()


def _u9(high8, flags, bit):
    code = (high8 << 1) | ((flags >> bit) & 1)
    return None if code == _NA9 else code


def _sound(high8, flags, bit):
    # dB = 18 + code / 5, in tenths: 180 + 2 * code
    code = _u9(high8, flags, bit)
    return None if code is None else 180 + 2 * code


def _na(v, na):
    return None if v == na else v


def _env(put, p):
    # temperature, humidity, pressure: bytes 1-6 of DF5, C5, 6 and E1
    t, h, pr = struct.unpack_from(">hHH", p, 1)
    put("temperature", None if t == _NA_I16 else t * 5, 3)
    put("humidity", None if h == _NA16 else h * 25, 4)
    put("pressure", None if pr == _NA16 else pr + 50000, _INT)


def _power(put, power, movement, seq):
    volts = power >> 5
    tx = power & 0x1F
    put("battery_voltage", None if volts == _NO_VOLTS else volts + 1600, _INT)
    put("tx_power", None if tx == _NO_TX else tx * 2 - 40, _INT)
    put("movement_counter", None if movement == 0xFF else movement, _INT)
    put("measurement_sequence_number", _na(seq, _NA16), _INT)


def _flags(put, flags):
    put("calibration_in_progress", bool(flags & 1), _INT)
    put("button_pressed", bool(flags & 2), _INT)
    put("rtc_running_on_boot", bool(flags & 4), _INT)


def check(payload):
    # Raise DecodeError unless `payload` is a payload of a known format with its exact length;
    # returns the format byte.  Cheap: the scanner calls it for every advert.
    if not payload:
        raise DecodeError("empty payload")
    fmt = payload[0]
    need = LENGTHS.get(fmt)
    if need is None:
        raise DecodeError("unknown data format 0x%02x" % fmt)
    if len(payload) != need:
        raise DecodeError("data format %s needs %d bytes, got %d" % (_name(fmt), need, len(payload)))
    return fmt


def _name(fmt):
    return "%X" % fmt if fmt > 9 else str(fmt)


def sequence(payload):
    # The measurement sequence number, or None (DF3, DF8, "not available"); for dedup.
    fmt = payload[0]
    if fmt == 5:
        s = struct.unpack_from(">H", payload, 16)[0]
    elif fmt == 0xC5:
        s = struct.unpack_from(">H", payload, 10)[0]
    elif fmt == 6:
        return payload[15]
    elif fmt == 0xE1:
        s = (payload[25] << 16) | (payload[26] << 8) | payload[27]
        return None if s == _NA24 else s
    else:
        return None
    return None if s == _NA16 else s


def walk(payload, put):
    # Call put(key, value, decimals) for every field, in the canonical order.  A value with
    # decimals >= 0 is a scaled integer (value / 10**decimals) or None.
    fmt = check(payload)
    p = payload
    put("data_format", fmt, _INT)
    if fmt == 5:
        _env(put, p)
        ax, ay, az, power, movement, seq = struct.unpack_from(">hhhHBH", p, 7)
        put("acceleration_x", _na(ax, _NA_I16), _INT)
        put("acceleration_y", _na(ay, _NA_I16), _INT)
        put("acceleration_z", _na(az, _NA_I16), _INT)
        _power(put, power, movement, seq)
        put("mac", _mac(p[18:24], _MAC6_NA), _INT)
    elif fmt == 0xC5:
        _env(put, p)
        power, movement, seq = struct.unpack_from(">HBH", p, 7)
        _power(put, power, movement, seq)
        put("mac", _mac(p[12:18], _MAC6_NA), _INT)
    elif fmt == 3:
        hum, t_int, t_frac, pr, ax, ay, az, batt = struct.unpack_from(">BBBHhhhH", p, 1)
        # sign-magnitude; negating the integer keeps "-0" out, as core.ruuvi does
        centi = (t_int & 0x7F) * 100 + t_frac
        put("temperature", -centi if t_int & 0x80 else centi, 2)
        put("humidity", hum * 5, 1)
        put("pressure", pr + 50000, _INT)
        put("acceleration_x", ax, _INT)
        put("acceleration_y", ay, _INT)
        put("acceleration_z", az, _INT)
        put("battery_voltage", batt, _INT)
    elif fmt == 6:
        _env(put, p)
        pm25, co2, voc, nox, lux, snd, seq, flags = struct.unpack_from(">HHBBBBBB", p, 7)
        put("measurement_sequence_number", seq, _INT)
        put("mac", _mac(p[17:20], _MAC3_NA), _INT)
        put("pm2_5", _na(pm25, _NA16), 1)
        put("co2", _na(co2, _NA16), _INT)
        put("voc_index", _u9(voc, flags, 6), _INT)
        put("nox_index", _u9(nox, flags, 7), _INT)
        if lux == 0xFF:
            put("luminosity", None, 2)
        else:
            i = lux * 3
            put("luminosity", (_LUX6[i] << 16) | (_LUX6[i + 1] << 8) | _LUX6[i + 2], 2)
        put("sound_average_dba", _sound(snd, flags, 4), 1)
        _flags(put, flags)
    elif fmt == 0xE1:
        _env(put, p)
        pm1, pm25, pm4, pm10, co2, voc, nox = struct.unpack_from(">HHHHHBB", p, 7)
        lux = (p[19] << 16) | (p[20] << 8) | p[21]
        flags = p[28]
        put("measurement_sequence_number", sequence(p), _INT)
        put("mac", _mac(p[34:40], _MAC6_NA), _INT)
        put("pm1_0", _na(pm1, _NA16), 1)
        put("pm2_5", _na(pm25, _NA16), 1)
        put("pm4_0", _na(pm4, _NA16), 1)
        put("pm10_0", _na(pm10, _NA16), 1)
        put("co2", _na(co2, _NA16), _INT)
        put("voc_index", _u9(voc, flags, 6), _INT)
        put("nox_index", _u9(nox, flags, 7), _INT)
        put("luminosity", _na(lux, _NA24), 2)
        put("sound_instant_dba", _sound(p[22], flags, 3), 1)
        put("sound_average_dba", _sound(p[23], flags, 4), 1)
        put("sound_peak_spl_db", _sound(p[24], flags, 5), 1)
        _flags(put, flags)
    else:  # 8: encrypted; only the clear MAC can be read without the tag's key
        put("mac", _mac(p[18:24], _MAC6_NA), _INT)
        put("encrypted", True, _INT)


def decode(payload):
    # bytes -> OrderedDict of the decoded fields (MicroPython's plain dict does not keep order)
    d = OrderedDict()

    def put(key, value, dec):
        if dec >= 0 and value is not None:
            value = value / _POW10[dec]
        d[key] = value

    walk(bytes(payload), put)
    return d


def decimal(n, dec):
    # The canonical JSON text of the scaled integer n / 10**dec: trailing zeros removed,
    # at least one digit after the point ("24.3", "24.0", "-0.005").
    sign = "-" if n < 0 else ""
    q, r = divmod(abs(n), _POW10[dec])
    frac = ("0000" + str(r))[-dec:].rstrip("0") if dec else ""
    return "%s%d.%s" % (sign, q, frac or "0")


def json_value(value, dec):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if dec >= 0:
        return decimal(value, dec)
    if isinstance(value, str):
        return '"' + value + '"'  # MACs only: hex and colons, nothing to escape
    return str(value)


def write_fields(payload, out):
    # Append the canonical JSON object of the decoded fields to the bytearray `out`.
    sep = ["{"]

    def put(key, value, dec):
        out.extend(sep[0])
        out.extend('"')
        out.extend(key)
        out.extend('":')
        out.extend(json_value(value, dec))
        sep[0] = ","

    walk(payload, put)
    out.extend("}")


def fields_json(payload):
    out = bytearray()
    write_fields(payload, out)
    return out.decode()
