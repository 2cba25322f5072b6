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
	if deploy := makeN("deploy", repo); !strings.Contains(deploy, "kubectl apply -k bin/deploy") || !strings.Contains(deploy, "knative-overlay.sh") {
		t.Errorf("make deploy does not apply the overlay:\n%s", deploy)
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
	for _, want := range []string{"upgrade --install skao-staging-service charts/skao-staging-service",
		"image.repository=registry.example.org/skao/stage", "functions.logs.image.repository=registry.example.org/skao/logs",
		"functions.jupyter.image.repository=registry.example.org/skao/jupyter"} {
		if !strings.Contains(helm, want) {
			t.Errorf("make helm-install does not pass %q:\n%s", want, helm)
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
}
