"""The Python half of examples/python_fleet.rs: python-memcached 1.62 on the
same servers, in the same order, as the Rust side.

    python_fleet.py write SERVER...   stores three values, as a Python app would
    python_fleet.py read SERVER...    reads what the Rust side stored
"""

import sys

import memcache  # python-memcached; scripts/python-clients installs it

COMPRESS = 1024  # min_compress_len, the same on both sides


def main(argv):
    if len(argv) < 3 or argv[1] not in ("write", "read"):
        raise SystemExit(__doc__)
    mc = memcache.Client(argv[2:])
    if argv[1] == "write":
        report = "quarterly report line\n" * 200
        mc.set("fleet:greeting", "héllo from Python ✓")
        mc.set("fleet:visits", 41)
        mc.set("fleet:report", report, min_compress_len=COMPRESS)
        print("python stored fleet:greeting (str), fleet:visits (int), "
              "fleet:report (str, %d chars, compressed)" % len(report))
    else:
        for key in ("fleet:from_rust", "fleet:count", "fleet:visits", "fleet:big_from_rust"):
            value = mc.get(key)
            shown = value if not isinstance(value, str) or len(value) < 60 else "%d chars" % len(value)
            print("python read %-20s %-5s %r" % (key, type(value).__name__, shown))


if __name__ == "__main__":
    main(sys.argv)
