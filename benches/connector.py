#!/usr/bin/env python3
"""Outbound connectors (issue 21): what the extra hop costs, in one run.

    python3 benches/connector.py [--size-mib 1024] [--runs 3] [--idle 1000]

Rows, interleaved round by round (medians):
- a SIZE download and upload through the edge connecting to vsftpd directly
  vs through edge + connector, with a plain and with an FTPS backend (the
  edge does the backend TLS in both), MB/s and CPU seconds per GiB (edge,
  and edge + connector); the same through a connector with glibc's default
  allocator settings (GLIBC_TUNABLES="" on both: what ftpgate's own tuning,
  src/cli/malloc.rs, is worth), unless --no-glibc-defaults; resident memory
  of every process after the rounds;
- NOOP round trips on one session while another session moves SIZE through
  the same connector link (median and p99, ms);
- N idle logged-in sessions through one connector (a scripted backend):
  resident memory of the edge and of the connector.

Uses benches/run.py's helpers; listens on 127.0.0.1 only, stops what it starts.
"""
import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as b  # noqa: E402

# `run` and `connector` tune glibc's allocator themselves (src/cli/malloc.rs)
# unless GLIBC_TUNABLES is set; an empty one keeps glibc's defaults.
GLIBC_DEFAULTS = {"GLIBC_TUNABLES": ""}


def edge(binary, backend, certs, connector_port=None, backend_tls=False, env=None):
    """An edge in front of `backend` (a port), or of `connector:dc1` with
    its connector listener on `connector_port`; `env` adds to its environment."""
    port = b.free_port()
    base = 40000 + (port % 10000)
    cmd = [binary, "run", "--listen", f"127.0.0.1:{port}", "--passive-ports", f"{base}-{base + 7}"]
    if connector_port:
        cmd += ["--backend", "connector:dc1", "--connector-listen", f"127.0.0.1:{connector_port}",
                "--connector-ca", f"{certs}/ca.pem", "--cert", f"{certs}/server.pem", "--key", f"{certs}/server.key"]
    else:
        cmd += ["--backend", f"127.0.0.1:{backend}"]
    if backend_tls:
        cmd += ["--backend-tls", "explicit", "--backend-ca", f"{certs}/ca.pem", "--backend-server-name", "127.0.0.1"]
    p = b.start(cmd, env={**os.environ, "FTPGATE_LOG": "warn", **(env or {})})
    b.wait_port(port)
    return port, p


def connector(binary, connector_port, backend, certs, links=2, env=None):
    return b.start([binary, "connector", "--edge", f"127.0.0.1:{connector_port}", "--name", "dc1",
                    "--backend", f"127.0.0.1:{backend}", "--cert", f"{certs}/connector-dc1.pem",
                    "--key", f"{certs}/connector-dc1.key", "--ca", f"{certs}/ca.pem", "--links", str(links)],
                   env={**os.environ, "FTPGATE_LOG": "warn", **(env or {})})


def wait_ready(port, timeout=15):
    """Logs in until the edge reaches its backend (the connector dialled in)."""
    end = time.time() + timeout
    while time.time() < end:
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "5", "--user", f"{b.USER}:{b.PASSWORD}",
                              f"ftp://127.0.0.1:{port}/"], capture_output=True)
        if out.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"edge on {port} never reached its backend")


def noop_latency(port, busy_port, size_note, certs):
    """NOOP round trips (ms) on one session while a download runs on another."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")

    def reply():
        line = f.readline()
        while line[3:4] == b"-":
            line = f.readline()
        return line

    reply()
    for cmd in (f"USER {b.USER}", f"PASS {b.PASSWORD}"):
        s.sendall(cmd.encode() + b"\r\n")
        reply()
    done = threading.Event()
    t = threading.Thread(target=lambda: (b.curl(f"ftp://127.0.0.1:{busy_port}", False, certs), done.set()))
    t.start()
    rtts = []
    while not done.is_set():
        t0 = time.perf_counter()
        s.sendall(b"NOOP\r\n")
        reply()
        rtts.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.01)
    t.join()
    s.close()
    rtts.sort()
    if not rtts:
        return float("nan"), float("nan"), 0
    return statistics.median(rtts), rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))], len(rtts)


def idle_rss(binary, certs, n, env=None):
    import multiprocessing
    bport = b.free_port()
    backend = multiprocessing.Process(target=b.run_fake_backend, args=(bport,), daemon=True)
    backend.start()
    b.wait_port(bport)
    cport = b.free_port()
    conf = os.path.join(os.path.dirname(certs), "idle-connector.toml")
    with open(conf, "w") as f:
        f.write("[limits]\nmax_sessions = 20000\nmax_sessions_per_address = 0\n")
    gport = b.free_port()
    gp = b.start([binary, "run", "--config", conf, "--listen", f"127.0.0.1:{gport}", "--backend", "connector:dc1",
                  "--connector-listen", f"127.0.0.1:{cport}", "--connector-ca", f"{certs}/ca.pem",
                  "--cert", f"{certs}/server.pem", "--key", f"{certs}/server.key"],
                 env={**os.environ, "FTPGATE_LOG": "warn", **(env or {})})
    b.wait_port(gport)
    cp = connector(binary, cport, bport, certs, env=env)
    time.sleep(1.5)
    before = (b.rss_mib(gp.pid), b.rss_mib(cp.pid))

    async def run():
        keep = []

        async def one():
            r, w = await asyncio.open_connection("127.0.0.1", gport)
            await r.readline()
            w.write(f"USER {b.USER}\r\n".encode())
            await r.readline()
            w.write(f"PASS {b.PASSWORD}\r\n".encode())
            line = await r.readline()
            if not line.startswith(b"230"):
                raise RuntimeError(line)
            keep.append(w)
        for i in range(0, n, 250):
            await asyncio.gather(*(one() for _ in range(min(250, n - i))))
        await asyncio.sleep(1)
        after = (b.rss_mib(gp.pid), b.rss_mib(cp.pid))
        for w in keep:
            w.close()
        return after

    after = asyncio.run(run())
    backend.terminate()
    gp.terminate()
    cp.terminate()
    gp.wait()
    cp.wait()
    return before, after


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--no-glibc-defaults", action="store_true",
                    help="skip the 'via connector, glibc defaults' rows (both processes with GLIBC_TUNABLES=\"\", "
                         "i.e. without ftpgate's allocator tuning)")
    a = ap.parse_args()
    size = a.size_mib << 20
    b.setup(True)
    binary = os.environ.get("FTPGATE_BIN")
    if not binary:
        b.sh(f"cd {b.ROOT} && cargo build --release --quiet")
        binary = f"{b.ROOT}/target/release/ftpgate"
    work = tempfile.mkdtemp(prefix="ftpgate-bench-connector.")
    os.chmod(work, 0o755)
    try:
        os.makedirs(f"{work}/root")
        b.sh(f"chown {b.USER} {work}/root && chmod 777 {work}/root")
        certs = f"{work}/certs"
        b.sh(f"{binary} certs init --dir {certs} --name 127.0.0.1 --connector dc1 >/dev/null")
        b.sh(f"chmod 644 {certs}/*.key")
        with open(f"{work}/root/big.bin", "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
        os.chmod(f"{work}/root/big.bin", 0o644)
        up = f"{work}/up-src.bin"
        shutil.copy(f"{work}/root/big.bin", up)
        plain = b.vsftpd(work, "vsftpd", False, certs)
        tls = b.vsftpd(work, "vsftpd-tls", True, certs)
        paths = {}
        for name, backend, backend_tls in (("plain", plain, False), ("FTPS", tls, True)):
            direct, dp = edge(binary, backend, certs, backend_tls=backend_tls)
            cport = b.free_port()
            via, vp = edge(binary, backend, certs, connector_port=cport, backend_tls=backend_tls)
            cp = connector(binary, cport, backend, certs)
            wait_ready(via)
            paths[f"{name} backend, direct"] = (direct, [dp])
            paths[f"{name} backend, via connector"] = (via, [vp, cp])
            if not a.no_glibc_defaults:
                cport = b.free_port()
                via, vp = edge(binary, backend, certs, connector_port=cport, backend_tls=backend_tls,
                               env=GLIBC_DEFAULTS)
                cp = connector(binary, cport, backend, certs, env=GLIBC_DEFAULTS)
                wait_ready(via)
                paths[f"{name} backend, via connector, glibc defaults"] = (via, [vp, cp])
        rows = {k: {"down": [], "up": [], "cpu_edge_down": [], "cpu_all_down": [], "cpu_edge_up": [],
                    "cpu_all_up": []} for k in paths}
        for _ in range(a.runs):
            for k, (port, procs) in paths.items():
                for way in ("down", "up"):
                    c0 = [b.cpu_seconds(p.pid) for p in procs]
                    speed = b.curl(f"ftp://127.0.0.1:{port}", False, certs, upload=up if way == "up" else None)
                    c1 = [b.cpu_seconds(p.pid) for p in procs]
                    gib = size / 2**30
                    rows[k][way].append(speed)
                    rows[k][f"cpu_edge_{way}"].append((c1[0] - c0[0]) / gib)
                    rows[k][f"cpu_all_{way}"].append((sum(c1) - sum(c0)) / gib)
        via_plain = paths["plain backend, via connector"][0]
        noop = noop_latency(via_plain, via_plain, a.size_mib, certs)
        noop_direct = noop_latency(paths["plain backend, direct"][0], paths["plain backend, direct"][0], a.size_mib, certs)
        med = statistics.median
        print(f"connector, {a.runs} interleaved rounds (medians), {a.size_mib} MiB file, curl, plain front")
        print("| path | down MB/s | up MB/s | CPU s/GiB edge (down/up) | CPU s/GiB edge+connector (down/up) |")
        print("|---|---|---|---|---|")
        for k, r in rows.items():
            print(f"| {k} | {med(r['down']):.0f} | {med(r['up']):.0f} | {med(r['cpu_edge_down']):.2f} / "
                  f"{med(r['cpu_edge_up']):.2f} | {med(r['cpu_all_down']):.2f} / {med(r['cpu_all_up']):.2f} |")
        for name in ("plain", "FTPS"):
            d, v = rows[f"{name} backend, direct"], rows[f"{name} backend, via connector"]
            print(f"  {name}: via connector / direct = {med(v['down']) / med(d['down']):.2f}x down, "
                  f"{med(v['up']) / med(d['up']):.2f}x up")
            t = rows.get(f"{name} backend, via connector, glibc defaults")
            if t:
                print(f"  {name}: via connector with glibc's default allocator settings / direct = "
                      f"{med(t['down']) / med(d['down']):.2f}x down, {med(t['up']) / med(d['up']):.2f}x up")
        print("  resident memory after the rounds (MiB, edge / connector): " + "; ".join(
            f"{k}: " + " / ".join(f"{b.rss_mib(p.pid):.0f}" for p in procs) for k, (_, procs) in paths.items()))
        print(f"  NOOP during a {a.size_mib} MiB download on the same link: median {noop[0]:.2f} ms, "
              f"p99 {noop[1]:.2f} ms ({noop[2]} NOOPs); direct edge: median {noop_direct[0]:.2f} ms, "
              f"p99 {noop_direct[1]:.2f} ms")
        b.stop_all()
        b.procs.clear()
        before, after = idle_rss(binary, certs, a.idle)
        print(f"  {a.idle} idle sessions through one connector: edge RSS {before[0]:.0f} -> {after[0]:.0f} MiB, "
              f"connector RSS {before[1]:.0f} -> {after[1]:.0f} MiB")
        if not a.no_glibc_defaults:
            before, after = idle_rss(binary, certs, a.idle, env=GLIBC_DEFAULTS)
            print(f"  the same with glibc's defaults: edge RSS {before[0]:.0f} -> {after[0]:.0f} MiB, "
                  f"connector RSS {before[1]:.0f} -> {after[1]:.0f} MiB")
    finally:
        b.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
