//go:build cluster

package clustertest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// images are the images the pods run, pushed to a registry on this
// machine: no registry outside is reachable, and no base image can be
// pulled, so each is built from files.
type images struct {
	registry string            // 127.0.0.1:PORT
	refs     string            // what `make images` wrote: the functions' references
	named    map[string]string // pause, busybox, queue: reference by digest
}

// layer writes a tar layer: files (path -> content and mode) and
// symlinks (path -> target).
func layer(t *testing.T, path string, files map[string]fileSpec, links map[string]string) {
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	dirs := map[string]bool{}
	addDirs := func(p string) {
		for d := filepath.Dir(p); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for p := range files {
		addDirs(p)
	}
	for p := range links {
		addDirs(p)
	}
	for d := range dirs {
		must(t, w.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}))
	}
	for p, f := range files {
		must(t, w.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: f.mode, Size: int64(len(f.data))}))
		_, err := w.Write(f.data)
		must(t, err)
	}
	for p, target := range links {
		must(t, w.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777}))
	}
	must(t, w.Close())
	must(t, os.WriteFile(path, b.Bytes(), 0o644))
}

type fileSpec struct {
	data []byte
	mode int64
}

// crane runs the crane CLI (go-containerregistry) and returns its output.
func (c *cluster) crane(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.run(c.dir, binary(t, "crane"), args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// fromFiles pushes an image made of one layer on an empty base and returns
// its reference by digest.
func (c *cluster) fromFiles(t *testing.T, reg, name string, files map[string]fileSpec, links map[string]string, mutate ...string) string {
	t.Helper()
	tarball := filepath.Join(c.dir, name+".tar")
	layer(t, tarball, files, links)
	tag := reg + "/" + name + ":clustertest"
	c.crane(t, "append", "--oci-empty-base", "-f", tarball, "-t", tag)
	ref := c.crane(t, append([]string{"mutate", tag, "--set-platform", "linux/amd64"}, mutate...)...)
	return ref
}

// buildImages starts a registry and pushes to it: a base image for ko (the
// distroless one cannot be pulled here), the functions' images by `make
// images` itself, Knative's queue-proxy built by ko from knative.dev/serving,
// a pause image for the pods' sandboxes and busybox for the storage Job.
func buildImages(t *testing.T, c *cluster) *images {
	port := freePort(t)
	reg := fmt.Sprintf("127.0.0.1:%d", port)
	must(t, os.MkdirAll(filepath.Join(c.dir, "registry"), 0o755))
	c.start(t, "registry", binary(t, "crane"), []string{"registry", "serve", "--address", reg, "--disk", filepath.Join(c.dir, "registry")})
	c.eventually(t, "the registry", 30*time.Second, func() error {
		resp, err := http.Get("http://" + reg + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	img := &images{registry: reg, named: map[string]string{}}
	passwd := "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group := "root:x:0:\nusers:x:100:\nnonroot:x:65532:\n"
	base := c.fromFiles(t, reg, "base", map[string]fileSpec{"etc/passwd": {[]byte(passwd), 0o644}, "etc/group": {[]byte(group), 0o644}}, nil,
		"--user", "65532")

	// The pause program: sleeps until it is told to stop.
	src := filepath.Join(c.dir, "pause.go")
	must(t, os.WriteFile(src, []byte("package main\n\nimport (\n\t\"os\"\n\t\"os/signal\"\n\t\"syscall\"\n)\n\n"+
		"func main() {\n\tc := make(chan os.Signal, 1)\n\tsignal.Notify(c, syscall.SIGTERM, syscall.SIGINT)\n\t<-c\n}\n"), 0o644))
	pauseBin := filepath.Join(c.dir, "pause")
	if out, err := c.run(c.dir, "go", "build", "-o", pauseBin, src); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	pause, err := os.ReadFile(pauseBin)
	must(t, err)
	img.named["pause"] = c.fromFiles(t, reg, "pause", map[string]fileSpec{"pause": {pause, 0o755}}, nil, "--entrypoint", "/pause")

	busybox, err := os.ReadFile("/bin/busybox") // Debian's busybox-static
	must(t, err)
	links := map[string]string{}
	for _, cmd := range []string{"sh", "chgrp", "chmod", "ls", "cat", "stat", "id"} {
		links["bin/"+cmd] = "busybox"
	}
	img.named["busybox"] = c.fromFiles(t, reg, "busybox", map[string]fileSpec{"bin/busybox": {busybox, 0o755}}, links, "--env", "PATH=/bin")

	env := []string{"KO_DEFAULTBASEIMAGE=" + base, "KO_DEFAULTPLATFORMS=linux/amd64"}
	img.refs = filepath.Join(c.dir, "images", "images.txt")
	root := repoRoot(t)
	if out, err := c.runEnv(root, env, "make", "--no-print-directory", "images", "KO="+binary(t, "ko"),
		"KO_DOCKER_REPO="+reg+"/skao", "IMAGE_REFS="+img.refs); err != nil {
		t.Fatalf("make images: %v\n%s", err, out)
	}
	out, err := c.runEnv(filepath.Join(root, "tools", "knative"), append(env, "KO_DOCKER_REPO="+reg+"/knative-queue"),
		binary(t, "ko"), "build", "--bare", "knative.dev/serving/cmd/queue")
	if err != nil {
		t.Fatalf("ko build queue: %v", err)
	}
	img.named["queue"] = strings.TrimSpace(string(out))
	return img
}
