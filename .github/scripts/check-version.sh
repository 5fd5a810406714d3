#!/usr/bin/env bash
# Usage: check-version.sh TAG
# A release tag is `v` + the workspace version in Cargo.toml (every crate shares it, and the
# drift_schedule default image is tagged with it). Prints the version; fails on a mismatch, so a
# tag never publishes binaries or an image that report another version.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag="${1:?usage: check-version.sh TAG}"
version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)"
if [ -z "$version" ]; then
  echo "error: no version in Cargo.toml's [workspace.package]" >&2
  exit 1
fi
if [ "$tag" != "v$version" ]; then
  echo "error: tag $tag does not match Cargo.toml's version $version (expected v$version)" >&2
  exit 1
fi
echo "$version"
