// Command scale measures the service over a store of millions (make scale):
// it starts a throwaway MariaDB, fills one database with what a site holds
// after years (internal/scaledata: 10 million operations over 100,000
// users, 50 million log records, 10,000 requests waiting for Rucio) and
// another with a thousand operations and five thousand log records, runs a
// stage and a logs function (bin/) over each, and measures the same
// requests on both, side by side: the history's listings, one operation,
// the log viewer's filters, a live log's start, the Rucio transfer-done
// lookup, a staging request, and staging while log retention prunes. It
// reports bytes per operation and per log record on disk, prints progress
// to stderr, prints the table and writes it into README.md between the
// scale markers, then removes everything it made.
//
//	go run ./internal/scale [-factor 0.1] [-waiting 10000] [-pool 2G] [-runs 21]
package main

import (
	"bytes"
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/ska-telescope/skao-staging-service/internal/scaledata"
	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/staging"
	"github.com/ska-telescope/skao-staging-service/lib/store"
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "scale: "+format+"\n", args...)
}

func main() {
	factor := flag.Float64("factor", 1, "size of the large store relative to issue 15's (10M operations, 50M log records)")
	pool := flag.String("pool", "2G", "InnoDB buffer pool of the MariaDB server")
	runs := flag.Int("runs", 21, "runs of each request on each store (median reported)")
	readme := flag.Bool("readme", true, "write the table into README.md between the scale markers")
	waiting := flag.Int("waiting", 0, "requests waiting for a DID in the large store (default 10,000 × factor, at least 10)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *factor, *waiting, *pool, *runs, *readme); err != nil {
		logf("%v", err)
		os.Exit(1)
	}
}

// side is one store with its functions.
type side struct {
	name     string
	spec     scaledata.Spec
	url      string
	db       *sql.DB // raw, for sizes and LOAD DATA
	st       *store.Store
	stage    *proc
	logs     *proc
	dir      string
	loadTime time.Duration
	opBytes  float64
	logBytes float64
}

func run(ctx context.Context, factor float64, waiting int, pool string, runs int, writeReadme bool) error {
	begin := time.Now()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	for _, bin := range []string{"stage", "logs"} {
		if _, err := os.Stat(filepath.Join(root, "bin", bin)); err != nil {
			return fmt.Errorf("bin/%s: %w (run make build first)", bin, err)
		}
	}
	work, err := os.MkdirTemp(filepath.Join(root, ".data"), "scale-")
	if os.IsNotExist(err) {
		if err = os.MkdirAll(filepath.Join(root, ".data"), 0o755); err == nil {
			work, err = os.MkdirTemp(filepath.Join(root, ".data"), "scale-")
		}
	}
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	logf("starting MariaDB (buffer pool %s) under %s", pool, work)
	server, err := testenv.StartMariaDB(work, pool)
	if err != nil {
		return err
	}
	defer server.Remove()

	now := time.Now().UTC()
	big := &side{name: "large", spec: scaledata.Full(now).Scaled(factor)}
	if waiting > 0 {
		big.spec.Waiting = min(waiting, big.spec.Operations)
	}
	small := &side{name: "small", spec: scaledata.Spec{Operations: 1000, Logs: 20_000, Users: 100, Waiting: 10,
		Span: 30 * 24 * time.Hour, LogSpan: 170 * time.Hour, Now: now, Seed: 15}}
	for _, s := range []*side{small, big} {
		if err := s.open(ctx, server, work); err != nil {
			return err
		}
		defer s.close()
		logf("%s store: loading %d operations over %d users and %d log records", s.name, s.spec.Operations, s.spec.Users, s.spec.Logs)
		start := time.Now()
		if err := scaledata.Load(ctx, s.db, s.spec, logf); err != nil {
			return err
		}
		s.loadTime = time.Since(start)
		if err := s.sizes(ctx, server); err != nil {
			return err
		}
		logf("%s store loaded in %s: %.0f bytes per operation, %.0f bytes per log record on disk", s.name,
			s.loadTime.Round(time.Second), s.opBytes, s.logBytes)
		if err := s.start(ctx, root); err != nil {
			return err
		}
	}

	m := &measurer{runs: runs, big: big, small: small}
	rows, err := m.all(ctx)
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("| request | large store | small store | ratio | target | met |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		met := "yes"
		if !r.met() {
			met = "no"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f× | ≤ 2× | %s |\n", r.name, fmtDur(r.big), fmtDur(r.small), r.ratio(), met)
	}
	fmt.Fprintf(&b, "\nLarge store: %s operations over %s users, %s log records, %s requests waiting for a DID (loaded in %s); "+
		"on disk (InnoDB files) %.0f bytes per operation and %.0f bytes per log record, indexes included. "+
		"Small store: %s operations, %s log records. Medians of %d runs of each request, alternating the stores; "+
		"MariaDB 10.11, buffer pool %s. Run of %s, %s, %d CPUs, load average %s at the start, took %s.\n",
		commas(big.spec.Operations), commas(big.spec.Users), commas(big.spec.Logs), commas(big.spec.Waiting),
		big.loadTime.Round(time.Second), big.opBytes, big.logBytes, commas(small.spec.Operations), commas(small.spec.Logs),
		runs, pool, begin.Format(time.RFC3339), runtime.Version(), runtime.NumCPU(), loadAvg(), time.Since(begin).Round(time.Second))
	for _, n := range m.notes {
		b.WriteString("\n" + n + "\n")
	}
	fmt.Print(b.String())
	if writeReadme {
		if err := testenv.ReplaceBetween(filepath.Join(root, "README.md"), "<!-- scale:start -->", "<!-- scale:end -->", b.String()); err != nil {
			return err
		}
		logf("table written into README.md")
	}
	return nil
}

func (s *side) open(ctx context.Context, server *testenv.MariaDBServer, work string) error {
	u, err := server.CreateDatabase(s.name)
	if err != nil {
		return err
	}
	s.url = u
	if s.st, err = store.Open(ctx, u); err != nil { // migrates
		return err
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", "tcp", "127.0.0.1:"+strconv.Itoa(server.Port()), s.name
	cfg.ParseTime, cfg.Loc = true, time.UTC
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	s.db = sql.OpenDB(connector)
	s.dir = filepath.Join(work, s.name)
	for _, d := range []string{"source", "target"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o755); err != nil {
			return err
		}
	}
	for i := range 4096 {
		if err := os.WriteFile(filepath.Join(s.dir, "source", fmt.Sprintf("f%04d", i)), bytes.Repeat([]byte{'x'}, 4096), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (s *side) close() {
	for _, p := range []*proc{s.stage, s.logs} {
		if p != nil {
			p.stop()
		}
	}
	if s.st != nil {
		s.st.Close()
	}
	if s.db != nil {
		s.db.Close()
	}
}

// sizes reads the InnoDB files of the two tables.
func (s *side) sizes(ctx context.Context, server *testenv.MariaDBServer) error {
	if _, err := s.db.ExecContext(ctx, "FLUSH TABLES operations, logs FOR EXPORT"); err == nil {
		s.db.ExecContext(ctx, "UNLOCK TABLES")
	}
	size := func(table string) (float64, error) {
		fi, err := os.Stat(filepath.Join(server.Dir(), "data", s.name, table+".ibd"))
		if err != nil {
			return 0, err
		}
		return float64(fi.Size()), nil
	}
	ops, err := size("operations")
	if err != nil {
		return err
	}
	logs, err := size("logs")
	if err != nil {
		return err
	}
	s.opBytes, s.logBytes = ops/float64(max(s.spec.Operations, 1)), logs/float64(max(s.spec.Logs, 1))
	return nil
}

func (s *side) start(ctx context.Context, root string) error {
	env := []string{
		"SOURCE_STORAGE_PATH=" + filepath.Join(s.dir, "source"),
		"TARGET_STORAGE_PATH=" + filepath.Join(s.dir, "target"),
		"DATABASE_URL=" + s.url,
		"HOST=127.0.0.1",
		"LOGGING_LEVEL=WARNING",
		"LOG_RETENTION=876000h", // pruning is measured on its own
		"RUCIO_RSE=SCALE-RSE",
	}
	var err error
	if s.stage, err = startProc(ctx, filepath.Join(root, "bin", "stage"), filepath.Join(s.dir, "stage.log"), env); err != nil {
		return err
	}
	s.logs, err = startProc(ctx, filepath.Join(root, "bin", "logs"), filepath.Join(s.dir, "logs.log"), env)
	return err
}

// proc is a function process.
type proc struct {
	cmd *exec.Cmd
	url string
}

func startProc(ctx context.Context, bin, logPath string, env []string) (*proc, error) {
	port, err := testenv.FreeTCPPort()
	if err != nil {
		return nil, err
	}
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin)
	cmd.Env = append(env, "PORT="+strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, url: "http://127.0.0.1:" + strconv.Itoa(port)}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(p.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("%s not ready: %s", bin, tail(out))
		}
	}
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// measurer runs the requests on both stores.
type measurer struct {
	runs       int
	big, small *side
	notes      []string
}

// row is one request measured on both stores.
type row struct {
	name       string
	big, small time.Duration
}

func (r row) ratio() float64 { return float64(r.big) / float64(max(r.small, time.Microsecond)) }
func (r row) met() bool      { return r.ratio() <= 2 }

// request is one measured request on a store: it returns an error when
// the answer is not what it should be.
type request func(ctx context.Context, s *side) error

func (m *measurer) all(ctx context.Context) ([]row, error) {
	client := &http.Client{Timeout: 5 * time.Minute}
	get := func(path string, want int) request {
		return func(ctx context.Context, s *side) error {
			base := s.stage.url
			if strings.HasPrefix(path, "/logs") {
				base = s.logs.url
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if resp.StatusCode != want {
				return fmt.Errorf("GET %s: %d %.300s", path, resp.StatusCode, body)
			}
			return nil
		}
	}
	heavy := scaledata.User(0)
	// A user with a few hundred operations on the large store; the small
	// store's most active user has a page's worth too.
	median := scaledata.User(max(1, m.big.spec.Users/20))
	userOf := func(s *side) string {
		if s == m.small {
			return heavy
		}
		return median
	}
	// A cursor halfway through the heavy user's history: the page a
	// reader reaches after paging back for a long time.
	deepCursor := func(s *side) string {
		var created time.Time
		var id string
		err := s.db.QueryRow("SELECT created_at, id FROM operations WHERE username = ? ORDER BY created_at LIMIT 1 OFFSET ?",
			heavy, countOf(s.db, "SELECT COUNT(*) FROM operations WHERE username = ?", heavy)/2).Scan(&created, &id)
		if err != nil {
			return ""
		}
		return staging.Cursor{CreatedAt: created, ID: id}.Encode()
	}
	bigDeep, smallDeep := deepCursor(m.big), deepCursor(m.small)
	anOp := func(s *side) string {
		var id string
		s.db.QueryRow("SELECT id FROM operations WHERE username = ? ORDER BY created_at DESC LIMIT 1", userOf(s)).Scan(&id)
		return id
	}
	// The rare filters ask for as many records as the small store has,
	// so both answers are the same size.
	rare := func(where string) int {
		return max(1, min(100, countOf(m.small.db, "SELECT COUNT(*) FROM logs WHERE "+where)))
	}
	errors, fromLogs := rare("level >= 8"), rare("`function` = 'logs'")
	bigOp, smallOp := anOp(m.big), anOp(m.small)
	perSide := func(f func(s *side) request) request {
		return func(ctx context.Context, s *side) error { return f(s)(ctx, s) }
	}
	transferDone := func(ctx context.Context, s *side) error {
		// A transfer-done for a DID nobody waits for: the lookup among
		// the waiting requests, then "ignored".
		body := `{"event_type":"transfer-done","payload":{"scope":"user.nobody","name":"x.ms","dst-rse":"SCALE-RSE"}}`
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.stage.url+"/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("ce-specversion", "1.0")
		req.Header.Set("ce-id", strconv.FormatInt(time.Now().UnixNano(), 10))
		req.Header.Set("ce-source", "/rucio/scale")
		req.Header.Set("ce-type", "io.rucio.transfer-done")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), "ignored") {
			return fmt.Errorf("transfer-done: %d %s", resp.StatusCode, b)
		}
		return nil
	}
	seq := 0
	var seqMu sync.Mutex
	stageOne := func(ctx context.Context, s *side) error {
		seqMu.Lock()
		seq++
		n := seq
		seqMu.Unlock()
		body := fmt.Sprintf(`{"data":{"local_path_on_storage":"f%04d","relative_path":"c/%d"}}`, n%4096, n)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.stage.url+"/stage_data?method=local_copy&username="+userOf(s), strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("staging: %d %s", resp.StatusCode, b)
		}
		return nil
	}
	followStart := func(ctx context.Context, s *side) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.logs.url+"/logs?follow=true&limit=100", nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("follow: %d", resp.StatusCode)
		}
		buf := make([]byte, 1)
		_, err = io.ReadFull(resp.Body, buf) // the first event has begun
		return err
	}
	// The sweep's lookups, as every replica makes them (every 5 s with the
	// default lease; lost hand-offs by DID once a minute): straight on
	// the store, with the defaults' cut-offs and batch.
	sweep := func(lookup func(ctx context.Context, st *store.Store, now time.Time) ([]staging.Operation, error)) request {
		return func(ctx context.Context, s *side) error {
			_, err := lookup(ctx, s.st, time.Now())
			return err
		}
	}
	const batch = 1000
	pending := func(age time.Duration, kind staging.Pending) request {
		return sweep(func(ctx context.Context, st *store.Store, now time.Time) ([]staging.Operation, error) {
			return st.PendingBefore(ctx, now.Add(-age), kind, batch)
		})
	}
	requests := []struct {
		name string
		req  request
	}{
		{fmt.Sprintf("`/operations?username=` of the most active user (%s operations), first page", commas(countOf(m.big.db, "SELECT COUNT(*) FROM operations WHERE username = ?", heavy))), get("/operations?username="+heavy, 200)},
		{"`/operations?username=`, a page halfway through that user's history (cursor)", perSide(func(s *side) request {
			c := bigDeep
			if s == m.small {
				c = smallDeep
			}
			return get("/operations?username="+heavy+"&cursor="+url.QueryEscape(c), 200)
		})},
		{fmt.Sprintf("`/operations?username=` of a user with %s operations (small store: its most active user, %s)",
			commas(countOf(m.big.db, "SELECT COUNT(*) FROM operations WHERE username = ?", median)),
			commas(countOf(m.small.db, "SELECT COUNT(*) FROM operations WHERE username = ?", heavy))),
			perSide(func(s *side) request { return get("/operations?username="+userOf(s), 200) })},
		{"`/operations` unfiltered (the web page's history without a username)", get("/operations?limit=50", 200)},
		{"`/operations?status=failed`", get("/operations?status=failed&limit=50", 200)},
		{"`/operations?status=running`", get("/operations?status=running&limit=50", 200)},
		{"`/operations/<id>`", perSide(func(s *side) request {
			id := bigOp
			if s == m.small {
				id = smallOp
			}
			return get("/operations/"+id, 200)
		})},
		{"`/logs?username=&limit=100`", get("/logs?username="+heavy+"&limit=100", 200)},
		{fmt.Sprintf("`/logs?level=ERROR&limit=%d` (0.1%% of records)", errors), get(fmt.Sprintf("/logs?level=ERROR&limit=%d", errors), 200)},
		{fmt.Sprintf("`/logs?function=logs&limit=%d` (0.01%% of records)", fromLogs), get(fmt.Sprintf("/logs?function=logs&limit=%d", fromLogs), 200)},
		{"`/logs` newest 1000", get("/logs", 200)},
		{"`/logs?follow=true&limit=100`, to the first event", followStart},
		{fmt.Sprintf("Rucio transfer-done for a DID nobody waits for, %s requests waiting", commas(m.big.spec.Waiting)), transferDone},
		{"a staging request (local_copy of 4 KiB)", stageOne},
		{"the sweep's lookup of dead running operations (lease 15 s)", sweep(func(ctx context.Context, st *store.Store, now time.Time) ([]staging.Operation, error) {
			return st.Stale(ctx, now.Add(-15*time.Second), batch)
		})},
		{"the sweep's lookup of lost hand-offs by path (15 min)", pending(15*time.Minute, staging.PendingHandoff)},
		{fmt.Sprintf("the sweep's lookup of lost hand-offs of requests by DID (15 min, once a minute), %s requests waiting", commas(m.big.spec.Waiting)), pending(15*time.Minute, staging.PendingDIDHandoff)},
		{"the sweep's lookup of requests that waited too long for their replica (168 h)", pending(168*time.Hour, staging.PendingWaiting)},
	}
	var rows []row
	for _, rq := range requests {
		logf("measuring %s", rq.name)
		r := row{name: rq.name}
		var bigs, smalls []time.Duration
		for i := range m.runs + 1 {
			for _, s := range order(i, m.big, m.small) {
				start := time.Now()
				if err := rq.req(ctx, s); err != nil {
					return nil, fmt.Errorf("%s on the %s store: %w", rq.name, s.name, err)
				}
				d := time.Since(start)
				if i == 0 {
					continue // warm-up
				}
				if s == m.big {
					bigs = append(bigs, d)
				} else {
					smalls = append(smalls, d)
				}
			}
		}
		r.big, r.small = medianDur(bigs), medianDur(smalls)
		logf("  large %s, small %s", fmtDur(r.big), fmtDur(r.small))
		rows = append(rows, r)
	}
	prune, err := m.pruning(ctx, stageOne)
	if err != nil {
		return nil, err
	}
	return append(rows, prune...), nil
}

// pruning measures staging p99 on the large store while log retention
// prunes the records older than a week (LOG_RETENTION's default), against
// p99 just before.
func (m *measurer) pruning(ctx context.Context, stageOne request) ([]row, error) {
	n := max(m.runs*20, 200)
	p99 := func(during func() bool) (time.Duration, int) {
		var ds []time.Duration
		for i := 0; (during == nil && i < n) || (during != nil && (i == 0 || during())); i++ {
			start := time.Now()
			if err := stageOne(ctx, m.big); err != nil {
				logf("staging during pruning: %v", err)
				continue
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[min(len(ds)-1, len(ds)*99/100)], len(ds)
	}
	logf("measuring staging p99 without pruning (%d requests)", n)
	quiet, _ := p99(nil)
	logf("  %s", fmtDur(quiet))
	var deleted int64
	var took time.Duration
	var perr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		deleted, perr = m.big.st.PruneLogs(ctx, m.big.spec.Now.Add(-168*time.Hour))
		took = time.Since(start)
	}()
	logf("measuring staging p99 while pruning")
	busy, count := p99(func() bool {
		select {
		case <-done:
			return false
		default:
			return true
		}
	})
	<-done
	if perr != nil {
		return nil, perr
	}
	m.notes = append(m.notes, fmt.Sprintf("Log retention pruned %s records older than a week from the large store in %s; %d staging requests ran meanwhile.",
		commas(int(deleted)), took.Round(time.Millisecond), count))
	logf("  %s; pruned %d records in %s", fmtDur(busy), deleted, took)
	return []row{{name: "staging p99 while log retention prunes (large store) vs without (large store)", big: busy, small: quiet}}, nil
}

func order(i int, a, b *side) []*side {
	if i%2 == 0 {
		return []*side{b, a}
	}
	return []*side{a, b}
}

func countOf(db *sql.DB, q string, args ...any) int {
	var n int
	db.QueryRow(q, args...).Scan(&n)
	return n
}

func medianDur(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
}

func commas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], ", ")
}
