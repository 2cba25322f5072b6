package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

// jupyterSize is the file of row 7, the same in quick and full runs.
const (
	jupyterSize  = 200 << 20
	jupyterChunk = 8 << 20 // the jupyter function's chunk size, for curl too
)

// jupyterCopy is row 7: jupyter_copy of a 200 MiB file through a real
// JupyterHub (Debian's jupyterhub, on loopback), sent as an event straight
// to the jupyter function, vs curl PUTting the same base64 chunks (encoded
// beforehand, so curl only uploads) to the same server, in MB/s; and the
// jupyter function's peak RSS.
func (b *bench) jupyterCopy(ctx context.Context) (row, error) {
	bin := filepath.Join(b.root, "bin", "jupyter")
	if _, err := os.Stat(bin); err != nil {
		return row{}, fmt.Errorf("jupyter binary: %w (run make build first)", err)
	}
	logf("starting JupyterHub")
	hub, err := testenv.StartHub()
	if err != nil {
		return row{}, err
	}
	defer hub.Remove()
	const hubUser = "bench"
	if err := hub.CreateUser(hubUser, false); err != nil {
		return row{}, err
	}
	if err := hub.Spawn(hubUser); err != nil {
		return row{}, err
	}
	logf("writing a %s file", mib(jupyterSize))
	src := filepath.Join(b.src, "jupyter.bin")
	if err := writeRandom(src, jupyterSize, 7); err != nil {
		return row{}, err
	}
	chunks, err := curlChunks(src, filepath.Join(b.dir, "curl-chunks"))
	if err != nil {
		return row{}, err
	}
	header := filepath.Join(b.dir, "curl-headers")
	// "Expect:" turns off curl's Expect: 100-continue, which otherwise
	// stalls every chunk for up to a second.
	if err := os.WriteFile(header, []byte("Authorization: token "+hub.Token+"\nContent-Type: application/json\nExpect:\n"), 0o600); err != nil {
		return row{}, err
	}
	env := append(b.stageEnv("row7"), "JUPYTERHUB_URL="+hub.URL, "JUPYTERHUB_API_TOKEN="+hub.Token)
	p, err := startProc("jupyter", bin, filepath.Join(b.dir, "logs", "row7.log"), env...)
	if err != nil {
		return row{}, err
	}
	defer p.stopOrWarn()
	if err := p.waitReady(ctx, 30*time.Second); err != nil {
		return row{}, err
	}
	home := hub.Home(hubUser)
	mbps := func(d time.Duration) float64 { return perSecond(float64(jupyterSize)/1e6, d) }
	svc, base, err := alternate("row 7", b.reps, "MB/s",
		func(i int) (float64, error) {
			target := fmt.Sprintf("service-%d.bin", i)
			d, err := timed(func() error { return jupyterEvent(ctx, p.url, i, "jupyter.bin", target) })
			if err != nil {
				return 0, err
			}
			return mbps(d), checkSize(filepath.Join(home, target))
		},
		func(i int) (float64, error) {
			target := fmt.Sprintf("curl-%d.bin", i)
			url := hub.URL + "/user/" + hubUser + "/api/contents/" + target
			d, err := timed(func() error {
				for _, c := range chunks {
					if err := command(ctx, "curl", "-sS", "--fail", "-o", "/dev/null", "-X", "PUT",
						"-H", "@"+header, "--data-binary", "@"+c, url); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return 0, err
			}
			return mbps(d), checkSize(filepath.Join(home, target))
		})
	if err != nil {
		return row{}, err
	}
	peak, err := vmHWM(p.cmd.Process.Pid)
	if err != nil {
		return row{}, err
	}
	ratio := svc / base
	return row{n: 7, name: fmt.Sprintf("jupyter_copy of a %s file through a real JupyterHub vs `curl` PUTting the same %s chunks (median of %d)", mib(jupyterSize), mib(jupyterChunk), b.reps),
		service: fmt.Sprintf("%s MB/s, peak RSS %s", commas(svc), mib(peak)), baseline: commas(base) + " MB/s", ratio: ratio,
		target: "≥ 0.5×, RSS ≤ 64 MiB", met: ratio >= 0.5 && peak <= 64<<20}, nil
}

// curlChunks writes the contents API bodies of src's chunks (chunk 1, 2,
// ..., -1 for the last) into dir and returns their paths in order.
func curlChunks(src, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var paths []string
	buf := make([]byte, jupyterChunk)
	for n, off := 1, int64(0); off < jupyterSize; n++ {
		k, err := io.ReadFull(f, buf[:min(int64(len(buf)), jupyterSize-off)])
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", src, err)
		}
		off += int64(k)
		number := n
		if off == jupyterSize {
			number = -1
		}
		body, _ := json.Marshal(map[string]any{"type": "file", "format": "base64", "chunk": number,
			"content": base64.StdEncoding.EncodeToString(buf[:k])})
		p := filepath.Join(dir, fmt.Sprintf("chunk-%03d.json", n))
		if err := os.WriteFile(p, body, 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// jupyterEvent sends one org.skao.staging.request event for jupyter_copy in
// binary mode, as a Knative Trigger delivers it, and waits for the reply.
func jupyterEvent(ctx context.Context, url string, i int, src, rel string) error {
	body, _ := json.Marshal(map[string]string{"method": "jupyter_copy", "username": "bench",
		"local_path_on_storage": src, "relative_path": rel})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i),
		"ce-source": "/bench", "ce-type": "org.skao.staging.request", "ce-stagingmethod": "jupyter_copy",
		"Content-Type": "application/json"} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("jupyter_copy: %w", err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("jupyter_copy: %d %s", resp.StatusCode, answer)
	}
	return nil
}

// checkSize makes sure an upload landed whole, then removes it.
func checkSize(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	if fi.Size() != jupyterSize {
		return fmt.Errorf("upload %s: %d bytes, want %d", path, fi.Size(), jupyterSize)
	}
	return os.Remove(path)
}
