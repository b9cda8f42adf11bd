#!/usr/bin/env python3
"""Faults on a TLS control and data connection (PROT P), from a client that
speaks the protocol by hand so every reply is seen in order.

usage: tls_faults_client.py HOST PORT USER PASSWORD CAFILE SCENARIO [SIZE]
scenarios:
  abor_download  RETR big.bin, read 1 MiB, send NOOP and ABOR on the TLS control
  abor_upload    STOR up.bin, send 1 MiB, send ABOR on the TLS control
  upload_cut     STOR cut.bin, send 1 MiB, close the TLS data connection without
                 close_notify (a truncation attack or a crashed client)
  upload_reset   STOR reset.bin, send 1 MiB, reset the data connection (RST)
Prints one JSON object: the reply codes after PROT P, in order, and how many
bytes moved on the data connection.
"""
import json
import socket
import ssl
import struct
import sys

host, port, user, password, cafile, scenario = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
ctrl = socket.create_connection((host, int(port)), timeout=30)
f = ctrl.makefile("rb")
codes = []


def reply(record=True):
    line = f.readline().decode()
    if len(line) < 4:
        raise SystemExit("control connection closed, codes so far: %r" % codes)
    code = line[:3]
    if line[3:4] == "-":
        while not (line[:3] == code and line[3:4] == " "):
            line = f.readline().decode()
    if record:
        codes.append(int(code))
    return line


def send(c):
    sock.sendall((c + "\r\n").encode())


sock = ctrl
reply(False)
send("AUTH TLS")
reply(False)
sock = ctx.wrap_socket(ctrl, server_hostname=host)
f = sock.makefile("rb")
for c in ["USER " + user, "PASS " + password, "PBSZ 0", "PROT P", "TYPE I"]:
    send(c)
    reply(False)


def data_conn(command):
    send("EPSV")
    text = reply(False)
    p = int(text.split("|||")[1].split("|")[0])
    raw = socket.create_connection((host, p), timeout=30)
    send(command)
    first = reply()
    if not first.startswith("150") and not first.startswith("125"):
        raise SystemExit(json.dumps({"codes": codes, "moved": 0}))
    return ctx.wrap_socket(raw, server_hostname=host, session=sock.session)


chunk = bytes(range(256)) * 256  # 64 KiB
moved = 0
if scenario == "abor_download":
    d = data_conn("RETR big.bin")
    while moved < (1 << 20):
        moved += len(d.recv(65536))
    send("NOOP")
    send("ABOR")
    reply()
    reply()
    reply()
    d.close()
elif scenario in ("abor_upload", "upload_cut", "upload_reset"):
    name = {"abor_upload": "up.bin", "upload_cut": "cut.bin", "upload_reset": "reset.bin"}[scenario]
    d = data_conn("STOR " + name)
    while moved < (1 << 20):
        d.sendall(chunk)
        moved += len(chunk)
    if scenario == "abor_upload":
        send("ABOR")
        reply()
        reply()
        d.close()
    elif scenario == "upload_cut":
        # close() without unwrap(): no close_notify, just a FIN.
        d.close()
        reply()
    else:
        # wrap_socket took over raw's descriptor.
        d.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        d.close()
        reply()
send("NOOP")
reply()
print(json.dumps({"codes": codes, "moved": moved}))
