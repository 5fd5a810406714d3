#!/usr/bin/env bash
# Downloads kdeploy release KDEPLOY_VERSION for this machine, verifies its SHA-256 checksum and
# installs the binary into KDEPLOY_INSTALL_DIR (used by action.yml; also usable on its own).
#
#   KDEPLOY_VERSION       required, e.g. 0.1.0
#   KDEPLOY_INSTALL_DIR   where `kdeploy` goes (default: ~/.local/bin)
#   KDEPLOY_SHA256        expected checksum of the archive (optional; the release's SHA256SUMS
#                         is always checked)
#   KDEPLOY_BASE_URL      default https://github.com/kerberos-io/kdeploy/releases/download
#   KDEPLOY_TARGET        the Rust target to install (default: this machine's)
set -euo pipefail

version="${KDEPLOY_VERSION:?KDEPLOY_VERSION is required, e.g. 0.1.0}"
version="${version#v}"
install_dir="${KDEPLOY_INSTALL_DIR:-$HOME/.local/bin}"
base_url="${KDEPLOY_BASE_URL:-https://github.com/kerberos-io/kdeploy/releases/download}"

fail() { echo "setup-kdeploy: $*" >&2; exit 1; }

target() {
  case "$(uname -s)/$(uname -m)" in
    Linux/x86_64) echo x86_64-unknown-linux-gnu ;;
    Linux/aarch64 | Linux/arm64) echo aarch64-unknown-linux-gnu ;;
    Darwin/x86_64) echo x86_64-apple-darwin ;;
    Darwin/arm64) echo aarch64-apple-darwin ;;
    *) fail "no kdeploy release for $(uname -s) $(uname -m); build it with: cargo install --locked --git https://github.com/kerberos-io/kdeploy kdeploy" ;;
  esac
}

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

target="${KDEPLOY_TARGET:-$(target)}"
archive="kdeploy-$version-$target.tar.gz"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "Downloading kdeploy $version ($target)"
curl --fail --silent --show-error --location --retry 3 -o "$work/$archive" "$base_url/v$version/$archive" \
  || fail "cannot download $base_url/v$version/$archive"
curl --fail --silent --show-error --location --retry 3 -o "$work/SHA256SUMS" "$base_url/v$version/SHA256SUMS" \
  || fail "cannot download $base_url/v$version/SHA256SUMS"

actual="$(sha256 "$work/$archive")"
listed="$(awk -v f="$archive" '$2 == f || $2 == "*" f { print $1 }' "$work/SHA256SUMS")"
[ -n "$listed" ] || fail "$archive is not listed in the release's SHA256SUMS"
[ "$actual" = "$listed" ] || fail "checksum mismatch for $archive: SHA256SUMS says $listed, the download is $actual"
if [ -n "${KDEPLOY_SHA256:-}" ] && [ "$actual" != "$KDEPLOY_SHA256" ]; then
  fail "checksum mismatch for $archive: pinned $KDEPLOY_SHA256, the download is $actual"
fi

tar -xzf "$work/$archive" -C "$work"
mkdir -p "$install_dir"
install -m 0755 "$work/kdeploy-$version-$target/kdeploy" "$install_dir/kdeploy"
"$install_dir/kdeploy" version
