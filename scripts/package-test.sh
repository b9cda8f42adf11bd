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
zcat /usr/share/man/man1/ftpgate.1.gz | grep -q '^\.TH ftpgate 1' || fail "man page ftpgate(1) missing"
grep -q 'complete' /usr/share/bash-completion/completions/ftpgate || fail "bash completion missing"
[ -s /usr/share/zsh/vendor-completions/_ftpgate ] && [ -s /usr/share/fish/vendor_completions.d/ftpgate.fish ] || fail "zsh/fish completions missing"
unit=/lib/systemd/system/ftpgate.service
grep -q '^ExecStart=/usr/bin/ftpgate run --config /etc/ftpgate/ftpgate.toml$' $unit || fail "unit does not start /usr/bin/ftpgate"
grep -q '^LoadCredential=server.key:/etc/ftpgate/certs/server.key$' $unit || fail "unit does not hand the key over with LoadCredential="
systemd-analyze verify $unit 2>&1 | grep -q 'ftpgate.service:' && fail "systemd-analyze verify warns: $(systemd-analyze verify $unit 2>&1)"
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
