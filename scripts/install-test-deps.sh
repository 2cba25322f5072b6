#!/usr/bin/env bash
# Installs, as root from Debian's packages, the real servers the tests start:
# MariaDB, Chromium for the browser tests, and JupyterHub (with its proxy and
# single-user servers) for jupyter_copy. Does nothing for what is already there.
set -euo pipefail
need=()
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium) # the web page's browser tests
command -v jupyterhub >/dev/null 2>&1 || need+=(jupyterhub) # jupyter_copy against a real hub and its servers
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "missing ${need[*]}: run as root, or install them" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The deployment checks run the real helm and kustomize, built from the Go
# module proxy into ./bin (not in go.mod: their Kubernetes modules clash).
cd "$(dirname "$0")/.."
[ -x bin/helm ] || GOBIN="$PWD/bin" go install helm.sh/helm/v3/cmd/helm@v3.22.0
[ -x bin/kustomize ] || GOBIN="$PWD/bin" go install sigs.k8s.io/kustomize/kustomize/v5@v5.8.1
