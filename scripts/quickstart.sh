#!/usr/bin/env bash
# Starts a real vsftpd on loopback that requires FTPS with session reuse (as
# strict servers do), then ftpgate in front of it with two listeners: plain
# FTP (a legacy client, secured towards the backend by ftpgate) and explicit
# FTPS with certificates from `ftpgate certs init`. Prints commands that work.
#
#   scripts/quickstart.sh           interactive: runs until Ctrl-C
#   scripts/quickstart.sh --check   downloads and uploads once on each listener, then stops
#   scripts/quickstart.sh --remove  removes what it made: the ftpdemo user, its PAM file and
#                                   any run folder left behind (config, certificates, share)
#
# Ports: FTPGATE_PORT (plain, default 2121) and FTPGATE_TLS_PORT (explicit
# FTPS, default FTPGATE_PORT+1). Needs root (apt-get, useradd); everything
# listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then exec sudo -E "$0" "$@"; fi
  echo "quickstart: run as root (it installs vsftpd and adds a demo user)" >&2
  exit 1
fi

check=no
[ "${1:-}" = "--check" ] && check=yes
demo_user=ftpdemo
demo_pass=ftpdemo-pass

if [ "${1:-}" = "--remove" ]; then
  # Only what this script makes: the demo user, its PAM service, run folders.
  if id -u "$demo_user" >/dev/null 2>&1; then userdel "$demo_user" && echo "quickstart: removed user $demo_user"; fi
  if [ -f /etc/pam.d/ftpgate-demo ]; then rm -f /etc/pam.d/ftpgate-demo && echo "quickstart: removed /etc/pam.d/ftpgate-demo"; fi
  for d in /tmp/ftpgate-quickstart.*; do
    [ -d "$d" ] && rm -rf "$d" && echo "quickstart: removed $d"
  done
  echo "quickstart: nothing of the quick start is left"
  exit 0
fi

apt_install() {
  # Waits for another apt/dpkg run (unattended upgrades) instead of failing.
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >/dev/null
}
need=()
command -v vsftpd >/dev/null || need+=(vsftpd)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "quickstart: installing ${need[*]} (apt-get)..."
  apt_install "${need[@]}"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# As a server binds (SO_REUSEADDR): connections in TIME_WAIT do not make a port busy.
port_free() { python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1",int(sys.argv[1])))' "$1" 2>/dev/null; }

backend_port=$(free_port)
if [ "$check" = yes ]; then
  gate_port=$(free_port)
  tls_port=$(free_port)
else
  gate_port=${FTPGATE_PORT:-2121}
  tls_port=${FTPGATE_TLS_PORT:-$((gate_port + 1))}
  for p in "$gate_port" "$tls_port"; do
    if ! port_free "$p"; then
      echo "quickstart: port $p on 127.0.0.1 is in use by another program." >&2
      echo "  Pick free ports, e.g.: FTPGATE_PORT=2221 scripts/quickstart.sh (FTPS then uses 2222, or set FTPGATE_TLS_PORT)" >&2
      exit 1
    fi
  done
fi

# The test suite passes its own build in FTPGATE_BIN to save a release build.
bin=${FTPGATE_BIN:-}
if [ -z "$bin" ]; then
  echo "quickstart: building ftpgate (release; the first build takes a few minutes)..."
  cargo build --release
  bin=./target/release/ftpgate
fi

id -u "$demo_user" >/dev/null 2>&1 || useradd -M -d / -s /usr/sbin/nologin "$demo_user"
echo "$demo_user:$demo_pass" | chpasswd
[ -f /etc/pam.d/ftpgate-demo ] || printf 'auth required pam_unix.so\naccount required pam_unix.so\nsession required pam_permit.so\n' >/etc/pam.d/ftpgate-demo
mkdir -p /var/run/vsftpd/empty

work=$(mktemp -d /tmp/ftpgate-quickstart.XXXXXX)
chmod 755 "$work"
mkdir "$work/root"
echo "hello from the backend behind ftpgate" >"$work/root/hello.txt"
chown -R "$demo_user" "$work/root"
certs="$work/certs"
"$bin" certs init --dir "$certs" --name 127.0.0.1 --name localhost >/dev/null
# vsftpd reads its key after dropping privileges: it gets a readable copy.
install -m 0644 "$certs/server.key" "$work/vsftpd.key"

cat >"$work/vsftpd.conf" <<CONF
listen=YES
listen_address=127.0.0.1
listen_port=$backend_port
background=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
chroot_local_user=YES
allow_writeable_chroot=YES
local_root=$work/root
pam_service_name=ftpgate-demo
check_shell=NO
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
pasv_min_port=40000
pasv_max_port=40100
ssl_enable=YES
rsa_cert_file=$certs/server.pem
rsa_private_key_file=$work/vsftpd.key
force_local_logins_ssl=YES
force_local_data_ssl=YES
require_ssl_reuse=YES
ssl_ciphers=HIGH
CONF

token="ftpgate quickstart $$"
cat >"$work/ftpgate.toml" <<CONF
[[listener]]
address = "127.0.0.1:$gate_port"

[[listener]]
address = "127.0.0.1:$tls_port"
tls = "explicit"

[tls]
cert = "$certs/server.pem"
key = "$certs/server.key"

[backend]
address = "127.0.0.1:$backend_port"
tls = "explicit"
ca = "$certs/ca.pem"

[passive]
ports = "50000-50100"

[server]
banner = "$token"
CONF

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

vsftpd "$work/vsftpd.conf" &
pids+=($!)
# ftpgate starts once vsftpd answers, so its first lines are not a failed
# backend probe.
for _ in $(seq 100); do
  python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),1); s.settimeout(1); sys.exit(0 if s.recv(4).startswith(b"220") else 1)' "$backend_port" 2>/dev/null && break
  sleep 0.1
done
"$bin" run --config "$work/ftpgate.toml" &
gate_pid=$!
pids+=("$gate_pid")

# Ready means ftpgate itself greets on both ports (its banner carries this
# run's token), not merely that something answers there.
greets() { python3 - "$1" "$token" <<'PY'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)
    s.settimeout(1)
    sys.exit(0 if sys.argv[2].encode() in s.recv(200) else 1)
except OSError:
    sys.exit(1)
PY
}
for _ in $(seq 100); do
  if ! kill -0 "$gate_pid" 2>/dev/null; then
    echo "quickstart: ftpgate exited; see its message above" >&2
    exit 1
  fi
  greets "$gate_port" && greets "$tls_port" && break
  sleep 0.1
done
if ! greets "$gate_port" || ! greets "$tls_port"; then
  echo "quickstart: ftpgate did not greet on 127.0.0.1:$gate_port and :$tls_port within 10 s" >&2
  exit 1
fi

url="ftp://127.0.0.1:$gate_port"
tls_url="ftp://127.0.0.1:$tls_port"
ca="$certs/ca.pem"
if [ "$check" = yes ]; then
  want="hello from the backend behind ftpgate"
  got=$(curl -sS -u "$demo_user:$demo_pass" "$url/hello.txt")
  [ "$got" = "$want" ] || { echo "plain download through ftpgate failed: $got"; exit 1; }
  got=$(curl -sS --ssl-reqd --cacert "$ca" -u "$demo_user:$demo_pass" "$tls_url/hello.txt")
  [ "$got" = "$want" ] || { echo "FTPS download through ftpgate failed: $got"; exit 1; }
  echo "uploaded through ftpgate" | curl -sS -u "$demo_user:$demo_pass" -T - "$url/up.txt"
  [ "$(cat "$work/root/up.txt")" = "uploaded through ftpgate" ] || { echo "plain upload through ftpgate failed"; exit 1; }
  echo "uploaded over FTPS" | curl -sS --ssl-reqd --cacert "$ca" -u "$demo_user:$demo_pass" -T - "$tls_url/up2.txt"
  [ "$(cat "$work/root/up2.txt")" = "uploaded over FTPS" ] || { echo "FTPS upload through ftpgate failed"; exit 1; }
  echo "quickstart check passed (plain and explicit FTPS)"
  exit 0
fi

cat <<MSG

ftpgate is running in front of vsftpd on 127.0.0.1:$backend_port, which requires FTPS
with session reuse. ftpgate speaks TLS to it on every connection, whatever the client does.

Plain FTP on 127.0.0.1:$gate_port (a legacy client; the backend leg is still TLS):
  curl -u $demo_user:$demo_pass $url/hello.txt
  curl -u $demo_user:$demo_pass -T README.md $url/README.md
  lftp -u $demo_user,$demo_pass -e 'set ftp:ssl-allow no; ls; bye' $url

Explicit FTPS on 127.0.0.1:$tls_port (certificates from 'ftpgate certs init' in $certs):
  curl --ssl-reqd --cacert $ca -u $demo_user:$demo_pass $tls_url/hello.txt
  lftp -u $demo_user,$demo_pass -e 'set ssl:ca-file $ca; set ftp:ssl-force yes; ls; bye' $tls_url

Python's ftplib, with data connections that resume the control session (ftpgate
requires that by default, as vsftpd and ProFTPD do; stock FTP_TLS does not):
python3 - <<'PY'
import ftplib, ssl
class FTPS(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        return self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session), size
f = FTPS(context=ssl.create_default_context(cafile='$ca'))
f.connect('127.0.0.1', $tls_port); f.login('$demo_user', '$demo_pass'); f.prot_p(); print(f.nlst()); f.quit()
PY

Ctrl-C stops both. scripts/quickstart.sh --remove removes the demo user and its PAM file.
MSG
wait
