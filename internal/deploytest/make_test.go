package deploytest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// TestMakeDeployTargets checks the Makefile's deployment targets, which need
// a registry and a cluster, by what make would run (make -n), and runs the
// one step that needs neither: the overlay that puts the pushed images into
// config/knative, built with the real kustomize.
func TestMakeDeployTargets(t *testing.T) {
	root := repoRoot(t)
	makeN := func(args ...string) string {
		return string(run(t, root, "make", append([]string{"-n", "--no-print-directory"}, args...)...))
	}
	repo := "KO_DOCKER_REPO=registry.example.org/skao"
	images := makeN("images", repo)
	for _, want := range []string{"ko@v0.19.1 build", "--base-import-paths", "--image-refs", "./functions/stage"} {
		if !strings.Contains(images, want) {
			t.Errorf("make images does not run %q:\n%s", want, images)
		}
	}
	if out, err := tryRun(root, tool(t, "make"), "--no-print-directory", "images", "KO_DOCKER_REPO="); err == nil || !strings.Contains(err.Error(), "set KO_DOCKER_REPO") {
		t.Errorf("make images without KO_DOCKER_REPO should stop with a hint; got %v %s", err, out)
	}
	deploy := makeN("deploy", repo)
	for _, want := range []string{"knative-overlay.sh", "./tools/knative-secrets.sh", "kubectl apply --server-side -k bin/deploy"} {
		if !strings.Contains(deploy, want) {
			t.Errorf("make deploy does not run %q:\n%s", want, deploy)
		}
	}
	if strings.Index(deploy, "knative-secrets.sh") > strings.Index(deploy, "kubectl apply") {
		t.Errorf("make deploy applies before the Secrets exist:\n%s", deploy)
	}
	undeploy := makeN("undeploy")
	for _, f := range []string{"stage", "jupyter", "logs", "eventing", "route"} {
		if !strings.Contains(undeploy, "-f config/knative/"+f+".yaml") {
			t.Errorf("make undeploy does not remove %s:\n%s", f, undeploy)
		}
	}
	if strings.Contains(undeploy, "storage.yaml") || strings.Contains(undeploy, "mysql.yaml") {
		t.Errorf("make undeploy must keep the data:\n%s", undeploy)
	}
	helm := makeN("helm-install", repo)
	for _, want := range []string{"upgrade --install skao-staging-service charts/skao-staging-service", "./tools/helm-image-args.sh bin/deploy/images.txt"} {
		if !strings.Contains(helm, want) {
			t.Errorf("make helm-install does not run %q:\n%s", want, helm)
		}
	}
	cluster := makeN("cluster-test")
	for _, want := range []string{"install-cluster-deps.sh", "go test -tags cluster", "./internal/clustertest"} {
		if !strings.Contains(cluster, want) {
			t.Errorf("make cluster-test does not run %q:\n%s", want, cluster)
		}
	}

	dir := t.TempDir()
	refs := filepath.Join(dir, "images.txt")
	digest := "sha256:" + strings.Repeat("ab", 32)
	lines := "registry.example.org:5000/skao/stage:latest@" + digest + "\n" +
		"registry.example.org:5000/skao/jupyter@" + digest + "\n" +
		"registry.example.org:5000/skao/logs:v1@" + digest + "\n"
	if err := os.WriteFile(refs, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, root, "make", "--no-print-directory", "-s", "deploy-overlay", "DEPLOY_DIR="+dir, "IMAGE_REFS="+refs)
	objs := decodeAll(t, "overlay", run(t, dir, "kustomize", "build", "--load-restrictor", "LoadRestrictionsNone", "."))
	for _, f := range functionNames {
		o, ok := find(objs, "serving.knative.dev/v1", "Service", f)
		if !ok {
			t.Fatalf("the overlay lost the %s function", f)
		}
		want := "registry.example.org:5000/skao/" + f + "@" + digest
		if got := o.Typed.(*servingv1.Service).Spec.Template.Spec.Containers[0].Image; got != want {
			t.Errorf("%s runs %s, want %s", f, got, want)
		}
	}
	if st, _ := find(objs, "apps/v1", "StatefulSet", "mysql"); st.Typed.(*appsv1.StatefulSet).Spec.Template.Spec.Containers[0].Image != "mysql:8.4" {
		t.Error("the overlay changed the MySQL image")
	}

	// The chart gets the same images, by digest.
	args := string(run(t, root, filepath.Join(root, "tools", "helm-image-args.sh"), refs))
	for _, want := range []string{"--set image.repository=registry.example.org:5000/skao/stage --set image.digest=" + digest,
		"--set functions.jupyter.image.repository=registry.example.org:5000/skao/jupyter --set functions.jupyter.image.digest=" + digest,
		"--set functions.logs.image.repository=registry.example.org:5000/skao/logs --set functions.logs.image.digest=" + digest} {
		if !strings.Contains(args, want) {
			t.Errorf("tools/helm-image-args.sh does not give %q: %s", want, args)
		}
	}

	// A reference without a digest would not roll anything out: refused.
	if err := os.WriteFile(refs, []byte("registry.example.org/skao/stage:latest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, script := range []string{"knative-overlay.sh", "helm-image-args.sh"} {
		if _, err := tryRun(root, filepath.Join(root, "tools", script), refs, dir); err == nil || !strings.Contains(err.Error(), "has no digest") {
			t.Errorf("tools/%s accepts an image without a digest: %v", script, err)
		}
	}
}
