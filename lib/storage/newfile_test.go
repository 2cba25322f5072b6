package storage

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestNewFile: a new file is seen by nobody until Publish names it,
// Publish never replaces anything, and Discard or a refused Publish leaves
// nothing behind, whether the file is unnamed (O_TMPFILE) or created
// under a temporary name.
func TestNewFile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		create func(*os.File, string, fs.FileMode) (*NewFile, error)
	}{
		{"unnamed where the filesystem allows", CreateIn},
		{"named", CreateNamedIn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			folder, err := os.Open(dir)
			must(t, err)
			defer folder.Close()
			names := func() []string {
				entries, err := os.ReadDir(dir)
				must(t, err)
				var out []string
				for _, e := range entries {
					out = append(out, e.Name())
				}
				return out
			}
			tmp := TempName("0000")

			f, err := tc.create(folder, tmp, 0o600)
			must(t, err)
			t.Logf("made under a temporary name: %v", f.tmp != "")
			if _, err := f.Write([]byte("content")); err != nil {
				t.Fatal(err)
			}
			must(t, f.Chmod(0o440))
			if got := names(); len(got) > 1 || (len(got) == 1 && got[0] != tmp) {
				t.Fatalf("before Publish the folder holds %q; want nothing but the temporary name", got)
			}
			must(t, f.Publish("data.bin"))
			if got := names(); !slices.Equal(got, []string{"data.bin"}) {
				t.Fatalf("after Publish the folder holds %q; want [data.bin]", got)
			}
			info, err := os.Stat(filepath.Join(dir, "data.bin"))
			must(t, err)
			if b, _ := os.ReadFile(filepath.Join(dir, "data.bin")); string(b) != "content" || info.Mode().Perm() != 0o440 {
				t.Fatalf("published file holds %q with mode %v; want \"content\", 0440", b, info.Mode().Perm())
			}

			g, err := tc.create(folder, tmp, 0o600)
			must(t, err)
			g.Write([]byte("other"))
			if err := g.Publish("data.bin"); !errors.Is(err, ErrExist) {
				t.Fatalf("Publish over an existing name: %v; want ErrExist", err)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "data.bin")); string(b) != "content" {
				t.Fatalf("the existing file was changed to %q", b)
			}

			h, err := tc.create(folder, tmp, 0o600)
			must(t, err)
			h.Write([]byte("half"))
			h.Discard()
			if got := names(); !slices.Equal(got, []string{"data.bin"}) {
				t.Fatalf("after a refused Publish and a Discard the folder holds %q; want [data.bin]", got)
			}
		})
	}
}
