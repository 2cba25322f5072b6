package staging

import "testing"

func TestLimiterTake(t *testing.T) {
	type need struct{ ops, files int }
	for _, tc := range []struct {
		name             string
		maxOps, maxFiles int
		held             []need // taken first, all admitted
		take             need
		ok               bool
		ops, files       int // in use afterwards
	}{
		{"room", 2, 10, []need{{1, 4}}, need{1, 4}, true, 2, 8},
		{"operations full", 2, 100, []need{{1, 1}, {1, 1}}, need{1, 1}, false, 2, 2},
		{"files full", 10, 8, []need{{1, 4}, {1, 4}}, need{1, 1}, false, 2, 8},
		{"files only, in a batch's slot", 1, 8, []need{{1, 0}}, need{0, 4}, true, 1, 4},
		{"files only, none left", 1, 8, []need{{1, 0}, {0, 8}}, need{0, 1}, false, 1, 8},
		{"a batch larger than the free slots", 3, 100, []need{{2, 4}}, need{2, 0}, false, 2, 4},
		{"a batch that fits", 3, 100, []need{{1, 4}}, need{2, 0}, true, 3, 4},
		{"more files than the bound runs alone", 4, 8, nil, need{1, 20}, true, 1, 8},
		{"and nothing beside it", 4, 8, []need{{1, 20}}, need{1, 1}, false, 1, 8},
		{"no bounds", 0, 0, []need{{1000, 100000}}, need{1, 1}, true, 1001, 100001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &limiter{maxOps: tc.maxOps, maxFiles: tc.maxFiles}
			for _, h := range tc.held {
				if _, err := l.take(h.ops, h.files); err != nil {
					t.Fatalf("take(%d, %d) held first: %v", h.ops, h.files, err)
				}
			}
			sl, err := l.take(tc.take.ops, tc.take.files)
			if (err == nil) != tc.ok {
				t.Fatalf("take(%d, %d) = %v, want ok %v", tc.take.ops, tc.take.files, err, tc.ok)
			}
			if err != nil {
				if kind, detail := KindOf(err); kind != TooMany || detail != "Too much staging in flight here: try again shortly" {
					t.Errorf("refusal %s %q", kind, detail)
				}
				if sl != nil {
					t.Errorf("a refusal returned a slot %+v", sl)
				}
			}
			if ops, files := l.inUse(); ops != tc.ops || files != tc.files {
				t.Errorf("in use %d operations, %d files; want %d, %d", ops, files, tc.ops, tc.files)
			}
		})
	}
}

// A slot is given back once, by whoever holds it last.
func TestSlotReleaseAndPass(t *testing.T) {
	l := &limiter{maxOps: 1, maxFiles: 4}
	inUse := func(ops, files int) {
		t.Helper()
		if o, f := l.inUse(); o != ops || f != files {
			t.Fatalf("in use %d operations, %d files; want %d, %d", o, f, ops, files)
		}
	}
	first, err := l.take(1, 4)
	if err != nil {
		t.Fatal(err)
	}
	// Passed on (to a download's stream, to a background run): the first
	// owner's release gives back nothing.
	next := first.pass()
	first.release()
	inUse(1, 4)
	if _, err := l.take(1, 1); err == nil {
		t.Fatal("took a slot that is held")
	}
	next.release()
	inUse(0, 0)
	next.release() // twice is once
	inUse(0, 0)
	var none *slot // nothing taken
	none.release()
	if none.pass() != nil {
		t.Fatal("nil slot passed as something")
	}
	if _, err := l.take(1, 4); err != nil {
		t.Fatalf("full room again after release: %v", err)
	}
}

func TestPlanFiles(t *testing.T) {
	for _, tc := range []struct{ declared, want int }{{0, DefaultFiles}, {-1, DefaultFiles}, {1, 1}, {27, 27}} {
		if got := (&Plan{Files: tc.declared}).files(); got != tc.want {
			t.Errorf("Plan{Files: %d}.files() = %d, want %d", tc.declared, got, tc.want)
		}
	}
}
