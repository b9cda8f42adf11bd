#!/usr/bin/env python3
"""One ftplib session doing rounds of STOR, STOR, RETR, NLST (4 data
connections a round), the mix that runs a TLS 1.3 ticket supply dry.

usage: mixed_session.py HOST PORT USER PASSWORD ROUNDS [CA]
With CA: explicit FTPS (AUTH TLS, PROT P), data connections resuming the
control session as ftplib does. Prints JSON: the final reply of each
transfer in order, and whether each download matched what was uploaded.
"""
import ftplib
import hashlib
import io
import json
import ssl
import sys

host, port, user, password, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
ca = sys.argv[6] if len(sys.argv) > 6 else None
class ReusingFTPS(ftplib.FTP_TLS):
    """Data connections resume the control session, as FTPS clients that
    work with strict servers do (stock ftplib does not)."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size


if ca:
    ctx = ssl.create_default_context(cafile=ca)
    ftp = ReusingFTPS(context=ctx, timeout=30)
else:
    ftp = ftplib.FTP(timeout=30)
ftp.connect(host, port)
ftp.login(user, password)
if ca:
    ftp.prot_p()
codes = []
matches = []


def run(fn):
    try:
        r = fn()
        codes.append(int(r[:3]) if isinstance(r, str) else 226)
    except ftplib.all_errors as e:
        codes.append(int(str(e)[:3]) if str(e)[:3].isdigit() else 0)


for i in range(rounds):
    a = hashlib.sha256(b"a%d" % i).digest() * 2048  # 64 KiB
    b = hashlib.sha256(b"b%d" % i).digest() * 1024
    run(lambda: ftp.storbinary("STOR a%d.bin" % i, io.BytesIO(a)))
    run(lambda: ftp.storbinary("STOR b%d.bin" % i, io.BytesIO(b)))
    got = io.BytesIO()
    run(lambda: ftp.retrbinary("RETR a%d.bin" % i, got.write))
    matches.append(hashlib.sha256(got.getvalue()).hexdigest() == hashlib.sha256(a).hexdigest())
    names = []
    run(lambda: (ftp.retrlines("NLST", names.append)))
ftp.quit()
print(json.dumps({"codes": codes, "matches": matches}))
