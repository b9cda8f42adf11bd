#!/usr/bin/env bash
# ProFTPD for tests and benchmarks, unpacked beside vsftpd (Debian's proftpd-core
# and vsftpd conflict as packages): downloads the .debs and extracts them into
# /opt/ftpgate-test/proftpd, and installs the libraries they link against.
set -euo pipefail
dest=${FTPGATE_PROFTPD_DIR:-/opt/ftpgate-test/proftpd}
pkgs=(proftpd-core proftpd-mod-crypto proftpd-mod-proxy)
if [ -x "$dest/usr/sbin/proftpd" ] && [ -f "$dest/usr/lib/proftpd/mod_tls.so" ] && [ -f "$dest/usr/lib/proftpd/mod_proxy.so" ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Runtime libraries of proftpd-core, installed normally (they conflict with nothing).
apt-get install -y -qq libhiredis0.14 libmemcached11 libmemcachedutil2 libpcre2-posix3 libsodium23 >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && chmod 777 . && apt-get download "${pkgs[@]}" >/dev/null 2>&1)
mkdir -p "$dest"
for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$dest"; done
"$dest/usr/sbin/proftpd" -v
