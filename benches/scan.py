#!/usr/bin/env python3
"""Uploads scanned by clamd (issue 23): what the scan costs, in one run.

    python3 benches/scan.py [--size-mib 256] [--runs 3]

Rows, interleaved round by round, the same random file each time:
- clamd's own INSTREAM speed (clamdscan --stream): the bound;
- a plain upload (curl -T) through ftpgate with [scan] (copy path, teed to clamd);
- the same upload through ftpgate without [scan] (splice);
MB/s, and ftpgate CPU seconds per GiB.

clamd runs with a one-signature database the bench writes (nothing is
downloaded). Uses benches/run.py's helpers; loopback only; stops what it starts.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as b  # noqa: E402


def clamd(work, max_mib):
    d = f"{work}/clamd"
    os.makedirs(f"{d}/db")
    with open(f"{d}/db/test.ndb", "w") as f:
        f.write("Ftpgate.Test.Sig:0:*:" + b"FTPGATE-TEST-MALWARE-7f3a9c".hex() + "\n")
    conf = f"{d}/clamd.conf"
    with open(conf, "w") as f:
        f.write(f"LocalSocket {d}/clamd.sock\nDatabaseDirectory {d}/db\nForeground yes\nLogFile {d}/clamd.log\n"
                f"TemporaryDirectory {d}\nStreamMaxLength {max_mib}M\nMaxScanSize {max_mib}M\nMaxFileSize {max_mib}M\n")
    b.start(["clamd", "-c", conf])
    end = time.time() + 60
    while not os.path.exists(f"{d}/clamd.sock"):
        if time.time() > end:
            raise RuntimeError("clamd did not start")
        time.sleep(0.1)
    return conf, f"{d}/clamd.sock"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    size = a.size_mib << 20
    b.setup(True)
    if not shutil.which("clamd"):
        b.sh("apt-get install -y -qq clamav-daemon >/dev/null")
    binary = os.environ.get("FTPGATE_BIN")
    if not binary:
        b.sh(f"cd {b.ROOT} && cargo build --release --quiet")
        binary = f"{b.ROOT}/target/release/ftpgate"
    work = tempfile.mkdtemp(prefix="ftpgate-bench-scan.")
    os.chmod(work, 0o755)
    try:
        os.makedirs(f"{work}/root")
        b.sh(f"chown {b.USER} {work}/root && chmod 777 {work}/root")
        certs = f"{work}/certs"
        b.sh(f"{binary} certs init --dir {certs} --name 127.0.0.1 >/dev/null")
        src = f"{work}/src.bin"
        with open(src, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
        conf, sock = clamd(work, a.size_mib * 2)
        backend = b.vsftpd(work, "vsftpd", False, certs)
        cfg = f"{work}/scan.toml"
        with open(cfg, "w") as f:
            f.write(f'[scan]\nclamd = "unix:{sock}"\nmax_size = {size * 2}\ntimeout = "120s"\n')
        scanned, scanned_p = b.ftpgate(binary, backend, certs, extra=["--config", cfg])
        plain, plain_p = b.ftpgate(binary, backend, certs)
        rows = {"clamd INSTREAM (clamdscan --stream)": [], "ftpgate upload with [scan]": [],
                "ftpgate upload without [scan]": []}
        cpu = {"ftpgate upload with [scan]": [], "ftpgate upload without [scan]": []}
        for _ in range(a.runs):
            t = time.time()
            out = subprocess.run(["clamdscan", "-c", conf, "--stream", "--no-summary", src],
                                 capture_output=True, text=True, timeout=600)
            if "OK" not in out.stdout:
                raise RuntimeError(f"clamdscan: {out.stdout} {out.stderr}")
            rows["clamd INSTREAM (clamdscan --stream)"].append(size / (time.time() - t) / 1e6)
            for name, port, proc in (("ftpgate upload with [scan]", scanned, scanned_p),
                                     ("ftpgate upload without [scan]", plain, plain_p)):
                c0 = b.cpu_seconds(proc.pid)
                rows[name].append(b.curl(f"ftp://127.0.0.1:{port}", False, certs, upload=src))
                cpu[name].append((b.cpu_seconds(proc.pid) - c0) / (size / 2**30))
        med = statistics.median
        print(f"upload scanning, {a.runs} interleaved rounds (medians), {a.size_mib} MiB random file")
        bound = med(rows["clamd INSTREAM (clamdscan --stream)"])
        for k, v in rows.items():
            extra = f", ftpgate CPU {med(cpu[k]):.3f} s/GiB" if k in cpu else ""
            print(f"  {k}: {med(v):.0f} MB/s ({med(v) / bound:.2f}x clamd){extra}  {[round(x) for x in v]}")
    finally:
        b.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
