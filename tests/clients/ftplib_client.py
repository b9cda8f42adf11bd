#!/usr/bin/env python3
"""Drives Python's stock ftplib the way applications use it, for ftpgate's tests.

usage: ftplib_client.py HOST PORT USER PASSWORD MODE SCENARIO WORKDIR
MODE: pasv | epsv | active.  Prints one JSON object with what happened; the
Rust test asserts on it (hashes, reply codes, listings).
"""
import ftplib
import hashlib
import json
import os
import sys


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def connect(host, port, user, password, mode):
    ftp = ftplib.FTP()
    ftp.connect(host, int(port), timeout=30)
    ftp.login(user, password)
    if mode == "active":
        ftp.set_pasv(False)
    else:
        ftp.set_pasv(True)
    # ftplib uses EPSV automatically on IPv6 only; force it here when asked.
    if mode == "epsv":
        ftp.af = 10 if ":" in host else ftp.af
        orig = ftp.makepasv

        def makepasv():
            host_, port_ = ftplib.parse229(ftp.sendcmd("EPSV"), ftp.sock.getpeername())
            return host_, port_

        ftp.makepasv = makepasv
    return ftp


def full(ftp, work):
    out = {}
    with open(os.path.join(work, "big.bin"), "rb") as f:
        out["stor"] = ftp.storbinary("STOR up.bin", f)
    with open(os.path.join(work, "down.bin"), "wb") as f:
        out["retr"] = ftp.retrbinary("RETR up.bin", f.write)
    out["down_sha"] = sha(os.path.join(work, "down.bin"))
    out["size"] = ftp.size("up.bin")
    # Resume: fetch from offset 1000 as a client continuing a broken download.
    with open(os.path.join(work, "tail.bin"), "wb") as f:
        out["rest_retr"] = ftp.retrbinary("RETR up.bin", f.write, rest=1000)
    out["tail_sha"] = sha(os.path.join(work, "tail.bin"))
    # Append: upload the first half, then APPE the second half.
    with open(os.path.join(work, "big.bin"), "rb") as f:
        data = f.read()
    half = len(data) // 2
    import io
    ftp.storbinary("STOR app.bin", io.BytesIO(data[:half]))
    out["appe"] = ftp.storbinary("APPE app.bin", io.BytesIO(data[half:]))
    buf = bytearray()
    ftp.retrbinary("RETR app.bin", buf.extend)
    out["appe_sha"] = hashlib.sha256(buf).hexdigest()
    out["mkd"] = ftp.mkd("d")
    out["rename"] = ftp.rename("up.bin", "d/moved.bin")
    out["nlst"] = sorted(ftp.nlst())
    lines = []
    out["list"] = ftp.retrlines("LIST d", lines.append)
    out["list_lines"] = lines
    out["delete"] = ftp.delete("d/moved.bin")
    out["delete_app"] = ftp.delete("app.bin")
    out["rmd"] = ftp.rmd("d")
    out["nlst_after"] = sorted(ftp.nlst())
    out["quit"] = ftp.quit()
    return out


def abort(ftp, work):
    out = {}
    conn = ftp.transfercmd("RETR big.bin")
    got = conn.recv(65536)
    out["received_before_abort"] = len(got)
    out["abort_first"] = ftp.abort()
    conn.close()
    if out["abort_first"].startswith("426"):
        out["abort_second"] = ftp.getresp()
    out["noop"] = ftp.voidcmd("NOOP")
    # The session must still transfer correctly after an abort.
    buf = bytearray()
    out["retr_after"] = ftp.retrbinary("RETR big.bin", buf.extend)
    out["after_sha"] = hashlib.sha256(buf).hexdigest()
    out["quit"] = ftp.quit()
    return out


def main():
    host, port, user, password, mode, scenario, work = sys.argv[1:8]
    ftp = connect(host, port, user, password, mode)
    result = {"full": full, "abort": abort}[scenario](ftp, work)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
