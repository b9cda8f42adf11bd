#!/usr/bin/env python3
"""Python's ftplib.FTP_TLS against ftpgate, as applications use it.

usage: ftplib_tls_client.py HOST PORT USER PASSWORD CAFILE TLSMODE REUSE SCENARIO WORKDIR
TLSMODE: explicit | implicit.  REUSE: yes (data connections resume the control
session, the subclass real deployments use) | no (stock ftplib) | foreign (the
data connection presents another control connection's session).
Prints one JSON object; errors are reported as {"error": "<reply>"}.
"""
import ftplib
import hashlib
import io
import json
import os
import socket
import ssl
import sys
import time


class FTPS(ftplib.FTP_TLS):
    reuse = "no"
    implicit = False
    foreign_session = None

    def connect(self, host="", port=0, timeout=-999, source_address=None):
        if not self.implicit:
            return super().connect(host, port, timeout, source_address)
        self.host, self.port = host, port
        if timeout != -999:
            self.timeout = timeout
        self.sock = socket.create_connection((host, port), self.timeout)
        self.af = self.sock.family
        self.sock = self.context.wrap_socket(self.sock, server_hostname=host)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            session = None
            if self.reuse == "yes":
                session = self.sock.session
            elif self.reuse == "foreign":
                session = self.foreign_session
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size


def make(ctx, host, port, user, password, mode, reuse):
    ftp = FTPS(context=ctx)
    ftp.implicit = mode == "implicit"
    ftp.reuse = reuse
    ftp.connect(host, int(port), timeout=30)
    if ftp.implicit:
        # Implicit FTPS: the control connection is TLS already.
        ftp._prot_p = False
        ftp.login(user, password, secure=False)
    else:
        ftp.login(user, password)
    ftp.prot_p()
    return ftp


def main():
    host, port, user, password, cafile, mode, reuse, scenario, work = sys.argv[1:10]
    out = {}
    if scenario == "order":
        # RFC 4217 order after AUTH: PROT before PBSZ is refused, then both work.
        ftp = FTPS(context=ssl.create_default_context(cafile=cafile))
        ftp.connect(host, int(port), timeout=30)
        out["auth"] = ftp.auth()
        try:
            out["prot_first"] = ftp.sendcmd("PROT P")
        except ftplib.error_perm as e:
            out["prot_first"] = str(e)
        out["pbsz"] = ftp.sendcmd("PBSZ 0")
        out["prot"] = ftp.sendcmd("PROT P")
        out["quit"] = ftp.quit()
        print(json.dumps(out))
        return
    try:
        # One context for all connections: Python only resumes sessions of the
        # context that made them, which is also what lets "foreign" try.
        ctx = ssl.create_default_context(cafile=cafile)
        ftp = make(ctx, host, port, user, password, mode, "yes" if reuse == "foreign" else reuse)
        if reuse == "foreign":
            other = make(ctx, host, port, user, password, mode, "yes")
            other.voidcmd("NOOP")
            ftp.reuse = "foreign"
            ftp.foreign_session = other.sock.session
        data = open(f"{work}/big.bin", "rb").read()
        if scenario == "upload-silence":
            # An uploading client does not read its data connection. Whatever
            # the server sends there after the handshake stays unread, and
            # closing a socket with unread bytes resets the connection, which
            # can discard the end of the upload.
            conn = ftp.transfercmd("STOR tls.bin")
            conn.sendall(data)
            time.sleep(0.3)
            raw = socket.socket(fileno=os.dup(conn.fileno()))
            raw.setblocking(False)
            try:
                out["unread_after_upload"] = len(raw.recv(65536, socket.MSG_PEEK))
            except BlockingIOError:
                out["unread_after_upload"] = 0
            raw.close()
            conn.unwrap()
            conn.close()
            out["stor"] = ftp.voidresp()
        else:
            out["stor"] = ftp.storbinary("STOR tls.bin", io.BytesIO(data))
        buf = bytearray()
        out["retr"] = ftp.retrbinary("RETR tls.bin", buf.extend)
        out["sha"] = hashlib.sha256(buf).hexdigest()
        out["nlst"] = ftp.nlst()
        out["quit"] = ftp.quit()
    except ftplib.error_reply as e:
        out["error"] = str(e)
    except ftplib.all_errors as e:
        # The data connection broke: what the server says on the control
        # connection is what a user of ftplib would look at next.
        out["data_error"] = str(e)
        try:
            out["error"] = ftp.getresp()
        except ftplib.all_errors as e2:
            out["error"] = str(e2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
