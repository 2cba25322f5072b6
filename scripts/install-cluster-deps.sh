#!/usr/bin/env bash
# Installs what `make cluster-test` runs: from Debian's packages etcd, and
# containerd, runc, the CNI plugins and busybox for a node; built from the Go
# module proxy into ./bin/cluster (once; then cached) kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet and kubectl (tools/kube),
# Knative Serving's webhook and controller (tools/knative), ko and crane.
# The CRDs come from the module cache (go mod download).
set -euo pipefail
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
# A node for the pods: the runtime, the CNI plugins, and busybox for an image.
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "missing ${need[*]}: run as root, or install them" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
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
for tool in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet; do
	[ -x "$bin/$tool" ] || (cd tools/kube && GOBIN="$bin" go install -ldflags="$stamp" tool)
done
for tool in webhook controller; do
	[ -x "$bin/$tool" ] || (cd tools/knative && GOBIN="$bin" go install tool)
done
# Images without Docker: ko (as make images runs it) and crane (a registry,
# images from files).
[ -x "$bin/ko" ] || GOBIN="$bin" go install github.com/google/ko@v0.19.1
[ -x "$bin/crane" ] || GOBIN="$bin" go install github.com/google/go-containerregistry/cmd/crane@v0.21.7
# The Gateway API release whose standard channel has HTTPRoute timeouts.
go mod download sigs.k8s.io/gateway-api@v1.3.0
