#!/usr/bin/env bash
# Installs what `make cluster-test` runs: etcd from Debian's etcd-server, and,
# built from the Go module proxy into ./bin/cluster (once; then cached),
# kube-apiserver, kube-controller-manager and kubectl (tools/kube) and
# Knative Serving's webhook and controller (tools/knative). Their CRDs and
# the Gateway API's come from the module cache (go mod download).
set -euo pipefail
if ! command -v etcd >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then
		echo "missing etcd-server: run as root, or install it" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi
cd "$(dirname "$0")/.."
bin=$PWD/bin/cluster
mkdir -p "$bin"
# The release's version, stamped as Kubernetes' own build does: Knative
# refuses an API server that reports the unstamped v0.0.0-master+$Format:%H$.
kube=$(cd tools/kube && go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=${kube#v1.}
minor=${minor%%.*}
stamp=
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	stamp="$stamp -X $pkg.gitVersion=$kube -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
for tool in kube-apiserver kube-controller-manager kubectl; do
	[ -x "$bin/$tool" ] || (cd tools/kube && GOBIN="$bin" go install -ldflags="$stamp" tool)
done
for tool in webhook controller; do
	[ -x "$bin/$tool" ] || (cd tools/knative && GOBIN="$bin" go install tool)
done
# The Gateway API release whose standard channel has HTTPRoute timeouts.
go mod download sigs.k8s.io/gateway-api@v1.3.0
