#!/usr/bin/env python3
"""Many concurrent ftplib sessions through ftpgate's shared passive ports.

usage: shared_ports.py HOST PORT USER PASSWORD MODE SESSIONS SOURCES WORKDIR [CAFILE]
MODE: plain | tls (PROT P, data connections resume the control session, as
  real deployments of ftplib do) | thief (see below).
SOURCES: comma-separated loopback addresses the sessions connect from, in turn.
Session i logs in, and once every session is logged in (all are open at
once), uses EPSV (i % 4 < 2) or PASV, then downloads `d{i % 50}.bin`
(i odd) or uploads WORKDIR/u{i}.bin as `u{i}.bin` (i even; the file is
written by the test). Prints one JSON line per session: i, source, op, name,
sha256 of the bytes sent or received, or error.

thief: one victim session from SOURCES[0] prepares a download of d0.bin
under PROT P; a second session from the same address logs in (PROT P, so it
holds a ticket of its own) and opens TLS data connections to the victim's
port, first with a fresh handshake, then resuming its own session; then the
victim downloads. Prints {"thief_fresh": ..., "thief_foreign": ..., "sha256": ...}.
"""
import ftplib
import hashlib
import json
import os
import socket
import ssl
import sys
import threading
import time


class Session(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control session (tls), or
    plain FTP (the TLS parts unused); EPSV on IPv4 on request."""

    epsv = False
    tls = False
    # Seconds a session holds its reservation before connecting: the
    # sessions released together then certainly overlap, and those of one
    # address beyond the port count must wait (what the tests check), however
    # the threads happen to be scheduled on a loaded machine.
    hold = 0.0

    def makepasv(self):
        if self.epsv:
            where = ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        else:
            where = super().makepasv()
        if self.hold:
            time.sleep(self.hold)
        return where

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self.tls:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    return ctx


def open_session(host, port, user, password, source, tls, ctx):
    ftp = Session(context=ctx, source_address=(source, 0), timeout=120)
    ftp.connect(host, port)
    if tls:
        ftp.auth()
        ftp.login(user, password, secure=False)
        ftp.prot_p()
        ftp.tls = True
    else:
        ftplib.FTP.login(ftp, user, password)
    return ftp


LOGINS = threading.Semaphore(16)


def one(i, args, barrier, out, lock):
    host, port, user, password, mode, sources, workdir, ctx = args
    source = sources[i % len(sources)]
    op = "RETR" if i % 2 else "STOR"
    name = f"d{i % 50}.bin" if op == "RETR" else f"u{i}.bin"
    result = {"i": i, "source": source, "op": op, "name": name}
    ftp = None
    waited = False
    try:
        # A few logins at a time: vsftpd's listen backlog is 32, and a burst
        # of 500 connects has SYNs dropped and retried for minutes. Once in,
        # every session stays open until all are, then all transfer at once.
        with LOGINS:
            ftp = open_session(host, port, user, password, source, mode == "tls", ctx)
        ftp.epsv = i % 4 < 2
        ftp.hold = 0.2 if mode == "plain" else 0.0
        waited = True
        try:
            barrier.wait(timeout=300)
        except threading.BrokenBarrierError:
            pass
        h = hashlib.sha256()
        if op == "RETR":
            ftp.retrbinary(f"RETR {name}", h.update, blocksize=65536)
        else:
            with open(os.path.join(workdir, name), "rb") as f:
                data = f.read()
            h.update(data)
            with open(os.path.join(workdir, name), "rb") as f:
                ftp.storbinary(f"STOR {name}", f)
        result["sha256"] = h.hexdigest()
        ftp.quit()
    except Exception as e:  # reported, not raised: the test counts them
        result["error"] = f"{type(e).__name__}: {e}"
        if not waited:
            # The others need not wait for a session that never got in.
            barrier.abort()
        if ftp is not None:
            try:
                ftp.close()
            except Exception:
                pass
    with lock:
        out.append(result)


def thief(host, port, user, password, source, ctx):
    victim = open_session(host, port, user, password, source, True, ctx)
    victim.epsv = True
    data_host, data_port = victim.makepasv()
    other = open_session(host, port, user, password, source, True, ctx)
    report = {}
    for kind, session in (("thief_fresh", None), ("thief_foreign", other.sock.session)):
        raw = socket.create_connection((data_host, data_port), timeout=30, source_address=(source, 0))
        try:
            tls = ctx.wrap_socket(raw, server_hostname=host, session=session)
            tls.settimeout(5)
            got = tls.recv(1)
            report[kind] = "read " + repr(got)
        except (OSError, ssl.SSLError) as e:
            report[kind] = "refused: " + type(e).__name__
        finally:
            raw.close()
    # The victim's own data connection, on the port it was given.
    conn = socket.create_connection((data_host, data_port), timeout=30, source_address=(source, 0))
    victim.putcmd("RETR d0.bin")
    resp = victim.getresp()
    if not resp.startswith("1"):
        raise SystemExit(json.dumps({"error": resp}))
    conn = ctx.wrap_socket(conn, server_hostname=host, session=victim.sock.session)
    h = hashlib.sha256()
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        h.update(chunk)
    conn.unwrap() if hasattr(conn, "unwrap") else None
    conn.close()
    report["victim_end"] = victim.voidresp()
    report["sha256"] = h.hexdigest()
    victim.quit()
    other.quit()
    print(json.dumps(report))


def main():
    host, port, user, password, mode, sessions, sources, workdir = sys.argv[1:9]
    cafile = sys.argv[9] if len(sys.argv) > 9 else None
    ctx = context(cafile) if cafile else None
    sources = sources.split(",")
    if mode == "thief":
        return thief(host, int(port), user, password, sources[0], ctx)
    n = int(sessions)
    barrier = threading.Barrier(n)
    out, lock = [], threading.Lock()
    args = (host, int(port), user, password, mode, sources, workdir, ctx)
    threads = [threading.Thread(target=one, args=(i, args, barrier, out, lock)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in sorted(out, key=lambda r: r["i"]):
        print(json.dumps(r))


if __name__ == "__main__":
    main()
