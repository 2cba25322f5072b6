package testenv

import (
	"context"
	"database/sql"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

func TestMain(m *testing.M) { Main(m) }

// openURL opens a mysql:// URL made by this package.
func openURL(t *testing.T, raw string) *sql.DB {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mysql.NewConfig()
	cfg.User = u.User.Username()
	cfg.Net = "tcp"
	cfg.Addr = u.Host
	cfg.DBName = strings.TrimPrefix(u.Path, "/")
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestMariaDBFreshDatabases(t *testing.T) {
	start := time.Now()
	a := MariaDB(t)
	t.Logf("shared MariaDB ready in %v: %s", time.Since(start), a)
	b := MariaDB(t)
	if a == b {
		t.Fatalf("two calls returned the same database %s", a)
	}
	for _, raw := range []string{a, b} {
		if !strings.HasPrefix(raw, "mysql://root@127.0.0.1:") {
			t.Fatalf("URL %s", raw)
		}
		db := openURL(t, raw)
		var n int
		if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("%s has %d tables, want an empty database", raw, n)
		}
	}
	if _, err := openURL(t, a).Exec("CREATE TABLE x (id INT)"); err != nil {
		t.Fatal(err)
	}
}

func TestMariaDBServerStopStart(t *testing.T) {
	start := time.Now()
	srv := MariaDBServerFor(t)
	t.Logf("dedicated MariaDB (install + start) ready in %v", time.Since(start))
	db := openURL(t, srv.URL())
	if _, err := db.Exec("CREATE TABLE kept (v INT)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err == nil {
		t.Fatal("ping succeeded while the server is stopped")
	}
	restart := time.Now()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart took %v", time.Since(restart))
	var v int
	if err := db.QueryRow("SELECT v FROM kept").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after restart: v=%d err=%v", v, err)
	}

	// A crash, then the same again.
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT v FROM kept").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after kill and start: v=%d err=%v", v, err)
	}
	if srv.Port() == 0 || !strings.Contains(srv.URL(), ":"+strconv.Itoa(srv.Port())+"/") {
		t.Fatalf("port %d, URL %s", srv.Port(), srv.URL())
	}
	other := srv.Database(t)
	if other == srv.URL() {
		t.Fatal("Database returned the test database")
	}
}

func TestFreePort(t *testing.T) {
	port := FreePort(t)
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("port %d not free: %v", port, err)
	}
	l.Close()
}
