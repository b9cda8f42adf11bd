#!/usr/bin/env python3
"""A client that starts TLS on its data connection BEFORE it sends the
transfer command, as aioftp does (curl, lftp and ftplib start after the 150).

usage: early_tls_client.py HOST PORT USER PASSWORD CAFILE WORKDIR
Uploads WORKDIR/src.bin as up.bin, downloads it back, and prints one JSON
object with the reply codes in order and the SHA-256 of what came back.
"""
import hashlib
import json
import socket
import ssl
import sys

host, port, user, password, cafile, workdir = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
ctrl = socket.create_connection((host, int(port)), timeout=30)
f = ctrl.makefile("rb")
codes = []


def reply():
    line = f.readline().decode()
    code = line[:3]
    if line[3:4] == "-":
        while not (line[:3] == code and line[3:4] == " "):
            line = f.readline().decode()
    codes.append(int(code))
    return line


def cmd(c):
    tls_ctrl.sendall((c + "\r\n").encode()) if tls else ctrl.sendall((c + "\r\n").encode())
    return reply()


tls = False
reply()
cmd("AUTH TLS")
tls_ctrl = ctx.wrap_socket(ctrl, server_hostname=host)
tls = True
f = tls_ctrl.makefile("rb")
for c in ["USER " + user, "PASS " + password, "PBSZ 0", "PROT P", "TYPE I"]:
    cmd(c)


def data_conn():
    text = cmd("EPSV")
    p = int(text.split("|||")[1].split("|")[0])
    raw = socket.create_connection((host, p), timeout=30)
    # The handshake completes here, before the command is sent.
    return ctx.wrap_socket(raw, server_hostname=host, session=tls_ctrl.session)


data = open(workdir + "/src.bin", "rb").read()
d = data_conn()
cmd("STOR up.bin")
d.sendall(data)
d.unwrap().close()
reply()
d = data_conn()
cmd("RETR up.bin")
got = bytearray()
while True:
    chunk = d.recv(65536)
    if not chunk:
        break
    got += chunk
d.close()
reply()
cmd("QUIT")
print(json.dumps({"codes": codes, "sha": hashlib.sha256(got).hexdigest()}))
