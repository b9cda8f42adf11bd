#!/usr/bin/env python3
"""Shared passive ports (issue 22): what a small range costs, in one run.

    python3 benches/passive_ports.py [--size-mib 1024] [--runs 3]

Rows, interleaved round by round:
- sessions per second (AUTH TLS, login, PROT P, LIST, QUIT; examples/login_load)
  through ftpgate with 4 passive ports vs 1000, 8 clients from 127.0.0.1
  (so with 4 ports the clients' PROT P sessions share ports and are told
  apart by TLS resumption);
- a plain download of SIZE through a port shared with 20 reservations of
  other addresses (127.0.0.2-21, a 1-port range) vs a dedicated port (1000
  ports, nothing else), MB/s and ftpgate CPU seconds per GiB.

Uses benches/run.py's helpers; listens on 127.0.0.1 only, stops what it starts.
"""
import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as b  # noqa: E402


def hold_reservations(port, count):
    """`count` sessions from 127.0.0.2.. that each hold a reservation (EPSV,
    no data connection) on ftpgate at `port`."""
    held = []
    for k in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(f"127.0.0.{2 + k}", 0))
        f = s.makefile("rb")

        def reply():
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            return line

        reply()
        for cmd in (f"USER {b.USER}", f"PASS {b.PASSWORD}", "EPSV"):
            s.sendall(cmd.encode() + b"\r\n")
            r = reply()
        assert r.startswith(b"229"), r
        held.append((s, f))
    return held


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    size = a.size_mib << 20
    b.setup(True)
    binary = os.environ.get("FTPGATE_BIN")
    if not binary:
        b.sh(f"cd {b.ROOT} && cargo build --release --quiet")
        binary = f"{b.ROOT}/target/release/ftpgate"
    b.sh(f"cd {b.ROOT} && cargo build --release --quiet --example login_load")
    work = tempfile.mkdtemp(prefix="ftpgate-bench-passive.")
    os.chmod(work, 0o755)
    try:
        os.makedirs(f"{work}/root")
        b.sh(f"chown {b.USER} {work}/root && chmod 777 {work}/root")
        certs = f"{work}/certs"
        b.sh(f"{binary} certs init --dir {certs} --name 127.0.0.1 >/dev/null")
        b.sh(f"chmod 644 {certs}/*.key")
        with open(f"{work}/root/big.bin", "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
        os.chmod(f"{work}/root/big.bin", 0o644)
        backend = b.vsftpd(work, "vsftpd", False, certs)
        few, _ = b.ftpgate(binary, backend, certs, client_tls=True, passive="46000-46003")
        many, _ = b.ftpgate(binary, backend, certs, client_tls=True, passive="47000-47999")
        shared, shared_p = b.ftpgate(binary, backend, certs, passive="48000-48000")
        dedicated, dedicated_p = b.ftpgate(binary, backend, certs, passive="49000-49999")
        held = hold_reservations(shared, 20)
        logins = {"4 ports": [], "1000 ports": []}
        speed = {"shared port": [], "dedicated port": []}
        cpu = {"shared port": [], "dedicated port": []}
        for _ in range(a.runs):
            logins["4 ports"].append(b.logins_per_second(few, certs))
            logins["1000 ports"].append(b.logins_per_second(many, certs))
            for name, port, proc in (("shared port", shared, shared_p), ("dedicated port", dedicated, dedicated_p)):
                if name == "shared port":
                    # Keep the 20 reservations alive (they end after data_connect).
                    for s, f in held:
                        s.sendall(b"EPSV\r\n")
                        f.readline()
                c0 = b.cpu_seconds(proc.pid)
                speed[name].append(b.curl(f"ftp://127.0.0.1:{port}", False, certs))
                cpu[name].append((b.cpu_seconds(proc.pid) - c0) / (size / 2**30))
        med = statistics.median
        print(f"passive ports, {a.runs} interleaved rounds (medians), {a.size_mib} MiB file")
        for k, v in logins.items():
            print(f"  sessions/s (TLS login + LIST) through {k}: {med(v):.0f}  {[round(x) for x in v]}")
        for k in speed:
            print(f"  download through a {k}: {med(speed[k]):.0f} MB/s, ftpgate CPU {med(cpu[k]):.3f} s/GiB  "
                  f"{[round(x) for x in speed[k]]}")
        for s, _ in held:
            s.close()
    finally:
        b.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
