#!/usr/bin/env bash
# Installs what the test suite needs (Debian packages) and runs all of it.
# Needs root: tests create a system user for vsftpd and start real servers on
# loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then exec sudo -E "$0" "$@"; fi
  echo "test.sh: run as root (it installs packages and adds test users)" >&2
  exit 1
fi

need=()
command -v vsftpd >/dev/null || need+=(vsftpd)
command -v curl >/dev/null || need+=(curl)
command -v lftp >/dev/null || need+=(lftp)
command -v flock >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
command -v promtool >/dev/null || need+=(prometheus)
command -v haproxy >/dev/null || need+=(haproxy)
command -v redis-server >/dev/null || need+=(redis-server)
command -v nft >/dev/null || need+=(nftables)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v chromium >/dev/null || need+=(chromium)
command -v man >/dev/null || need+=(man-db)
command -v clamd >/dev/null || need+=(clamav-daemon)
command -v c-icap >/dev/null || need+=(c-icap)
[ -e /usr/lib/x86_64-linux-gnu/c_icap/virus_scan.so ] || need+=(libc-icap-mod-virus-scan)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# ProFTPD (mod_tls, mod_proxy) is unpacked beside vsftpd: the packages conflict.
bash scripts/install-proftpd.sh >/dev/null

cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets

# The Debian package: built, installed, run and purged after the cargo tests,
# since it puts /usr/bin/ftpgate and /etc/ftpgate/ftpgate.toml in place.
bash scripts/package.sh
bash scripts/package-test.sh
