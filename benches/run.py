#!/usr/bin/env python3
"""Side-by-side benchmark: the direct path, ftpgate and ProFTPD mod_proxy in
front of the same vsftpd, measured with the same client (curl) and file.

    python3 benches/run.py            # full: 1 GiB, medians of 3, all rows; writes benches/README.md
    python3 benches/run.py --tiny     # smoke: 16 MiB, one run, direct and ftpgate rows (the test suite runs this)

FTPGATE_BIN runs another build; FTPGATE_BENCH_ARGS adds flags to every
ftpgate it starts; FTPGATE_BENCH_NO_README=1 leaves benches/README.md alone
(for interleaved before/after runs).

Needs root (a system user for vsftpd, apt-get for what is missing). Listens on
127.0.0.1 only and stops every process it started, by PID.
"""
import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER, PASSWORD = "ftpgatebench", "ftpgate-Bench-pw1"
PAM = "ftpgate-bench"
PROFTPD = os.environ.get("FTPGATE_PROFTPD_DIR", "/opt/ftpgate-test/proftpd")
procs = []


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


LOGIN_LOAD = f"{ROOT}/target/release/examples/login_load"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start(cmd, **kw):
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


def setup(tiny):
    need = [pkg for cmd, pkg in [("vsftpd", "vsftpd"), ("curl", "curl")] if not shutil.which(cmd)]
    if need:
        sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq " + " ".join(need) + " >/dev/null")
    if not tiny:
        sh(f"bash {ROOT}/scripts/install-proftpd.sh >/dev/null")
    sh(f"id -u {USER} >/dev/null 2>&1 || useradd -M -d / -s /usr/sbin/nologin {USER}; echo '{USER}:{PASSWORD}' | chpasswd")
    if not os.path.exists(f"/etc/pam.d/{PAM}"):
        with open(f"/etc/pam.d/{PAM}", "w") as f:
            f.write("auth required pam_unix.so\naccount required pam_unix.so\nsession required pam_permit.so\n")
    os.makedirs("/var/run/vsftpd/empty", exist_ok=True)


def vsftpd(work, name, tls, certs):
    d = os.path.join(work, name)
    os.makedirs(d)
    port = free_port()
    pasv = 20000 + (port % 10000)
    conf = f"""listen=YES
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
chroot_local_user=YES
allow_writeable_chroot=YES
local_root={work}/root
pam_service_name={PAM}
check_shell=NO
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
max_clients=0
max_per_ip=0
pasv_min_port={pasv}
pasv_max_port={pasv + 400}
"""
    if tls:
        conf += f"""ssl_enable=YES
rsa_cert_file={certs}/server.pem
rsa_private_key_file={certs}/server.key
force_local_logins_ssl=YES
force_local_data_ssl=YES
require_ssl_reuse=YES
ssl_ciphers=HIGH
"""
    path = os.path.join(d, "vsftpd.conf")
    with open(path, "w") as f:
        f.write(conf)
    start(["vsftpd", path])
    wait_port(port)
    return port


def ftpgate(binary, backend_port, certs, client_tls=False, backend_tls=False, extra=(), passive=None):
    port = free_port()
    base = 40000 + (port % 10000)
    cmd = [binary, "run", "--listen", f"127.0.0.1:{port}", "--backend", f"127.0.0.1:{backend_port}",
           "--passive-ports", passive or f"{base}-{base + 400}"]
    if client_tls:
        cmd += ["--client-tls", "explicit", "--cert", f"{certs}/server.pem", "--key", f"{certs}/server.key"]
    if backend_tls:
        cmd += ["--backend-tls", "explicit", "--backend-ca", f"{certs}/ca.pem"]
    cmd += list(extra)
    # Before/after comparisons pass the same settings to two builds.
    cmd += os.environ.get("FTPGATE_BENCH_ARGS", "").split()

    def more_fds():
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    p = start(cmd, preexec_fn=more_fds, env={**os.environ, "FTPGATE_LOG": "warn"})
    wait_port(port)
    return port, p


def mod_proxy(work, name, backend_port, certs, client_tls=False, backend_tls=False):
    d = os.path.join(work, name)
    os.makedirs(os.path.join(d, "tables"))
    port = free_port()
    base = 50000 + (port % 10000)
    conf = f"""ServerType standalone
ServerName "mod_proxy"
Port {port}
DefaultAddress 127.0.0.1
SocketBindTight on
UseIPv6 off
User nobody
Group nogroup
PidFile {d}/proftpd.pid
ScoreboardFile {d}/scoreboard
WtmpLog off
UseReverseDNS off
MaxInstances 1000
PassivePorts {base} {base + 400}
ModulePath {PROFTPD}/usr/lib/proftpd
LoadModule mod_tls.c
LoadModule mod_proxy.c
<IfModule mod_tls.c>
  TLSEngine {"on" if client_tls else "off"}
  TLSProtocol TLSv1.2 TLSv1.3
  TLSECCertificateFile {certs}/server.pem
  TLSECCertificateKeyFile {certs}/server.key
  TLSOptions NoSessionReuseRequired
</IfModule>
<IfModule mod_proxy.c>
  ProxyEngine on
  ProxyLog {d}/proxy.log
  ProxyTables {d}/tables
  ProxyRole reverse
  ProxyReverseServers ftp://127.0.0.1:{backend_port}
  ProxyTLSEngine {"on" if backend_tls else "off"}
  ProxyTLSCACertificateFile {certs}/ca.pem
  # TLS 1.3 towards vsftpd truncates mod_proxy's uploads (426); 1.2 works.
  ProxyTLSProtocol TLSv1.2
</IfModule>
"""
    path = os.path.join(d, "proftpd.conf")
    with open(path, "w") as f:
        f.write(conf)
    p = start([f"{PROFTPD}/usr/sbin/proftpd", "-n", "-q", "-c", path])
    MOD_PROXY_PIDS[port] = p.pid
    wait_port(port)
    return port


def curl(url, tls, certs, upload=None):
    args = ["curl", "-sS", "--max-time", "600", "--user", f"{USER}:{PASSWORD}"]
    if tls:
        args += ["--ssl-reqd", "--cacert", f"{certs}/ca.pem"]
    if upload:
        args += ["-T", upload, "-w", "%{speed_upload}", url + "/up.bin"]
    else:
        args += ["-o", "/dev/null", "-w", "%{speed_download}", url + "/big.bin"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"curl failed on {url}: {out.stderr.strip()}")
    return float(out.stdout) / 1e6


def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid):
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ProFTPD's master PID per mod_proxy port: it forks a child per session.
MOD_PROXY_PIDS = {}


def cpu_seconds_tree(pid):
    """A forking server's CPU: its own and that of the children it has
    reaped (a session's child is counted once it has exited), so this waits
    until no child is left (up to 5 s)."""
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                if not f.read().split():
                    break
        except OSError:
            break
        time.sleep(0.05)
    return sum(int(x) for x in stat_fields(pid)[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def logins_per_second(port, certs, seconds=10, clients=8):
    """Sessions per second (AUTH TLS, login, PROT P, LIST, QUIT) from the Rust
    load client (examples/login_load.rs), which costs far less CPU per session
    than the servers it measures."""
    out = subprocess.run(
        [LOGIN_LOAD, f"127.0.0.1:{port}", f"{certs}/ca.pem", USER, PASSWORD, str(clients), str(seconds)],
        capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"login_load: {out.stderr.strip()}")
    return float(out.stdout.strip())


def run_fake_backend(port):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (65536 if hard == resource.RLIM_INFINITY else min(65536, hard), hard))
    asyncio.run(fake_backend(port))


async def fake_backend(port):
    """A backend that answers at once: login, PWD, EPSV with a one-line LIST,
    QUIT. It shows what ftpgate itself can do when the backend costs nothing."""
    async def session(reader, writer):
        writer.write(b"220 fake\r\n")
        listing = None
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb = line.split(b" ")[0].strip().upper()
                if verb == b"EPSV":
                    accepted = asyncio.get_running_loop().create_future()

                    async def on_data(r, w, accepted=accepted):
                        if not accepted.done():
                            accepted.set_result(w)
                    listing = (await asyncio.start_server(on_data, "127.0.0.1", 0), accepted)
                    data_port = listing[0].sockets[0].getsockname()[1]
                    writer.write(f"229 Entering Extended Passive Mode (|||{data_port}|)\r\n".encode())
                elif verb in (b"LIST", b"NLST") and listing:
                    server, accepted = listing
                    writer.write(b"150 Here comes the listing\r\n")
                    await writer.drain()
                    w = await accepted
                    w.write(b"-rw-r--r-- 1 ftp ftp 0 Jan 1 00:00 file\r\n")
                    await w.drain()
                    w.close()
                    server.close()
                    listing = None
                    writer.write(b"226 Done\r\n")
                else:
                    reply = {b"USER": b"331 pw\r\n", b"PASS": b"230 in\r\n", b"PWD": b'257 "/"\r\n',
                             b"QUIT": b"221 bye\r\n"}.get(verb, b"200 ok\r\n")
                    writer.write(reply)
                    if verb == b"QUIT":
                        await writer.drain()
                        break
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


def idle_sessions_rss(binary, certs, counts):
    """RSS of ftpgate with N idle logged-in plain sessions, against a fake backend."""
    import multiprocessing
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (65536 if hard == resource.RLIM_INFINITY else min(65536, hard), hard))
    bport = free_port()
    # The fake backend runs in its own process: each side needs one descriptor
    # per session, and the hard limit here may be close to 2 x sessions.
    backend = multiprocessing.Process(target=run_fake_backend, args=(bport,), daemon=True)
    backend.start()
    wait_port(bport)
    conf = os.path.join(os.path.dirname(certs), "many-sessions.toml")
    with open(conf, "w") as f:
        # One client address holds them all: lift the per-address limit.
        f.write("[limits]\nmax_sessions = 20000\nmax_sessions_per_address = 0\n")
    gport, gp = ftpgate(binary, bport, certs, extra=["--config", conf])
    results = {}

    async def open_sessions(n, keep):
        async def one():
            r, w = await asyncio.open_connection("127.0.0.1", gport)
            await r.readline()
            w.write(f"USER {USER}\r\n".encode())
            await r.readline()
            w.write(f"PASS {PASSWORD}\r\n".encode())
            line = await r.readline()
            if not line.startswith(b"230"):
                raise RuntimeError(line)
            keep.append(w)
        for i in range(0, n, 500):
            await asyncio.gather(*(one() for _ in range(min(500, n - i))))

    async def run():
        keep = []
        done = 0
        for n in counts:
            await open_sessions(n - done, keep)
            done = n
            await asyncio.sleep(1)
            results[n] = rss_mib(gp.pid)
        for w in keep:
            w.close()

    asyncio.run(run())
    backend.terminate()
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--size-mib", type=int)
    ap.add_argument("--runs", type=int)
    ap.add_argument("--transfers-only", action="store_true",
                    help="skip logins per second and idle memory (before/after runs of the data path)")
    a = ap.parse_args()
    tiny = a.tiny
    size = (a.size_mib or (16 if tiny else 1024)) * 1024 * 1024
    runs = a.runs or (1 if tiny else 3)
    setup(tiny)
    binary = os.environ.get("FTPGATE_BIN")
    if not binary:
        sh(f"cd {ROOT} && cargo build --release --quiet")
        binary = f"{ROOT}/target/release/ftpgate"
    if not tiny:
        sh(f"cd {ROOT} && cargo build --release --quiet --example login_load")
    work = tempfile.mkdtemp(prefix="ftpgate-bench.")
    os.chmod(work, 0o755)
    rows = []
    try:
        os.makedirs(f"{work}/root")
        sh(f"chown {USER} {work}/root && chmod 777 {work}/root")
        certs = f"{work}/certs"
        sh(f"{binary} certs init --dir {certs} --name 127.0.0.1 >/dev/null")
        sh(f"chmod 644 {certs}/*.key")  # vsftpd reads its key after dropping privileges
        src = f"{work}/src.bin"
        with open(src, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
        shutil.copy(src, f"{work}/root/big.bin")
        os.chmod(f"{work}/root/big.bin", 0o644)

        vplain = vsftpd(work, "vsftpd-plain", False, certs)
        vtls = vsftpd(work, "vsftpd-tls", True, certs)
        g_plain, gp = ftpgate(binary, vplain, certs)
        g_up, gu = ftpgate(binary, vtls, certs, backend_tls=True)
        g_tls, gt = ftpgate(binary, vtls, certs, client_tls=True, backend_tls=True)
        # CPU seconds of each ftpgate process, per direction, for s/GiB.
        cpu_pids = {"1. plain/plain: ftpgate": gp.pid, "2. plain client, TLS backend: ftpgate": gu.pid,
                    "3. TLS/TLS: ftpgate": gt.pid}
        cpu = {name: [0.0, 0.0] for name in cpu_pids}
        # mod_proxy's CPU, master and session children together.
        mp_cpu = {}

        # Every proxy is started first; then each round measures every row once
        # (download, then upload), so drift of the machine over the run hits
        # all rows alike instead of whichever ran last.
        plan = [("1. plain/plain: direct", vplain, False), ("1. plain/plain: ftpgate", g_plain, False)]
        if not tiny:
            plan.append(("1. plain/plain: mod_proxy", mod_proxy(work, "mp-plain", vplain, certs), False))
        plan.append(("2. plain client, TLS backend: ftpgate", g_up, False))
        if not tiny:
            plan.append(("2. plain client, TLS backend: mod_proxy",
                         mod_proxy(work, "mp-up", vtls, certs, backend_tls=True), False))
        plan += [("3. TLS/TLS: direct FTPS", vtls, True), ("3. TLS/TLS: ftpgate", g_tls, True)]
        if not tiny:
            plan.append(("3. TLS/TLS: mod_proxy",
                         mod_proxy(work, "mp-tls", vtls, certs, client_tls=True, backend_tls=True), True))
        failures = []
        speeds = {name: ([], []) for name, _, _ in plan}
        failed = set()
        cpu_plain = 0.0
        for _ in range(runs):
            for name, port, tls in plan:
                if name in failed:
                    continue
                url = f"ftp://127.0.0.1:{port}"
                mp = MOD_PROXY_PIDS.get(port)
                if mp:
                    m0 = cpu_seconds_tree(mp)
                cpu0 = cpu_seconds(gp.pid)
                try:
                    c = cpu_seconds(cpu_pids[name]) if name in cpu_pids else 0.0
                    speeds[name][0].append(curl(url, tls, certs))
                    c2 = cpu_seconds(cpu_pids[name]) if name in cpu_pids else 0.0
                    m1 = cpu_seconds_tree(mp) if mp else 0.0
                    speeds[name][1].append(curl(url, tls, certs, upload=src))
                    if mp:
                        acc = mp_cpu.setdefault(name, [0.0, 0.0])
                        acc[0] += m1 - m0
                        acc[1] += cpu_seconds_tree(mp) - m1
                    if name in cpu_pids:
                        cpu[name][0] += c2 - c
                        cpu[name][1] += cpu_seconds(cpu_pids[name]) - c2
                except RuntimeError as e:
                    # A proxy that fails a transfer gets no figure, and the reason.
                    failures.append(f"{name}: {e}")
                    failed.add(name)
                if name == "1. plain/plain: ftpgate":
                    cpu_plain += cpu_seconds(gp.pid) - cpu0
        cpu_plain /= 2 * runs * size / 2**30

        print(f"{'MB/s (median of %d, rows interleaved), %d MiB file' % (runs, size >> 20):55s} {'down':>9s} {'up':>9s}")
        for name, _, _ in plan:
            d, u = speeds[name]
            down = statistics.median(d) if name not in failed else float("nan")
            up = statistics.median(u) if name not in failed else float("nan")
            rows.append((name, down, up))
            print(f"{name:55s} {down:9.0f} {up:9.0f}", flush=True)
        for name, (down, up) in cpu.items():
            per = runs * size / 2**30
            print(f"ftpgate CPU s/GiB {name}: down {down / per:.3f} up {up / per:.3f}", flush=True)
        for name, (down, up) in mp_cpu.items():
            per = runs * size / 2**30
            print(f"mod_proxy CPU s/GiB {name}: down {down / per:.3f} up {up / per:.3f}", flush=True)
            mine = cpu.get(name.replace("mod_proxy", "ftpgate"))
            if mine and down and up:
                print(f"  ftpgate / mod_proxy CPU: down {mine[0] / down:.2f} up {mine[1] / up:.2f}", flush=True)
        extra = {"cpu_s_per_gib_plain": cpu_plain, "failures": failures}
        if not tiny and not a.transfers_only:
            mp_tls = mod_proxy(work, "mp-logins", vtls, certs, client_tls=True, backend_tls=True)
            extra["logins"] = {}
            import multiprocessing
            fport = free_port()
            fake = multiprocessing.Process(target=run_fake_backend, args=(fport,), daemon=True)
            fake.start()
            wait_port(fport)
            g_fake, _ = ftpgate(binary, fport, certs, client_tls=True)
            for name, port in [("direct", vtls), ("ftpgate", g_tls), ("mod_proxy", mp_tls),
                               ("ftpgate_instant_backend", g_fake)]:
                extra["logins"][name] = logins_per_second(port, certs)
                print(f"logins/s {name}: {extra['logins'][name]:.1f}", flush=True)
            fake.terminate()
            # ftpgate holds two descriptors per session; stay under the hard limit.
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            top = 10000 if hard == resource.RLIM_INFINITY or hard > 20100 else (hard - 100) // 2
            extra["rss"] = idle_sessions_rss(binary, certs, [1000, top])
            print(f"idle RSS: {extra['rss']}", flush=True)
        report(rows, extra, size, runs, tiny)
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)


def report(rows, extra, size, runs, tiny):
    by = {name: (d, u) for name, d, u in rows}

    def ratio(a, b, i):
        return by[a][i] / by[b][i] if a in by and b in by and by[b][i] else float("nan")

    lines = ["| row | down MB/s | up MB/s |", "|---|---:|---:|"]
    lines += [f"| {n} | {d:.0f} | {u:.0f} |" for n, d, u in rows]
    lines.append("")
    lines.append("| ratio | down | up |")
    lines.append("|---|---:|---:|")
    pairs = [("1. plain/plain: ftpgate", "1. plain/plain: direct", "ftpgate / direct, plain"),
             ("3. TLS/TLS: ftpgate", "3. TLS/TLS: direct FTPS", "ftpgate / direct FTPS, TLS both legs"),
             ("2. plain client, TLS backend: ftpgate", "3. TLS/TLS: direct FTPS", "ftpgate plain->TLS / direct FTPS"),
             ("1. plain/plain: ftpgate", "1. plain/plain: mod_proxy", "ftpgate / mod_proxy, plain"),
             ("2. plain client, TLS backend: ftpgate", "2. plain client, TLS backend: mod_proxy", "ftpgate / mod_proxy, plain->TLS"),
             ("3. TLS/TLS: ftpgate", "3. TLS/TLS: mod_proxy", "ftpgate / mod_proxy, TLS/TLS")]
    for a, b, label in pairs:
        if a in by and b in by:
            lines.append(f"| {label} | {ratio(a, b, 0):.2f} | {ratio(a, b, 1):.2f} |")
    lines.append("")
    lines.append(f"ftpgate CPU seconds per GiB relayed (plain/plain, splice): {extra['cpu_s_per_gib_plain']:.3f}")
    if "logins" in extra:
        l = extra["logins"]
        lines.append("")
        lines.append("Logins per second (AUTH TLS + login + PBSZ + PROT P + EPSV + LIST over resumed TLS + QUIT, "
                     "8 client threads, 10 s): " +
                     ", ".join(f"{k} {v:.1f}" for k, v in l.items()) +
                     (f"; ftpgate / mod_proxy {l['ftpgate'] / l['mod_proxy']:.2f}" if l.get("mod_proxy") else ""))
    if "rss" in extra:
        lines.append("")
        lines.append("ftpgate RSS with idle logged-in plain sessions: " +
                     ", ".join(f"{n}: {m:.0f} MiB" for n, m in extra["rss"].items()))
    for f in extra.get("failures", []):
        lines.append("")
        lines.append(f"FAILED {f}")
    table = "\n".join(lines)
    print()
    print(table)
    # A comparison run (FTPGATE_BENCH_NO_README=1) leaves the README to the
    # person who interleaves the runs.
    if not tiny and not os.environ.get("FTPGATE_BENCH_NO_README"):
        machine = f"{os.cpu_count()} cores, Linux {platform.release()}, {datetime.date.today()}"
        write_last_run(os.path.join(ROOT, "benches", "README.md"),
                       LAST_RUN.format(machine=machine, size=size >> 20, runs=runs, table=table))


def write_last_run(path, section):
    """Replaces only the README's "## Last full run" section: the rest of the
    file is the record of earlier before/after runs and must survive."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = BENCH_README_HEAD + "## Last full run\n\n" + BENCH_README_REST
    start = text.find("## Last full run\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    with open(path, "w") as f:
        f.write(text)


BENCH_README_HEAD = """# benches/

`python3 benches/run.py` runs the side-by-side benchmark: vsftpd on loopback
(plain, and strict FTPS with `require_ssl_reuse=YES`), with the direct path,
ftpgate and ProFTPD mod_proxy in front of it, all measured with curl and the
same file. `--tiny` is the smoke run the test suite makes (16 MiB, one run,
no mod_proxy). `cargo bench` runs the criterion micro-benchmarks (codecs, and
the relay with splice vs copy over loopback sockets).

"""

LAST_RUN = """## Last full run

{machine}; {size} MiB file, medians of {runs} runs.

{table}

"""

BENCH_README_REST = """## Reading these numbers

Profiled with `perf record -g` on ftpgate during single 1 GiB transfers
(session 2 of issue 5), and `perf stat` for system calls:

- Plain/plain: 95% (download) and 89% (upload) of ftpgate's CPU time is in
  the kernel: TCP processing for the second loopback hop (softirqs, ACKs,
  skb handling) and splice's page moves; ftpgate's own code and libc are
  4-10%. One GiB takes about 4,700 splice pairs (about 228 KB each) and 1,300
  `epoll_wait` calls, so there is little left to batch. On 2 cores, the
  kernel work of the extra hop is CPU that curl and vsftpd lose; the ratio
  to the direct path varies between runs (downloads 0.71 to 0.91 in five
  runs on this machine, uploads 0.76 to 0.86).
  What would move it: more cores, or no second TCP hop (not possible for a
  proxy that must see the stream).
- TLS legs: AES-GCM (ring, VAES/AVX2) is 25-31% of ftpgate's CPU, the
  kernel's copies to and from user space 15-20%, rustls' own memmove 5-8%,
  malloc/free 2-3% (a buffer per outgoing record). The machine does four
  AES-GCM passes per byte (server, ftpgate twice, client) against two on the
  direct path. What would move it: kTLS (hand rustls' traffic secrets to the
  kernel, then splice between the two kTLS sockets), or rustls' unbuffered
  API to save a copy.
- Uploads to vsftpd over TLS are capped by vsftpd's receiving side (the
  direct FTPS upload is the slowest row); ftpgate beats it by writing full
  16 KiB records, and mod_proxy sits near the same cap, so the ratio to
  mod_proxy cannot reach 1.6 with this backend.
- mod_proxy rows use TLS 1.2 towards vsftpd: with TLS 1.3 its uploads fail with
  426: a TLS 1.3 server sends session tickets after the handshake; on an
  upload data connection the client never reads them, and closing a socket
  with unread data sends a reset that cuts the upload. ftpgate sends no
  tickets on upload data connections for that reason.
- Logins per second come from a Rust client (examples/login_load.rs, 8
  threads). vsftpd's own cost per login (a process, PAM, a TLS handshake)
  caps the direct row, and every proxy in front of it is bound by the same
  backend; `ftpgate_instant_backend` is ftpgate (TLS to the client) in front
  of a backend that answers at once, to show ftpgate's own ceiling.
- Idle-session RSS is measured against a fake backend (vsftpd would need a
  process per session); the top count stays under the file-descriptor hard
  limit of the machine (two descriptors per session).
"""

if __name__ == "__main__":
    main()
