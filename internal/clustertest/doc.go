// Package clustertest installs the deployment files (config/knative through
// the overlay `make deploy` applies, and the Helm chart in both of its modes)
// on a real Kubernetes control plane started by the test: etcd (Debian's
// etcd-server), kube-apiserver and kube-controller-manager built from
// k8s.io/kubernetes v1.34.2 (tools/kube), and Knative Serving's own webhook
// and controller built from knative.dev/serving v0.42.2 (tools/knative),
// with the CRDs of Knative Serving, Knative Eventing and the Gateway API.
// It then checks what that control plane made of them: every object
// admitted, Knative's defaults and validation applied by its webhook,
// Services reconciled into Revisions and Deployments whose pods the
// ReplicaSet controller creates under the Pod Security admission, and the
// pod specs (probes, security contexts, mounts, queue-proxy). No kubelet
// runs: pods are created and stay Pending (README.md, Development).
//
// Its tests carry the build tag `cluster`; `make cluster-test` builds the
// components and runs them. Its tests are the package; it has no API.
package clustertest
