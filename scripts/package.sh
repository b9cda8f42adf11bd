#!/usr/bin/env bash
# Builds the Debian package target/debian/ftpgate_VERSION_amd64.deb with
# cargo-deb: /usr/bin/ftpgate, the systemd unit (deploy/ftpgate.service with
# the packaged path), /etc/ftpgate/ftpgate.toml as a conffile, the man page
# and shell completions generated from the binary's own clap definitions.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null; then
  echo "package.sh: installing cargo-deb (cargo install cargo-deb --locked)"
  cargo install cargo-deb --locked --quiet
fi
echo "package.sh: building the release binary"
cargo build --release --locked
mkdir -p target/package
bin=target/release/ftpgate
rm -rf target/package/man
"$bin" man --dir target/package/man >/dev/null
gzip -9n target/package/man/*.1
"$bin" completions bash > target/package/ftpgate.bash
"$bin" completions zsh > target/package/_ftpgate
"$bin" completions fish > target/package/ftpgate.fish
sed 's#/usr/local/bin/ftpgate#/usr/bin/ftpgate#g' deploy/ftpgate.service > target/package/ftpgate.service
deb=$(cargo deb --no-build --locked --quiet)
echo "package.sh: built ${deb#"$PWD/"}"
