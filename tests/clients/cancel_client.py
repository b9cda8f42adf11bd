#!/usr/bin/env python3
"""Cancelled downloads, the way curl, lftp and FileZilla cancel: RETR, read
64 KiB, send ABOR and close the data connection at once; then NOOP.

usage: cancel_client.py HOST PORT USER PASSWORD ROUNDS FILE [CAFILE]
With CAFILE the control connection is upgraded with AUTH TLS and data runs
under PROT P, each data connection resuming the control session.
Prints one JSON object: for each round the reply codes from RETR's first
reply to NOOP's, in order.
"""
import json
import socket
import ssl
import sys

host, port, user, password, rounds, name = sys.argv[1:7]
cafile = sys.argv[7] if len(sys.argv) > 7 else None
ctrl = socket.create_connection((host, int(port)), timeout=30)
sock = ctrl
f = ctrl.makefile("rb")


def reply():
    line = f.readline().decode(errors="replace")
    if len(line) < 4:
        raise SystemExit(json.dumps({"error": "control connection closed", "rounds": done}))
    code = line[:3]
    if line[3:4] == "-":
        while not (line[:3] == code and line[3:4] == " "):
            line = f.readline().decode(errors="replace")
    return int(code), line


def send(c):
    sock.sendall((c + "\r\n").encode())


done = []
reply()
ctx = None
if cafile:
    ctx = ssl.create_default_context(cafile=cafile)
    send("AUTH TLS")
    reply()
    sock = ctx.wrap_socket(ctrl, server_hostname=host)
    f = sock.makefile("rb")
for c in ["USER " + user, "PASS " + password] + (["PBSZ 0", "PROT P"] if cafile else []) + ["TYPE I"]:
    send(c)
    code, line = reply()
    if code >= 400:
        raise SystemExit(json.dumps({"error": line, "rounds": done}))
for _ in range(int(rounds)):
    codes = []
    send("EPSV")
    code, text = reply()
    p = int(text.split("|||")[1].split("|")[0])
    raw = socket.create_connection((host, p), timeout=30)
    send("RETR " + name)
    code, _ = reply()
    codes.append(code)
    if code not in (125, 150):
        done.append(codes)
        continue
    d = ctx.wrap_socket(raw, server_hostname=host, session=sock.session) if ctx else raw
    got = 0
    while got < 65536:
        b = d.recv(65536)
        if not b:
            break
        got += len(b)
    send("ABOR")
    d.close()
    code, _ = reply()
    codes.append(code)
    # Two replies: the transfer's (426 when cut, 226 when every byte was
    # already delivered) and then ABOR's own.
    if code >= 400 or code == 226:
        code, _ = reply()
        codes.append(code)
    send("NOOP")
    code, _ = reply()
    codes.append(code)
    done.append(codes)
send("QUIT")
reply()
print(json.dumps({"rounds": done}))
