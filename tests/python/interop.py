"""The Python side of memring's codec interoperability test.

    interop.py write CLIENT HOST:PORT PREFIX MIN_COMPRESS_LEN
        Stores the table of values below with CLIENT (python-memcached,
        pylibmc or pymemcache) under PREFIX + name, compressing values
        longer than MIN_COMPRESS_LEN as that client does, and prints what it
        stored as JSON: [{"key", "type", "value"}], bytes as hex.

    interop.py read CLIENT HOST:PORT MIN_COMPRESS_LEN KEY...
        Reads each key with CLIENT and prints what came back as JSON:
        [{"key", "type", "value"}] (type "missing" for a miss, "error" with
        the message when the client raised).
"""

import json
import sys


def table(client):
    big_text = "μέμκασεντ, a cache shared by Python and Rust. " * 80
    rows = [
        ("bytes", b"\x00\x01 binary \xff\r\n"),
        ("bytes_big", b"0123456789abcdef" * 200),
        ("text", "héllo wörld ✓"),
        ("text_empty", ""),
        ("text_big", big_text),
        ("int", 7),
        ("int_zero", 0),
        ("int_negative", -42),
        ("int_large", 2**62),
        ("pickle", {"a": [1, 2]}),
    ]
    if client == "pylibmc":
        # pylibmc stores a bool as an integer; the others pickle it.
        rows += [("bool_true", True), ("bool_false", False)]
    else:
        rows += [("bool_pickled", True)]
    return rows


def connect(client, server, min_compress_len):
    if client == "python-memcached":
        import memcache

        return memcache.Client([server])
    if client == "pylibmc":
        import pylibmc

        return pylibmc.Client([server])
    if client == "pymemcache":
        from pymemcache.client.base import Client
        from pymemcache.serde import CompressedSerde, pickle_serde

        host, port = server.rsplit(":", 1)
        serde = CompressedSerde(serde=pickle_serde, min_compress_len=min_compress_len)
        return Client((host, int(port)), serde=serde)
    raise SystemExit("unknown client " + client)


def describe(value):
    if isinstance(value, bytes):
        return "bytes", value.hex()
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, int):
        return "int", str(value)
    if isinstance(value, str):
        return "str", value
    return "pickle", repr(value)


def write(client, server, prefix, min_compress_len):
    mc = connect(client, server, min_compress_len)
    out = []
    for name, value in table(client):
        key = prefix + name
        if client == "pymemcache":
            ok = mc.set(key, value, noreply=False)
        else:
            ok = mc.set(key, value, min_compress_len=min_compress_len)
        if not ok:
            raise SystemExit("%s could not store %s" % (client, key))
        kind, shown = describe(value)
        if name.startswith("pickle") or name.endswith("pickled"):
            kind = "pickle"
        out.append({"key": key, "type": kind, "value": shown})
    print(json.dumps(out))


def read(client, server, min_compress_len, keys):
    mc = connect(client, server, min_compress_len)
    out = []
    for key in keys:
        try:
            value = mc.get(key)
        except Exception as e:  # noqa: BLE001 - reported to the Rust side
            out.append({"key": key, "type": "error", "value": str(e)})
            continue
        if value is None:
            out.append({"key": key, "type": "missing", "value": None})
            continue
        kind, shown = describe(value)
        out.append({"key": key, "type": kind, "value": shown})
    print(json.dumps(out))


def main(argv):
    if len(argv) >= 6 and argv[1] == "write":
        write(argv[2], argv[3], argv[4], int(argv[5]))
    elif len(argv) >= 5 and argv[1] == "read":
        read(argv[2], argv[3], int(argv[4]), argv[5:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
