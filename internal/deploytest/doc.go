// Package deploytest checks the deployment files (config/knative, the Helm
// chart charts/skao-staging-service, the func.yaml descriptors and the
// Makefile's deployment targets) with the real helm and kustomize: every
// rendered object must decode strictly into its Kubernetes Go type, Knative
// Services must pass Knative Serving's own validation, Eventing objects are
// checked against Knative's documented fields, and cross-checks make sure
// every environment variable the code reads is set and every chart value
// reaches a rendered object. Its tests are the package; it has no API.
package deploytest
