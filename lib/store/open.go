package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/doug-martin/goqu/v9"
	_ "github.com/doug-martin/goqu/v9/dialect/mysql"   // goqu dialect "mysql"
	_ "github.com/doug-martin/goqu/v9/dialect/sqlite3" // goqu dialect "sqlite3"
	"github.com/go-sql-driver/mysql"
	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// Dialect names, as goqu knows them.
const (
	DialectMySQL  = "mysql"
	DialectSQLite = "sqlite3"
)

//go:embed migrations/mysql/*.sql migrations/sqlite/*.sql
var migrations embed.FS

// migrationLock names the MySQL advisory lock that serialises migrations of
// replicas starting at once; lockWait is how long one waits for it.
const (
	migrationLock = "skao_staging_migrations"
	lockWait      = 60 * time.Second
)

// sqlMode is every connection's sql_mode, whatever the server's is: in
// strict mode a value a column cannot hold (too long, not in its
// character set, out of its range) is refused, never cut short or
// replaced with "?" as a server configured without it would, and the
// statements the store builds mean the same on every server (no
// ANSI_QUOTES, PIPES_AS_CONCAT or NO_BACKSLASH_ESCAPES of its own).
const sqlMode = "'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'"

// sqlitePragmas tune the embedded database for many small concurrent writes:
// WAL lets readers run beside the writer, synchronous=NORMAL is durable
// across application crashes (only a power cut may lose the last commits),
// and busy_timeout makes another process holding the file wait, not fail.
const sqlitePragmas = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=wal_autocheckpoint(4000)&_txlock=immediate"

// Open connects to databaseURL, brings its schema up to date and returns the
// store: New, then Migrate.
func Open(ctx context.Context, databaseURL string) (*Store, error) {
	s, err := New(databaseURL)
	if err != nil {
		return nil, err
	}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// New returns the store for databaseURL without connecting to it, so a
// function can start while its database is away (see Migrate). Only a
// malformed URL is an error. The URL is one of
//
//	mysql://user:pass@host[:port]/db[?driver-params]  (user and pass URL-escaped, port 3306 by default)
//	sqlite:///absolute/path/file.db
//	sqlite://relative/path/file.db                     (the directory is created)
func New(databaseURL string) (*Store, error) {
	scheme, rest, ok := strings.Cut(databaseURL, "://")
	if !ok {
		return nil, errors.New("database URL: want mysql://user:pass@host:port/db or sqlite://path/file.db")
	}
	switch scheme {
	case "mysql":
		return newMySQL(databaseURL)
	case "sqlite":
		return newSQLite(rest)
	default:
		return nil, fmt.Errorf("database URL: unsupported scheme %q (want mysql or sqlite)", scheme)
	}
}

// Migrate connects and brings the schema up to date; replicas starting
// together migrate one after the other. It may be called again after a
// failure (the database was away).
func (s *Store) Migrate(ctx context.Context) error {
	if s.current(ctx) {
		return nil
	}
	if s.dialect == DialectMySQL {
		if err := migrateMySQL(ctx, s.db); err != nil {
			return fmt.Errorf("migrate mysql database %s: %w", s.where, err)
		}
		return nil
	}
	if err := migrateSQLite(ctx, s.db, s.where); err != nil {
		return fmt.Errorf("migrate sqlite database %s: %w", s.where, err)
	}
	return nil
}

func newStore(db *sql.DB, dialect, where string) *Store {
	s := &Store{db: db, dialect: dialect, gq: goqu.Dialect(dialect), where: where}
	s.create.build, s.finish.build = s.createSQL, s.finishSQL
	if dialect == DialectSQLite {
		s.commits = newCommitter(s)
	}
	return s
}

// mysqlConfig turns a mysql:// URL into a driver configuration. Errors never
// repeat the URL, which may hold a password.
func mysqlConfig(raw string) (*mysql.Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// The parser's message quotes part of the URL, which may be the
		// password's (a "/" in it ends the host early): say nothing of it.
		return nil, errors.New("database URL: invalid mysql URL (mysql://user:pass@host:port/db; " +
			"characters such as / # ? @ : in the password must be percent-encoded)")
	}
	if u.User == nil || u.User.Username() == "" {
		return nil, errors.New("database URL: mysql URL has no user (mysql://user:pass@host:port/db)")
	}
	if u.Hostname() == "" {
		return nil, errors.New("database URL: mysql URL has no host")
	}
	port := u.Port()
	if port == "" {
		port = "3306"
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, errors.New("database URL: invalid mysql port: a number from 1 to 65535")
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	if dbName == "" || strings.Contains(dbName, "/") {
		return nil, errors.New("database URL: mysql URL needs exactly one database name in its path (mysql://user:pass@host:port/db)")
	}
	// MySQL's variable names are not case-sensitive: SQL_MODE is sql_mode.
	for key, values := range u.Query() {
		switch name := strings.ToLower(key); {
		case name == "sql_mode":
			return nil, errors.New("database URL: sql_mode is the service's own (strict): remove it from the URL")
		case name == "charset" || name == "collation":
			for _, v := range values {
				if v != "" && !strings.HasPrefix(strings.ToLower(v), "utf8mb4") {
					return nil, fmt.Errorf("database URL: %s %q: the tables hold utf8mb4 text, and another connection character set "+
						"would change or refuse what they hold (leave it out: utf8mb4 is the default)", key, v)
				}
			}
		}
	}
	dsn := "tcp(" + net.JoinHostPort(u.Hostname(), port) + ")/"
	if u.RawQuery != "" {
		dsn += "?" + u.RawQuery
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("database URL: mysql parameters: %w", err)
	}
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.DBName = dbName
	cfg.ParseTime = true
	cfg.Loc = time.UTC         // DATETIME columns hold UTC
	cfg.ClientFoundRows = true // rows affected = rows matched, as in SQLite
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["sql_mode"] = sqlMode
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	return cfg, nil
}

func newMySQL(raw string) (*Store, error) {
	cfg, err := mysqlConfig(raw)
	if err != nil {
		return nil, err
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	db := sql.OpenDB(connector)
	// Connections are checked before reuse and recycled, so a restarted
	// MariaDB is reconnected to without intervention.
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(8)
	db.SetConnMaxLifetime(5 * time.Minute)
	db.SetConnMaxIdleTime(time.Minute)
	return newStore(db, DialectMySQL, cfg.DBName+" at "+cfg.Addr), nil
}

// migrateMySQL runs the migrations while holding a server-wide advisory
// lock on one dedicated connection, so replicas starting together migrate
// one after the other.
func migrateMySQL(ctx context.Context, db *sql.DB) (err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", migrationLock, int(lockWait.Seconds())).Scan(&got); err != nil {
		return fmt.Errorf("take migration lock: %w", err)
	}
	if got.Int64 != 1 {
		return fmt.Errorf("take migration lock: not granted within %s", lockWait)
	}
	defer func() {
		var released sql.NullInt64
		// Even if ctx ended, release the lock; closing the connection would too.
		if rerr := conn.QueryRowContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(?)", migrationLock).Scan(&released); rerr != nil && err == nil {
			err = fmt.Errorf("release migration lock: %w", rerr)
		}
	}()
	return migrate(ctx, db, goose.DialectMySQL, "migrations/mysql")
}

func newSQLite(path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("database URL: sqlite URL has no file path (sqlite:///abs/file.db or sqlite://rel/file.db)")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("database URL: sqlite path %q must not contain '?' or '#'", path)
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("open sqlite database %s: %w", path, err)
		}
	}
	db, err := sql.Open("sqlite", path+"?"+sqlitePragmas)
	if err != nil {
		return nil, fmt.Errorf("open sqlite database %s: %w", path, err)
	}
	// One connection: writes are serialised in the process instead of
	// contending for the file lock, so goroutines never see SQLITE_BUSY.
	// Each statement is short, so this sustains thousands of writes a second.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return newStore(db, DialectSQLite, path), nil
}

// migrateSQLite connects (which switches the file to WAL) and runs the
// migrations while holding an exclusive flock on path.lock, so processes
// opening the same file at once migrate one after the other.
func migrateSQLite(ctx context.Context, db *sql.DB, path string) error {
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	defer f.Close() // closing releases the flock
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("migration lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration lock %s: %w", f.Name(), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	return migrate(ctx, db, goose.DialectSQLite3, "migrations/sqlite")
}

// current reports whether the schema is already at the newest migration
// this build carries: one query, instead of taking the migration lock and
// setting goose up, which a function scaled to zero would pay at every cold
// start. Any doubt (no table yet, an error) says no: Migrate then runs goose.
func (s *Store) current(ctx context.Context) bool {
	var version sql.NullInt64
	err := s.db.QueryRowContext(ctx, "SELECT MAX(version_id) FROM goose_db_version WHERE is_applied").Scan(&version)
	return err == nil && version.Valid && version.Int64 >= newestMigration(s.dialect)
}

// newestMigration is the highest version among the embedded migrations of
// dialect (their files are named NNNNN_what.sql).
func newestMigration(dialect string) int64 {
	dir := "migrations/sqlite"
	if dialect == DialectMySQL {
		dir = "migrations/mysql"
	}
	entries, _ := fs.ReadDir(migrations, dir)
	var newest int64
	for _, e := range entries {
		n, err := strconv.ParseInt(strings.SplitN(e.Name(), "_", 2)[0], 10, 64)
		if err == nil && n > newest {
			newest = n
		}
	}
	return newest
}

func migrate(ctx context.Context, db *sql.DB, dialect goose.Dialect, dir string) error {
	fsys, err := fs.Sub(migrations, dir)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	p, err := goose.NewProvider(dialect, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}
