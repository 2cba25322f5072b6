package deploytest

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// jupyterUser is a JupyterHub user as the Jupyter images make them: uid
// 1000 in group 100 (users). stranger is in neither.
var (
	jupyterUser = &syscall.Credential{Uid: 1000, Gid: 100, Groups: []uint32{100}}
	stranger    = &syscall.Credential{Uid: 1001, Gid: 1001, Groups: []uint32{1001}}
)

// TestStoragePermissions runs the stage function as the chart runs it (the
// pod's uid, gid and supplementary groups) on a user area prepared as the
// chart prepares it (its Job's own script, run as root with only the
// capabilities the Job is given), stages a file and a directory, and checks
// who can read them: a JupyterHub user of the shared group can, another
// user cannot. Then what the chart avoids: a folder as the kubelet creates a
// hostPath (root:root 0755) makes every local_copy fail, and an owner of
// another uid needs CAP_CHOWN. The test switches users, so it runs as root
// (as make test does).
func TestStoragePermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestStoragePermissions switches users: run it as root (make test does)")
	}
	objs := decodeAll(t, "chart", renderChart(t, baseValues()))
	stage, _ := find(objs, "apps/v1", "Deployment", fullname("stage"))
	pod := stage.Typed.(*appsv1.Deployment).Spec.Template.Spec.SecurityContext
	cred := &syscall.Credential{Uid: uint32(*pod.RunAsUser), Gid: uint32(*pod.RunAsGroup)}
	for _, g := range pod.SupplementalGroups {
		cred.Groups = append(cred.Groups, uint32(g))
	}
	cmObj, _ := find(objs, "v1", "ConfigMap", fullname("config"))
	cm := cmObj.Typed.(*corev1.ConfigMap).Data
	jobs := byKind(objs, "batch/v1", "Job")
	if len(jobs) != 1 {
		t.Fatalf("%d Jobs, want the one that prepares the user area", len(jobs))
	}
	job := jobs[0].Typed.(*batchv1.Job).Spec.Template.Spec.Containers[0]

	// A tree every user may traverse, as a pod's mounts are.
	dir, err := os.MkdirTemp("", "storage-permissions-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	source := filepath.Join(dir, "source")
	must(t, os.MkdirAll(filepath.Join(source, "tree", "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(source, "vis.dat"), []byte("visibilities"), 0o644))
	must(t, os.WriteFile(filepath.Join(source, "tree", "sub", "b.txt"), []byte("bb"), 0o644))
	bin := filepath.Join(dir, "stage")
	copyFile(t, testenv.FunctionBinary(t, "stage"), bin, 0o755)

	// The user area as the kubelet creates a hostPath (root:root 0755),
	// then as the chart's Job leaves it.
	prepared := filepath.Join(dir, "prepared")
	must(t, os.Mkdir(prepared, 0o755))
	runJob(t, job, prepared)
	info, err := os.Stat(prepared)
	must(t, err)
	if st := info.Sys().(*syscall.Stat_t); st.Gid != uint32(sharedGroup) || info.Mode()&os.ModeSetgid == 0 || info.Mode().Perm() != 0o775 {
		t.Fatalf("the Job left the user area %v gid %d, want setgid 0775 of group %d", info.Mode(), st.Gid, sharedGroup)
	}

	f := startAs(t, bin, cred, dir, "prepared", source, cm)
	stageOne(t, f, "vis.dat", "copies/vis.dat", http.StatusOK)
	stageOne(t, f, "tree", "mytree", http.StatusOK)
	for path, want := range map[string][2]uint32{"alice/copies/vis.dat": {0o440, 0}, "alice/mytree": {0o550, 1}, "alice/mytree/sub/b.txt": {0o440, 0}} {
		info, err := os.Lstat(filepath.Join(prepared, path))
		must(t, err)
		st := info.Sys().(*syscall.Stat_t)
		if uint32(info.Mode().Perm()) != want[0] || st.Gid != uint32(sharedGroup) || st.Uid != cred.Uid {
			t.Errorf("%s: mode %v uid %d gid %d, want %o, uid %d, group %d", path, info.Mode(), st.Uid, st.Gid, want[0], cred.Uid, sharedGroup)
		}
	}
	for _, p := range []string{"alice/copies/vis.dat", "alice/mytree/sub/b.txt"} {
		if out, err := runAs(jupyterUser, "cat", filepath.Join(prepared, p)); err != nil {
			t.Errorf("a JupyterHub user (uid 1000, group 100) cannot read %s: %v %s", p, err, out)
		}
		if out, err := runAs(stranger, "cat", filepath.Join(prepared, p)); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("uid 1001 outside group 100 reads %s: %v %s", p, err, out)
		}
	}
	if out, err := runAs(jupyterUser, "ls", filepath.Join(prepared, "alice/mytree/sub")); err != nil || !strings.Contains(out, "b.txt") {
		t.Errorf("a JupyterHub user cannot list a staged folder: %v %s", err, out)
	}

	// As the kubelet leaves a hostPath folder: the function, not root,
	// cannot create the user's area; every local_copy fails.
	must(t, os.Mkdir(filepath.Join(dir, "unprepared"), 0o755))
	f = startAs(t, bin, cred, dir, "unprepared", source, cm)
	if code := stageOne(t, f, "vis.dat", "vis.dat", 0); code == http.StatusOK {
		t.Error("local_copy into a root:root 0755 user area worked: the preparing Job would be useless")
	}

	// Ownership by another uid needs CAP_CHOWN, which the function does not
	// have: the chart refuses such a STAGED_OWNER (TestChartRefuses).
	other := map[string]string{}
	for k, v := range cm {
		other[k] = v
	}
	other["STAGED_OWNER"] = "1000:100"
	f = startAs(t, bin, cred, dir, "prepared", source, other)
	if code := stageOne(t, f, "vis.dat", "chowned.dat", 0); code == http.StatusOK {
		t.Error("STAGED_OWNER=1000:100 worked without CAP_CHOWN: the chart's refusal would be wrong")
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	data, err := os.ReadFile(from)
	must(t, err)
	must(t, os.WriteFile(to, data, mode))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// runJob runs the chart's Job command on dir in place of its mount, as root
// with only the capabilities the Job adds (setpriv bounds them).
func runJob(t *testing.T, c corev1.Container, dir string) {
	t.Helper()
	caps := "-all"
	for _, c := range c.SecurityContext.Capabilities.Add {
		caps += ",+" + strings.ToLower(string(c))
	}
	args := append([]string{"--bounding-set=" + caps, "--inh-caps=-all"}, c.Command[:len(c.Command)-1]...)
	args = append(args, dir) // the last argument is the mount path
	cmd := exec.Command("setpriv", args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	for _, e := range c.Env {
		cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Job's command %v: %v\n%s", cmd.Args, err, out)
	}
}

// startAs runs the stage function as cred on dir/area with the chart's
// settings and an SQLite store of its own.
func startAs(t *testing.T, bin string, cred *syscall.Credential, dir, area, source string, cm map[string]string) string {
	t.Helper()
	db, err := os.MkdirTemp(dir, "db-")
	must(t, err)
	must(t, os.Chown(db, int(cred.Uid), int(cred.Gid)))
	port := testenv.FreePort(t)
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Env = []string{"PATH=/usr/bin:/bin", "PORT=" + strconv.Itoa(port), "HOST=127.0.0.1",
		"DATABASE_URL=sqlite://" + filepath.Join(db, "staging.db"),
		"SOURCE_STORAGE_PATH=" + source, "TARGET_STORAGE_PATH=" + filepath.Join(dir, area)}
	for _, k := range []string{"STAGED_OWNER", "STAGED_FILE_MODE", "STAGED_DIR_MODE", "COPY_WORKERS", "ALLOWED_METHODS"} {
		cmd.Env = append(cmd.Env, k+"="+cm[k])
	}
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	must(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("stage function as uid %d:\n%s", cred.Uid, logs.String())
		}
	})
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	testenv.WaitFor(t, 10*time.Second, "the stage function's /readyz", func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return url
}

// stageOne asks for a local_copy for alice and checks the status (0: any).
func stageOne(t *testing.T, url, source, target string, want int) int {
	t.Helper()
	body := fmt.Sprintf(`{"data":{"local_path_on_storage":%q,"relative_path":%q}}`, source, target)
	resp, err := http.Post(url+"/stage_data?method=local_copy&username=alice", "application/json", strings.NewReader(body))
	must(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if want != 0 && resp.StatusCode != want {
		t.Errorf("local_copy %s: %d %s, want %d", source, resp.StatusCode, b, want)
	}
	return resp.StatusCode
}

// runAs runs a command as another user and returns its output.
func runAs(cred *syscall.Credential, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
