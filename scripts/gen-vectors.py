#!/usr/bin/env python3
"""Generate routing vectors from the real clients memring must agree with.

Each case starts real memcached servers on loopback, stores every key
through the real client (pylibmc/libmemcached, twemproxy, python-memcached),
then asks each server which keys it holds. hash_ring and uhashring are
asked directly (they are pure functions). Output: tests/vectors/generated/.

Needs (not needed by the tests, which read the committed output):
  apt-get install -y memcached python3-pylibmc nutcracker
  pip install python-memcached hashring uhashring
Run as: python3 scripts/gen-vectors.py   (uses ports 11211 on 127.0.0.2-4)
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's pylibmc

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "vectors", "generated")
BASE_PORT = 23400


def keys():
    ks = []
    ks += [f"key:{i}" for i in range(150)]
    ks += [f"user/{i * 7919}/profile?lang=en&page={i % 13}" for i in range(60)]
    ks += [f"ключ-{i}" for i in range(25)] + [f"日本語キー{i}" for i in range(25)]
    ks += [f"emoji🔑{i}é" for i in range(20)]
    for i in range(40):  # exactly 250 bytes, ASCII and UTF-8
        stem = f"long{i}-"
        ks.append(stem + "x" * (250 - len(stem)))
        u = f"ü{i}-"
        ks.append(u + "y" * (250 - len(u.encode())))
    ks += [chr(c) * 3 for c in range(33, 127)]
    assert all(1 <= len(k.encode()) <= 250 and " " not in k for k in ks)
    return ks


KEYS = keys()
PROCS = {}


def start(host, port):
    if (host, port) in PROCS:
        return
    args = ["memcached", "-l", host, "-p", str(port), "-U", "0", "-m", "16", "-t", "1"]
    if os.geteuid() == 0:
        args += ["-u", "root"]
    p = subprocess.Popen(args)
    for _ in range(200):
        try:
            socket.create_connection((host, port), 0.2).close()
            PROCS[(host, port)] = p
            return
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"memcached did not start on {host}:{port}")


def raw(host, port, req):
    s = socket.create_connection((host, port), 5)
    s.sendall(req)
    out = b""
    while not (out.endswith(b"END\r\n") or out.endswith(b"OK\r\n")):
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def flush(servers):
    for h, p, _ in servers:
        raw(h, p, b"flush_all\r\n")


def holders(servers):
    """Map each key to the one server that holds it."""
    where = {}
    for h, p, _ in servers:
        for i in range(0, len(KEYS), 50):
            batch = KEYS[i:i + 50]
            out = raw(h, p, b"get " + b" ".join(k.encode() for k in batch) + b"\r\n")
            for line in out.split(b"\r\n"):
                if line.startswith(b"VALUE "):
                    k = line.split(b" ")[1].decode()
                    assert k not in where, f"{k} on two servers"
                    where[k] = f"{h}:{p}"
    missing = [k for k in KEYS if k not in where]
    assert not missing, f"{len(missing)} keys not stored, e.g. {missing[:3]}"
    return where


def spec(servers):
    return [f"{h}:{p}" + (f":{w}" if w != 1 else "") for h, p, w in servers]


def case(name, servers, mapping, **extra):
    c = {"case": name, "servers": spec(servers), "keys_to_server": {k: mapping[k] for k in KEYS}}
    c.update(extra)
    return c


def loop(n, port0, weights=None):
    return [("127.0.0.1", port0 + i, (weights or [1] * n)[i]) for i in range(n)]


# Servers on port 11211 exercise libmemcached's naming rule (host only).
PORT_11211 = [("127.0.0.2", 11211, 1), ("127.0.0.3", 11211, 1), ("127.0.0.1", BASE_PORT + 90, 1)]
CASES = {
    "A_3_servers": loop(3, BASE_PORT),
    "B_4_servers": loop(4, BASE_PORT),
    "W_5_weighted_1_to_5": loop(5, BASE_PORT + 10, [1, 2, 3, 4, 5]),
    "X_3_weighted_3_1_7": loop(3, BASE_PORT + 20, [3, 1, 7]),
    "P_port_11211_mixed": PORT_11211,
    "P_port_11211_weighted": [(h, p, w) for (h, p, _), w in zip(PORT_11211, [2, 1, 3])],
    "M_25_servers": loop(25, BASE_PORT + 30),
}


def pylibmc_cases():
    import pylibmc
    out = []
    for name, servers in CASES.items():
        for h, p, _ in servers:
            start(h, p)
        flush(servers)
        mc = pylibmc.Client([f"{h}:{p}:{w}" for h, p, w in servers],
                            behaviors={"ketama_weighted": True})
        for k in KEYS:
            assert mc.set(k, b"1"), k
        out.append(case(name, servers, holders(servers)))
    return {"peer": f"libmemcached {pylibmc.libmemcached_version} via pylibmc {pylibmc.__version__}, "
                    'behaviors={"ketama_weighted": True}',
            "distribution": "ketama", "cases": out}


def twemproxy_cases():
    out = []
    listen = BASE_PORT + 95
    for name, servers in CASES.items():
        for h, p, _ in servers:
            start(h, p)
        flush(servers)
        conf = tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False)
        conf.write("pool:\n  listen: 127.0.0.1:%d\n  hash: md5\n  distribution: ketama\n"
                   "  timeout: 2000\n  auto_eject_hosts: false\n  servers:\n" % listen)
        for h, p, w in servers:
            conf.write(f"   - {h}:{p}:{w}\n")
        conf.close()
        proxy = subprocess.Popen(["nutcracker", "-c", conf.name, "-s", str(listen + 1), "-o", "/dev/null"])
        try:
            for _ in range(200):
                try:
                    s = socket.create_connection(("127.0.0.1", listen), 0.2)
                    break
                except OSError:
                    time.sleep(0.02)
            for k in KEYS:
                b = k.encode()
                s.sendall(b"set %s 0 0 1\r\n1\r\n" % b)
                buf = b""
                while not buf.endswith(b"\r\n"):
                    buf += s.recv(100)
                assert buf == b"STORED\r\n", (k, buf)
            s.close()
            out.append(case(name, servers, holders(servers)))
        finally:
            proxy.kill()
            proxy.wait()
            os.unlink(conf.name)
    return {"peer": "twemproxy (nutcracker 0.5.0), distribution: ketama, hash: md5",
            "distribution": "ketama", "cases": out}


def python_memcached_cases():
    import memcache
    out = []
    for name in ["A_3_servers", "B_4_servers", "W_5_weighted_1_to_5", "X_3_weighted_3_1_7"]:
        servers = CASES[name]
        for h, p, _ in servers:
            start(h, p)
        flush(servers)
        mc = memcache.Client([(f"{h}:{p}", w) for h, p, w in servers])
        for k in KEYS:
            assert mc.set(k, "1"), k
        out.append(case(name, servers, holders(servers)))
    # A dead server (nothing listens on its port): python-memcached rehashes
    # its keys onto the live ones.
    servers = loop(4, BASE_PORT + 60)
    dead = servers[2]
    live = [s for s in servers if s != dead]
    for h, p, _ in live:
        start(h, p)
    flush(live)
    mc = memcache.Client([(f"{h}:{p}", w) for h, p, w in servers], socket_timeout=1)
    for k in KEYS:
        assert mc.set(k, "1"), k
    out.append(case("D_4_servers_third_dead", servers, holders(live),
                    dead=[f"{dead[0]}:{dead[1]}"]))
    return {"peer": f"python-memcached {memcache.__version__} Client", "distribution": "modulo",
            "cases": out}


def hash_ring_cases():
    from hashring import HashRing
    out = []
    for name in ["A_3_servers", "B_4_servers", "W_5_weighted_1_to_5", "X_3_weighted_3_1_7",
                 "M_25_servers"]:
        servers = CASES[name]
        nodes = [f"{h}:{p}" for h, p, _ in servers]
        ring = HashRing(nodes, {f"{h}:{p}": w for h, p, w in servers})
        mapping = {k: ring.get_node(k) for k in KEYS}
        order = {k: list(ring.iterate_nodes(k)) for k in KEYS[::3]}
        out.append(case(name, servers, mapping, failover_order=order))
    return {"peer": "hashring 1.5.1 (Python hash_ring), asked directly", "distribution": "hash-ring",
            "cases": out}


def uhashring_cases():
    import uhashring
    out = []
    for name in ["A_3_servers", "B_4_servers", "P_port_11211_mixed", "M_25_servers"]:
        servers = CASES[name]
        ring = uhashring.HashRing(nodes=[f"{h}:{p}" for h, p, _ in servers], hash_fn="ketama")
        out.append(case(name, servers, {k: ring.get_node(k) for k in KEYS}))
    return {"peer": "uhashring 2.x, hash_fn='ketama', asked directly", "distribution": "ketama-port",
            "cases": out}


def main():
    os.makedirs(OUT, exist_ok=True)
    gens = {"pylibmc_ketama": pylibmc_cases, "twemproxy_ketama": twemproxy_cases,
            "python_memcached": python_memcached_cases, "hash_ring": hash_ring_cases,
            "uhashring_ketama": uhashring_cases}
    try:
        for fname, gen in gens.items():
            doc = gen()
            doc["how"] = ("generated by scripts/gen-vectors.py: keys stored through the real client "
                          "on real memcached and looked up on each server, or the library asked directly")
            path = os.path.join(OUT, fname + ".json")
            with open(path, "w") as f:
                json.dump(doc, f, ensure_ascii=False, indent=1, sort_keys=True)
            print(f"wrote {path}: {len(doc['cases'])} cases x {len(KEYS)} keys")
    finally:
        for p in PROCS.values():
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
