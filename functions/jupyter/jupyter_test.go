package main

import (
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/cetest"
	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/events"
)

// TestCopyThroughStage covers what a user gets through the public
// /stage_data: text, binary of several chunks (odd length, so base64
// padding is exercised), directory trees, repeats, and the records.
func TestCopyThroughStage(t *testing.T) {
	hub := testenv.Hub(t)
	s := startStack(t, hub, nil, nil)
	user := hub.NewHubUser(t, "copier", false)
	hub.StartServer(t, user)
	home := hub.Home(user)

	t.Run("text file", func(t *testing.T) {
		src := s.write(t, "notes/hello.txt", []byte("Hello, Jupyter\nline two\n"))
		r := s.stage(t, user, src, "staged/hello.txt", "")
		expect(t, r, http.StatusOK, "message", "Data staged for user "+user+" with method jupyter_copy")
		if b, err := os.ReadFile(filepath.Join(home, "staged/hello.txt")); err != nil || string(b) != "Hello, Jupyter\nline two\n" {
			t.Fatalf("workspace holds %q, %v", b, err)
		}
		op := s.operation(t, r.Str("id"))
		if op["method"] != "jupyter_copy" || op["status"] != "success" || op["username"] != user || op["bytes"] != float64(24) {
			t.Fatalf("record %v", op)
		}
		again := s.stage(t, user, src, "staged/hello.txt", "")
		expect(t, again, http.StatusOK, "message", "Data already available at staged/hello.txt in the Jupyter workspace of "+user)
	})

	t.Run("binary file in chunks", func(t *testing.T) {
		const size = 20<<20 + 7 // three 8 MiB chunks, the last one odd
		src := s.writeRandom(t, "bin/random.bin", size)
		r := s.stage(t, user, src, "data/random.bin", "")
		expect(t, r, http.StatusOK, "status", "success")
		if testenv.FileSum(t, filepath.Join(home, "data/random.bin")) != testenv.FileSum(t, filepath.Join(s.Source, src)) {
			t.Fatal("sha256 of the workspace copy differs from the source")
		}
	})

	t.Run("directory tree", func(t *testing.T) {
		s.write(t, "obs/a.txt", []byte("a"))
		s.write(t, "obs/cal/gains.txt", []byte("gain table"))
		s.writeRandom(t, "obs/cal/deep/vis.bin", 9<<20)
		s.write(t, "obs/empty.txt", nil)
		must(t, os.MkdirAll(filepath.Join(s.Source, "obs/nothing-yet"), 0o755))
		r := s.stage(t, user, "obs", "projects/obs-1", "")
		expect(t, r, http.StatusOK, "status", "success")
		for _, f := range []string{"a.txt", "cal/gains.txt", "cal/deep/vis.bin", "empty.txt"} {
			if testenv.FileSum(t, filepath.Join(home, "projects/obs-1", f)) != testenv.FileSum(t, filepath.Join(s.Source, "obs", f)) {
				t.Errorf("%s differs", f)
			}
		}
		if fi, err := os.Stat(filepath.Join(home, "projects/obs-1/nothing-yet")); err != nil || !fi.IsDir() {
			t.Errorf("empty folder not staged: %v", err)
		}
		again := s.stage(t, user, "obs", "projects/obs-1", "")
		expect(t, again, http.StatusOK, "message", "Data already available at projects/obs-1 in the Jupyter workspace of "+user)
		s.write(t, "obs/new.txt", []byte("new"))
		conflict := s.stage(t, user, "obs", "projects/obs-1", "")
		expect(t, conflict, http.StatusConflict, "", "")
	})

	// notebook 6.4 refuses a rename when the character of the relative path
	// at len(root directory) is a dot; these names are built to hit it.
	t.Run("names the notebook rename trips on", func(t *testing.T) {
		cut := len(home)
		src := s.write(t, "trip.txt", []byte("trip"))
		top := strings.Repeat("a", cut) + ".txt"             // only a direct upload helps
		nested := "d/" + strings.Repeat("b", cut-2) + ".txt" // a doubled separator helps
		for _, rel := range []string{top, nested} {
			expect(t, s.stage(t, user, src, rel, ""), http.StatusOK, "status", "success")
			if b, err := os.ReadFile(filepath.Join(home, rel)); err != nil || string(b) != "trip" {
				t.Fatalf("%s holds %q, %v", rel, b, err)
			}
		}
	})

	t.Run("conflicts and refusals", func(t *testing.T) {
		src := s.write(t, "c/one.txt", []byte("one"))
		must(t, os.WriteFile(filepath.Join(home, "taken.txt"), []byte("someone else's"), 0o644))
		expect(t, s.stage(t, user, src, "taken.txt", ""), http.StatusConflict, "detail",
			"A different file or folder already exists at taken.txt in the Jupyter workspace of "+user)
		if b, _ := os.ReadFile(filepath.Join(home, "taken.txt")); string(b) != "someone else's" {
			t.Fatal("a conflicting file was overwritten")
		}
		expect(t, s.stage(t, user, src, "taken.txt/below", ""), http.StatusConflict, "", "")
		expect(t, s.stage(t, user, "../../etc/passwd", "x", ""), http.StatusForbidden, "", "")
		expect(t, s.stage(t, user, "/etc/passwd", "x", ""), http.StatusForbidden, "", "")
		expect(t, s.stage(t, user, src, "../escape.txt", ""), http.StatusForbidden, "", "")
		expect(t, s.stage(t, user, src, "/tmp/escape.txt", ""), http.StatusForbidden, "", "")
		expect(t, s.stage(t, user, "c/missing", "x", ""), http.StatusBadRequest, "detail", "Source path does not exist: c/missing")
		expect(t, s.stage(t, user, src, ".hidden/x", ""), http.StatusBadRequest, "", "")
	})

	if left := testenv.Temps(home, "skao-staging-", ".local"); len(left) != 0 {
		t.Fatalf("temporary uploads left in the workspace: %v", left)
	}
}

// TestStartsStoppedServer stages for a user whose server is not running:
// the function starts it and waits for it.
func TestStartsStoppedServer(t *testing.T) {
	hub := testenv.Hub(t)
	s := startStack(t, hub, nil, nil)
	user := hub.NewHubUser(t, "sleeper", false)
	if hub.ServerRunning(t, user) {
		t.Fatal("server running before the test")
	}
	src := s.write(t, "wake.txt", []byte("wake up"))
	expect(t, s.stage(t, user, src, "wake.txt", ""), http.StatusOK, "status", "success")
	if !hub.ServerRunning(t, user) {
		t.Fatal("server not running after the staging")
	}
	if b, _ := os.ReadFile(filepath.Join(hub.Home(user), "wake.txt")); string(b) != "wake up" {
		t.Fatalf("workspace holds %q", b)
	}
}

// TestHubErrors: an unknown user, a bad service token, a user's own token
// (which wins), and a hub that is down.
func TestHubErrors(t *testing.T) {
	hub := testenv.Hub(t)
	s := startStack(t, hub, nil, nil)
	src := s.write(t, "f.txt", []byte("f"))

	expect(t, s.stage(t, "ghost", src, "f.txt", ""), http.StatusNotFound, "detail", "JupyterHub user ghost not found")

	bad := startStack(t, hub, nil, map[string]string{"JUPYTERHUB_API_TOKEN": "not-the-token"})
	bsrc := bad.write(t, "f.txt", []byte("f"))
	user := hub.NewHubUser(t, "tokenuser", false)
	r := bad.stage(t, user, bsrc, "f.txt", "")
	expect(t, r, http.StatusBadGateway, "detail", "JupyterHub rejected the service token (JUPYTERHUB_API_TOKEN)")
	if strings.Contains(string(r.Body), "not-the-token") || strings.Contains(bad.Jupyter.Logs()+bad.Stage.Logs(), "not-the-token") {
		t.Fatal("the token shows in an answer or a log")
	}
	// The user's own token takes precedence over the (bad) service token.
	tok := hub.UserToken(t, user)
	expect(t, bad.stage(t, user, bsrc, "f.txt", "&jupyter_token="+tok), http.StatusOK, "status", "success")
	if strings.Contains(bad.Jupyter.Logs()+bad.Stage.Logs(), tok) {
		t.Fatal("the user's token shows in a log")
	}
	other := hub.NewHubUser(t, "tokenother", false)
	// Someone else's token never goes to the user's server.
	expect(t, bad.stage(t, other, bsrc, "f.txt", "&jupyter_token="+tok), http.StatusForbidden,
		"detail", "jupyter_token belongs to "+user+", not "+other)

	down := testenv.HubFor(t)
	ds := startStack(t, down, nil, nil)
	dsrc := ds.write(t, "f.txt", []byte("f"))
	duser := down.NewHubUser(t, "downuser", false)
	down.Stop()
	r = ds.stage(t, duser, dsrc, "f.txt", "")
	expect(t, r, http.StatusServiceUnavailable, "detail", "JupyterHub is unreachable at "+down.URL)
	if n := ds.countOperations(t, duser); n != 1 {
		t.Fatalf("%d records of the failed staging, want 1", n)
	}
}

// TestLargeFileMemory uploads 200 MiB and checks the jupyter function's
// peak memory stays flat.
func TestLargeFileMemory(t *testing.T) {
	hub := testenv.Hub(t)
	s := startStack(t, hub, nil, nil)
	user := hub.NewHubUser(t, "bigdata", false)
	hub.StartServer(t, user)
	src := s.writeRandom(t, "big.bin", 200<<20)
	before := peakRSS(t, s.Jupyter.Pid())
	expect(t, s.stage(t, user, src, "big.bin", ""), http.StatusOK, "status", "success")
	peak := peakRSS(t, s.Jupyter.Pid())
	if testenv.FileSum(t, filepath.Join(hub.Home(user), "big.bin")) != testenv.FileSum(t, filepath.Join(s.Source, src)) {
		t.Fatal("sha256 differs")
	}
	t.Logf("jupyter function peak RSS: %d MiB before, %d MiB after a 200 MiB upload", before>>20, peak>>20)
	if peak > 64<<20 {
		t.Fatalf("peak RSS %d MiB, want at most 64 MiB", peak>>20)
	}
}

// TestFailedUploadLeavesNoPartialFile kills the user's server in the middle
// of an upload: the operation fails and the target name never appears.
func TestFailedUploadLeavesNoPartialFile(t *testing.T) {
	hub := testenv.Hub(t)
	s := startStack(t, hub, nil, nil)
	user := hub.NewHubUser(t, "interrupted", false)
	hub.StartServer(t, user)
	home := hub.Home(user)
	src := s.writeRandom(t, "big.bin", 200<<20)
	r := s.stage(t, user, src, "big.bin", "", "Prefer", "respond-async")
	expect(t, r, http.StatusAccepted, "status", "pending")
	// The temporary upload appears after its first 8 MiB chunk; 192 MiB
	// are still to come when the server dies.
	deadline := time.Now().Add(time.Minute)
	for len(testenv.Temps(home, "skao-staging-", ".local")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no temporary upload appeared: %v", s.operation(t, r.Str("id")))
		}
		time.Sleep(2 * time.Millisecond)
	}
	hub.KillServer(t, user)
	op := s.waitOperation(t, r.Str("id"), finished)
	if op["status"] != "failed" {
		t.Fatalf("the upload survived its server being killed: %v", op)
	}
	if _, err := os.Stat(filepath.Join(home, "big.bin")); !os.IsNotExist(err) {
		t.Fatalf("target exists after a failed upload: %v", err)
	}
	if reason, _ := op["error_reason"].(string); !strings.Contains(reason, "Jupyter server of "+user) {
		t.Fatalf("error_reason %q does not say what failed", reason)
	}
}

// TestEventsStraightToJupyter delivers the same event twice to the jupyter
// function (as a Trigger would): one upload, one record, the same reply.
// Through the stage function the event keeps its identity, so a
// redelivery there has no second effect either.
func TestEventsStraightToJupyter(t *testing.T) {
	hub := testenv.Hub(t)
	s := startStack(t, hub, nil, nil)
	user := hub.NewHubUser(t, "eventuser", false)
	hub.StartServer(t, user)
	src := s.write(t, "ev.txt", []byte("event"))

	for _, door := range []struct{ name, url string }{{"jupyter", s.Jupyter.URL}, {"stage", s.Stage.URL}} {
		t.Run(door.name, func(t *testing.T) {
			target := "from-" + door.name + ".txt"
			ev := cetest.RequestEvent(t, "evt-"+door.name, staging.Request{Method: "jupyter_copy", Username: user, Source: src, Target: target})
			status, reply, _ := cetest.SendEvent(t, door.url+"/", ev, false)
			if status != http.StatusOK || reply == nil || reply.Type() != events.TypeCompleted {
				t.Fatalf("status %d reply %v", status, reply)
			}
			var first events.ReplyData
			must(t, reply.DataAs(&first))
			if first.Status != "success" || first.Method != "jupyter_copy" || first.RelativePath != target {
				t.Fatalf("reply %+v", first)
			}
			info, err := os.Stat(filepath.Join(hub.Home(user), target))
			must(t, err)
			count := s.countOperations(t, user)
			status, reply2, _ := cetest.SendEvent(t, door.url+"/", ev, false)
			var second events.ReplyData
			must(t, reply2.DataAs(&second))
			if status != http.StatusOK || reply2.ID() != reply.ID() || second != first {
				t.Fatalf("redelivery: %d %+v, first %+v", status, second, first)
			}
			if n := s.countOperations(t, user); n != count {
				t.Fatalf("redelivery added records: %d, then %d", count, n)
			}
			again, err := os.Stat(filepath.Join(hub.Home(user), target))
			must(t, err)
			if !again.ModTime().Equal(info.ModTime()) {
				t.Fatal("redelivery wrote the file again")
			}
		})
	}

	// Async through the stage: the pending operation is completed by the
	// jupyter function.
	r := s.stage(t, user, src, "async.txt", "", "Prefer", "respond-async")
	expect(t, r, http.StatusAccepted, "status", "pending")
	if op := s.waitOperation(t, r.Str("id"), finished); op["status"] != "success" {
		t.Fatalf("async operation %v", op)
	}
	if b, _ := os.ReadFile(filepath.Join(hub.Home(user), "async.txt")); string(b) != "event" {
		t.Fatalf("async: workspace holds %q", b)
	}
}

// TestAuthMode checks AUTH_MODE=jupyterhub on both functions and every
// door: the owner and a hub admin may stage, another user may not.
func TestAuthMode(t *testing.T) {
	hub := testenv.Hub(t)
	s := startStack(t, hub, map[string]string{"AUTH_MODE": "jupyterhub"}, nil)
	owner := hub.NewHubUser(t, "owner", false)
	admin := hub.NewHubUser(t, "hubadmin-user", true)
	stranger := hub.NewHubUser(t, "stranger", false)
	ownerTok, adminTok, strangerTok := hub.UserToken(t, owner), hub.UserToken(t, admin), hub.UserToken(t, stranger)
	src := s.write(t, "auth.txt", []byte("auth"))

	expect(t, s.stage(t, owner, src, "none.txt", ""), http.StatusUnauthorized, "", "")
	expect(t, s.stage(t, owner, src, "bad.txt", "", "Authorization", "token nonsense"), http.StatusUnauthorized, "", "")
	expect(t, s.stage(t, owner, src, "stranger.txt", "", "Authorization", "token "+strangerTok), http.StatusForbidden, "detail",
		"User "+stranger+" may not stage data for user "+owner)
	expect(t, s.stage(t, owner, src, "stranger.txt", "&jupyter_token="+strangerTok), http.StatusForbidden, "", "")
	expect(t, s.stage(t, owner, src, "owner.txt", "", "Authorization", "Bearer "+ownerTok), http.StatusOK, "status", "success")
	expect(t, s.stage(t, owner, src, "admin.txt", "", "Authorization", "token "+adminTok), http.StatusOK, "status", "success")
	expect(t, s.stage(t, owner, src, "owner2.txt", "&jupyter_token="+ownerTok), http.StatusOK, "status", "success")
	for _, f := range []string{"owner.txt", "admin.txt", "owner2.txt"} {
		if b, _ := os.ReadFile(filepath.Join(hub.Home(owner), f)); string(b) != "auth" {
			t.Errorf("%s: workspace holds %q", f, b)
		}
	}
	for _, f := range []string{"none.txt", "bad.txt", "stranger.txt"} {
		if _, err := os.Stat(filepath.Join(hub.Home(owner), f)); err == nil {
			t.Errorf("%s staged without permission", f)
		}
	}
	// Other methods and doors are checked too.
	local := testenv.Do(t, http.MethodPost, s.Stage.URL+"/stage_data?method=local_copy&username="+owner,
		map[string]any{"data": map[string]string{"local_path_on_storage": src, "relative_path": "l.txt"}},
		"Authorization", "token "+strangerTok)
	expect(t, local, http.StatusForbidden, "", "")
	dl := testenv.Do(t, http.MethodGet, s.Stage.URL+"/stage_data?method=direct_download&username="+owner+"&local_path_on_storage="+src, nil)
	expect(t, dl, http.StatusUnauthorized, "", "")
	for _, door := range []string{s.Stage.URL, s.Jupyter.URL} {
		ev := cetest.RequestEvent(t, "auth-"+door, staging.Request{Method: "jupyter_copy", Username: owner, Source: src, Target: "event.txt", JupyterToken: strangerTok})
		if status, _, _ := cetest.SendEvent(t, door+"/", ev, false); status != http.StatusForbidden {
			t.Errorf("event to %s with another user's token: %d, want 403", door, status)
		}
	}
	ev := cetest.RequestEvent(t, "auth-ok", staging.Request{Method: "jupyter_copy", Username: owner, Source: src, Target: "event.txt", JupyterToken: ownerTok})
	if status, _, body := cetest.SendEvent(t, s.Jupyter.URL+"/", ev, false); status != http.StatusOK {
		t.Errorf("event with the owner's token: %d %s", status, body)
	}
	if strings.Contains(s.Jupyter.Logs()+s.Stage.Logs(), ownerTok) {
		t.Fatal("a token shows in a log")
	}
}
