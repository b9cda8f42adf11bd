#!/usr/bin/env bash
# Installs the package scripts/package.sh built, checks what it put where and
# that the binary runs with the shipped configuration, then purges it.
# Run by scripts/test.sh after the cargo tests (it installs /usr/bin/ftpgate
# and /etc/ftpgate/ftpgate.toml, which nothing else may see meanwhile).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
deb="target/debian/ftpgate_${version}_amd64.deb"
fail() { echo "package test FAILED: $*" >&2; exit 1; }
[ -f "$deb" ] || fail "$deb missing: run scripts/package.sh"
if [ -e /usr/bin/ftpgate ] || [ -e /etc/ftpgate ]; then
  dpkg -s ftpgate >/dev/null 2>&1 || fail "/usr/bin/ftpgate or /etc/ftpgate exist and are not from the package; not replacing them"
fi
purge() { dpkg --purge ftpgate >/dev/null 2>&1 || true; }
trap purge EXIT

dpkg -i "$deb" >/dev/null
[ "$(dpkg-query -W -f='${Status}' ftpgate)" = "install ok installed" ] || fail "dpkg does not list ftpgate as installed"
[ "$(/usr/bin/ftpgate --version)" = "ftpgate $version" ] || fail "ftpgate --version: $(/usr/bin/ftpgate --version)"
out=$(/usr/bin/ftpgate check --config /etc/ftpgate/ftpgate.toml) || fail "ftpgate check on the shipped configuration"
grep -q "configuration OK" <<<"$out" || fail "check did not say OK: $out"
# With no --config, the packaged file is the default.
/usr/bin/ftpgate check >/dev/null || fail "ftpgate check without --config does not read /etc/ftpgate/ftpgate.toml"
grep -qx /etc/ftpgate/ftpgate.toml /var/lib/dpkg/info/ftpgate.conffiles || fail "ftpgate.toml is not a conffile"
[ "$(stat -c %a /etc/ftpgate/certs/server.key)" = 600 ] || fail "postinst did not make a 0600 key"
[ ! -e /etc/ftpgate/certs/ca.key ] || fail "postinst left the CA's private key on the edge host"
zcat /usr/share/man/man1/ftpgate.1.gz | grep -q '^\.TH ftpgate 1' || fail "man page ftpgate(1) missing"
# Every page ftpgate(1) refers to is installed, and the sections an operator
# looks for are there.
page=$(MANWIDTH=100 man -l /usr/share/man/man1/ftpgate.1.gz 2>/dev/null)
for section in NAME SYNOPSIS DESCRIPTION OPTIONS SUBCOMMANDS FILES SIGNALS "EXIT STATUS" ENVIRONMENT EXAMPLES "SEE ALSO"; do
  grep -q "^$section" <<<"$page" || fail "ftpgate(1) has no $section section"
done
for ref in $(grep -o 'ftpgate-[a-z-]*(1)' <<<"$page" | sort -u); do
  [ -e "/usr/share/man/man1/${ref%(1)}.1.gz" ] || fail "ftpgate(1) refers to $ref, which is not installed"
done
grep -q 'complete' /usr/share/bash-completion/completions/ftpgate || fail "bash completion missing"
[ -s /usr/share/zsh/vendor-completions/_ftpgate ] && [ -s /usr/share/fish/vendor_completions.d/ftpgate.fish ] || fail "zsh/fish completions missing"
unit=/lib/systemd/system/ftpgate.service
grep -q '^ExecStart=/usr/bin/ftpgate run --config /etc/ftpgate/ftpgate.toml$' $unit || fail "unit does not start /usr/bin/ftpgate"
grep -q '^LoadCredential=server.key:/etc/ftpgate/certs/server.key$' $unit || fail "unit does not hand the key over with LoadCredential="
# verify's own exit status counts, and so do its warnings about the unit.
verify_out=$(systemd-analyze verify $unit 2>&1) || fail "systemd-analyze verify failed: $verify_out"
grep -q 'ftpgate.service:' <<<"$verify_out" && fail "systemd-analyze verify warns: $verify_out"
grep -q '^RuntimeDirectory=ftpgate$' $unit || fail "unit does not make /run/ftpgate for the admin socket"

# The service as systemd starts it: an unprivileged user, /run/ftpgate made
# for it (RuntimeDirectory=, 0700), the key in $CREDENTIALS_DIRECTORY, the
# shipped configuration. Only the listener and metrics move to free loopback
# ports (the shipped ones are 0.0.0.0:21 and 9121). It must greet, make its
# admin socket under /run/ftpgate, and remove it when stopped.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); mport=$(free_port)
[ -e /run/ftpgate ] && fail "/run/ftpgate exists already; not touching it"
install -d -m 0700 -o nobody -g nogroup /run/ftpgate
creds=$(mktemp -d); cp /etc/ftpgate/certs/server.pem /etc/ftpgate/certs/server.key "$creds"/; chown -R nobody:nogroup "$creds"; chmod 0700 "$creds"
setpriv --reuid nobody --regid nogroup --clear-groups env CREDENTIALS_DIRECTORY="$creds" \
  /usr/bin/ftpgate run --config /etc/ftpgate/ftpgate.toml --listen "127.0.0.1:$port" --metrics "127.0.0.1:$mport" \
  >"$creds.log" 2>&1 &
pid=$!
stop_service() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf /run/ftpgate "$creds" "$creds.log"; purge; }
trap stop_service EXIT
greeting=""
for _ in $(seq 1 100); do
  greeting=$(python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1',$port),timeout=2); print(s.recv(200).decode().strip())" 2>/dev/null) && break
  sleep 0.1
done
[[ "$greeting" == 220* ]] || fail "the service as its unit runs it did not greet: $(cat "$creds.log")"
[ -S /run/ftpgate/admin.sock ] || fail "no admin socket in /run/ftpgate: $(cat "$creds.log")"
[ "$(stat -c %U /run/ftpgate/admin.sock)" = nobody ] || fail "the admin socket is not the service user's"
kill -TERM "$pid"; wait "$pid" || fail "the service did not stop cleanly on SIGTERM: $(cat "$creds.log")"
[ ! -e /run/ftpgate/admin.sock ] || fail "the admin socket was left after a clean stop"
rm -rf /run/ftpgate "$creds" "$creds.log"
trap purge EXIT
# The key as the unit hands it over: from $CREDENTIALS_DIRECTORY by file name,
# while the configuration names the file where it lives.
tmp=$(mktemp -d)
printf '[[listener]]\naddress = "127.0.0.1:2121"\ntls = "explicit"\n[backend]\naddress = "127.0.0.1:21"\n[tls]\ncert = "/etc/ftpgate/certs/server.pem"\nkey = "/nonexistent/server.key"\n' > "$tmp/tls.toml"
if /usr/bin/ftpgate check --config "$tmp/tls.toml" >/dev/null 2>&1; then fail "a missing key passed the check"; fi
CREDENTIALS_DIRECTORY=/etc/ftpgate/certs /usr/bin/ftpgate check --config "$tmp/tls.toml" >/dev/null || fail "the key was not read from \$CREDENTIALS_DIRECTORY"
rm -rf "$tmp"

trap - EXIT
dpkg --purge ftpgate >/dev/null
[ ! -e /usr/bin/ftpgate ] || fail "/usr/bin/ftpgate left after purge"
[ ! -e /etc/ftpgate ] || fail "/etc/ftpgate left after purge"
echo "package test: $deb installs, runs ftpgate $version with its configuration, and purges cleanly"
