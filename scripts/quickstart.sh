#!/usr/bin/env bash
# Starts a real vsftpd on loopback with a demo user, then ftpgate in front of it,
# and prints the curl commands to use it. Ctrl-C stops both.
#
#   scripts/quickstart.sh           interactive: runs until Ctrl-C
#   scripts/quickstart.sh --check   downloads and uploads once through ftpgate, then stops
#
# Needs root (apt-get, useradd). Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

check=no
[ "${1:-}" = "--check" ] && check=yes
demo_user=ftpdemo
demo_pass=ftpdemo-pass

if ! command -v vsftpd >/dev/null; then
  echo "installing vsftpd (apt-get)..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq vsftpd >/dev/null
fi
command -v curl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null

# The test suite passes its own build in FTPGATE_BIN to save a release build.
bin=${FTPGATE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=./target/release/ftpgate
fi

id -u "$demo_user" >/dev/null 2>&1 || useradd -M -d / -s /usr/sbin/nologin "$demo_user"
echo "$demo_user:$demo_pass" | chpasswd
[ -f /etc/pam.d/ftpgate-demo ] || printf 'auth required pam_unix.so\naccount required pam_unix.so\nsession required pam_permit.so\n' >/etc/pam.d/ftpgate-demo
mkdir -p /var/run/vsftpd/empty

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d /tmp/ftpgate-quickstart.XXXXXX)
chmod 755 "$work"
mkdir "$work/root"
echo "hello from the backend behind ftpgate" >"$work/root/hello.txt"
chown -R "$demo_user" "$work/root"
backend_port=$(free_port)
if [ "$check" = yes ]; then gate_port=$(free_port); else gate_port=${FTPGATE_PORT:-2121}; fi

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
"$bin" run --listen "127.0.0.1:$gate_port" --backend "127.0.0.1:$backend_port" \
  --passive-ports 50000-50100 &
pids+=($!)

for _ in $(seq 100); do
  curl -s --max-time 1 "ftp://127.0.0.1:$gate_port/" -u "$demo_user:$demo_pass" -o /dev/null && break
  sleep 0.1
done

url="ftp://127.0.0.1:$gate_port"
if [ "$check" = yes ]; then
  got=$(curl -sS -u "$demo_user:$demo_pass" "$url/hello.txt")
  [ "$got" = "hello from the backend behind ftpgate" ] || { echo "download through ftpgate failed: $got"; exit 1; }
  echo "uploaded through ftpgate" | curl -sS -u "$demo_user:$demo_pass" -T - "$url/up.txt"
  [ "$(cat "$work/root/up.txt")" = "uploaded through ftpgate" ] || { echo "upload through ftpgate failed"; exit 1; }
  echo "quickstart check passed"
  exit 0
fi

cat <<MSG

ftpgate is listening on 127.0.0.1:$gate_port in front of vsftpd on 127.0.0.1:$backend_port.
Try:
  curl -u $demo_user:$demo_pass $url/hello.txt
  curl -u $demo_user:$demo_pass -T README.md $url/README.md
  curl -u $demo_user:$demo_pass $url/
  lftp -u $demo_user,$demo_pass $url
Ctrl-C stops both.
MSG
wait
