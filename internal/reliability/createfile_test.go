package reliability

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// TestCreateFilePlanted plants, in the source storage, what could make
// POST /create-file write where it must not: a file under the temporary
// name an earlier version used (.<name>.creating), a link under such a
// name to a victim, links at the target name (to a victim, dangling), a
// file there, and folder links leading out. Then it creates files beside
// them, over them and through them, and 10 / 100 names raced by 8 / 16
// clients each. Existing names are answered 409 and never replaced, no
// link is followed to write, an escape is 403, new files are created
// whole, exactly one racer wins each name, and every planted file and
// victim is unchanged byte for byte, with no temporary file left.
func TestCreateFilePlanted(t *testing.T) {
	names, racers := size(10, 100), size(8, 16)
	s := newSite(t, "")
	for rel, content := range map[string]string{
		"victims/v1":        "victim one",
		"victims/v2":        "victim two",
		"pages/.x.creating": "planted under the temporary name an earlier version used",
		"pages/existing":    "existing content",
	} {
		s.write(t, rel, []byte(content))
	}
	for link, to := range map[string]string{
		"pages/.y.creating": "../victims/v1",
		"pages/linked":      "../victims/v2",
		"pages/dangling":    "../victims/not-yet",
		"pages/out":         "../../outside",
		"pages/absout":      s.Outside,
	} {
		must(t, os.Symlink(to, filepath.Join(s.Source, link)))
	}
	p := s.start(t, map[string]string{"ENABLE_FILE_CREATOR": "true"})
	source, outside := snapshot(t, s.Source), snapshot(t, s.Outside)

	create := func(name, content string) *answer {
		return call(client, http.MethodPost, p.URL+"/create-file", map[string]string{"filename": name, "content": content})
	}
	cases := []struct {
		what, name string
		want       int
	}{
		{"beside a planted file under its earlier temporary name", "pages/x", 200},
		{"beside a link to a victim under its earlier temporary name", "pages/y", 200},
		{"an absolute path inside the storage", filepath.Join(s.Source, "pages/abs"), 200},
		{"a link to a victim at the name", "pages/linked", 409},
		{"a dangling link at the name", "pages/dangling", 409},
		{"a file at the name", "pages/existing", 409},
		{"the planted temporary file itself", "pages/.x.creating", 409},
		{"the planted temporary link itself", "pages/.y.creating", 409},
		{"below a file", "pages/existing/below", 409},
		{"through a folder link leading out", "pages/out/z", 403},
		{"through an absolute folder link", "pages/absout/z", 403},
		{"dot-dot out of the storage", "pages/../../outside/z", 403},
	}
	created := map[string]string{} // relative to the source: content
	for _, c := range cases {
		content := "created " + c.what
		a := create(c.name, content)
		if a.Status != c.want {
			t.Errorf("%s (%s): %v, want %d", c.what, c.name, a, c.want)
			continue
		}
		if c.want != 200 && (a.str("detail") == "" || strings.Contains(a.str("detail"), s.Source)) {
			t.Errorf("%s (%s): %v, want a detail naming no server path", c.what, c.name, a)
		}
		if c.want == 200 {
			rel, _ := filepath.Rel(s.Source, filepath.Join(s.Source, strings.TrimPrefix(c.name, s.Source)))
			created[rel] = content
		}
	}

	// Racers: each name is created once, whole, by one of them.
	var mu sync.Mutex
	wins, losses, wrong := 0, 0, 0
	var wg sync.WaitGroup
	for i := range names {
		name := fmt.Sprintf("race/n%03d", i)
		winner := make([]string, 0, 1)
		var rwg sync.WaitGroup
		for r := range racers {
			rwg.Add(1)
			go func() {
				defer rwg.Done()
				content := fmt.Sprintf("racer %d of %s: %s", r, name, strings.Repeat("x", 64<<10))
				a := create(name, content)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case a.Status == 200:
					wins++
					winner = append(winner, content)
				case a.Status == 409 && a.str("detail") != "":
					losses++
				default:
					wrong++
					t.Errorf("racer %d of %s: %v", r, name, a)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rwg.Wait()
			mu.Lock()
			defer mu.Unlock()
			if len(winner) != 1 {
				t.Errorf("%s: %d racers created it, want exactly one", name, len(winner))
				return
			}
			created[name] = winner[0]
		}()
	}
	wg.Wait()

	// Every created file holds what its creator sent; everything else is
	// as planted.
	for rel, content := range created {
		info, err := os.Lstat(filepath.Join(s.Source, rel))
		if err != nil || !info.Mode().IsRegular() {
			t.Errorf("%s: %v, %v; want a regular file", rel, info, err)
			continue
		}
		if b, _ := os.ReadFile(filepath.Join(s.Source, rel)); string(b) != content {
			t.Errorf("%s holds %d bytes, not what its creator sent", rel, len(b))
		}
	}
	after := snapshot(t, s.Source)
	for rel := range created {
		delete(after, "/"+rel)
	}
	delete(after, "/race")
	sameSnapshot(t, "the source storage (planted files, links and victims)", source, after)
	sameSnapshot(t, "outside the storage", outside, snapshot(t, s.Outside))
	if _, err := os.Lstat(filepath.Join(s.Source, "victims/not-yet")); err == nil {
		t.Error("the dangling link was followed: victims/not-yet exists")
	}
	left := testenv.Temps(s.Source, ".skao-staging-")
	if len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	record(t,
		fmt.Sprintf("%d create-file requests beside, over and through planted names (an earlier version's .creating temporaries, one a link to a victim; links to a victim and dangling at the name; a file there; folder links leading out): created beside them, 409 over them, 403 through links out",
			len(cases)),
		fmt.Sprintf("%d names raced by %d clients each: %d created (one per name, whole), %d answered 409, %d other answers; planted files and victims unchanged byte for byte, %d temporary files",
			names, racers, wins, losses, wrong, len(left)))
}
