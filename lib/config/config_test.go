package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/eventauth"
)

// env is a map-backed lookup for Load.
type env map[string]string

func (e env) lookup(name string) (string, bool) {
	v, ok := e[name]
	return v, ok
}

// base is the smallest valid environment; cases add to or override it.
func base(extra env) env {
	e := env{"SOURCE_STORAGE_PATH": "/data/source", "TARGET_STORAGE_PATH": "/data/target"}
	for k, v := range extra {
		e[k] = v
	}
	return e
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(base(nil).lookup)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Port != 8080 {
		t.Errorf("Port = %d, want 8080", c.Port)
	}
	if c.AllowedMethods != nil {
		t.Errorf("AllowedMethods = %q, want none (every method)", c.AllowedMethods)
	}
	if c.HandoffTimeout != 15*time.Minute || c.MaxPathDepth != 64 {
		t.Errorf("HandoffTimeout = %s, MaxPathDepth = %d, want 15m and 64", c.HandoffTimeout, c.MaxPathDepth)
	}
	if c.MaxLogStreams != 1000 {
		t.Errorf("MaxLogStreams = %d, want 1000", c.MaxLogStreams)
	}
	if c.MaxInflight != 64 {
		t.Errorf("MaxInflight = %d, want 64", c.MaxInflight)
	}
	if c.MaxWaitingPerUser != 1000 {
		t.Errorf("MaxWaitingPerUser = %d, want 1000", c.MaxWaitingPerUser)
	}
	if limit := openFileLimit(); limit == 0 || c.MaxOpenFiles != limit/2 {
		t.Errorf("MaxOpenFiles = %d, want half the process's limit of %d", c.MaxOpenFiles, limit)
	}
	if c.DatabaseURL != DefaultDatabaseURL || !strings.HasPrefix(c.DatabaseURL, "sqlite://") {
		t.Errorf("DatabaseURL = %q, want %q", c.DatabaseURL, DefaultDatabaseURL)
	}
	if c.StagedFileMode != 0o440 {
		t.Errorf("StagedFileMode = %o, want 440", c.StagedFileMode)
	}
	if c.StagedDirMode != 0o550 {
		t.Errorf("StagedDirMode = %o, want 550", c.StagedDirMode)
	}
	if c.StagedOwner != (Owner{Mode: "none"}) {
		t.Errorf("StagedOwner = %+v, want none", c.StagedOwner)
	}
	if c.LogLevel != slog.LevelInfo {
		t.Errorf("LogLevel = %v, want INFO", c.LogLevel)
	}
	if c.CopyWorkers != 8 {
		t.Errorf("CopyWorkers = %d, want 8", c.CopyWorkers)
	}
	if c.EnableFileCreator {
		t.Error("EnableFileCreator = true by default")
	}
	if c.OperationLease != 15*time.Second {
		t.Errorf("OperationLease = %v, want 15s", c.OperationLease)
	}
	if c.Sink != "" || c.SymlinkTargetRoot != "" {
		t.Errorf("Sink = %q, SymlinkTargetRoot = %q, want both empty", c.Sink, c.SymlinkTargetRoot)
	}
	if c.SourceStoragePath != "/data/source" || c.TargetStoragePath != "/data/target" {
		t.Errorf("storage paths = %q, %q", c.SourceStoragePath, c.TargetStoragePath)
	}
}

func TestLoadRelativeStoragePathsAreMadeAbsolute(t *testing.T) {
	c, err := Load(env{"SOURCE_STORAGE_PATH": "src", "TARGET_STORAGE_PATH": " ./dst "}.lookup)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(wd, "src"); c.SourceStoragePath != want {
		t.Errorf("SourceStoragePath = %q, want %q", c.SourceStoragePath, want)
	}
	if want := filepath.Join(wd, "dst"); c.TargetStoragePath != want {
		t.Errorf("TargetStoragePath = %q, want %q", c.TargetStoragePath, want)
	}
}

func TestLoadAllowedMethods(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		want        []string
	}{
		{"helm JSON list", `["local_copy","local_symlink"]`, []string{"local_copy", "local_symlink"}},
		{"JSON list with spaces", `[ "direct_download" , "local_copy" ]`, []string{"direct_download", "local_copy"}},
		{"comma-separated", "local_copy,direct_download", []string{"local_copy", "direct_download"}},
		{"comma-separated with spaces", " local_symlink , jupyter_copy ", []string{"local_symlink", "jupyter_copy"}},
		{"duplicates dropped", "local_copy,local_copy", []string{"local_copy"}},
		{"single", "local_symlink", []string{"local_symlink"}},
		{"names checked against the registry at start, not here", "rucio_copy", []string{"rucio_copy"}},
		{"empty means all", "", nil},
		{"blank means all", "   ", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(base(env{"ALLOWED_METHODS": tc.value}).lookup)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !slices.Equal(c.AllowedMethods, tc.want) {
				t.Errorf("AllowedMethods = %q, want %q", c.AllowedMethods, tc.want)
			}
		})
	}
}

func TestLoadLoggingLevel(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  slog.Level
	}{
		{"DEBUG", slog.LevelDebug},
		{"Debug", slog.LevelDebug},
		{"debug", slog.LevelDebug},
		{"INFO", slog.LevelInfo},
		{"info", slog.LevelInfo},
		{"WARNING", slog.LevelWarn},
		{"warning", slog.LevelWarn},
		{"Warn", slog.LevelWarn},
		{"ERROR", slog.LevelError},
		{"error", slog.LevelError},
		{"CRITICAL", slog.LevelError},
		{"", slog.LevelInfo},
	} {
		t.Run(tc.value, func(t *testing.T) {
			c, err := Load(base(env{"LOGGING_LEVEL": tc.value}).lookup)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.LogLevel != tc.want {
				t.Errorf("LogLevel = %v, want %v", c.LogLevel, tc.want)
			}
		})
	}
}

func TestLoadStagedOwner(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  Owner
	}{
		{"none", Owner{Mode: "none"}},
		{"NONE", Owner{Mode: "none"}},
		{"user", Owner{Mode: "user"}},
		{"User", Owner{Mode: "user"}},
		{"1000:1000", Owner{Mode: "ids", UID: 1000, GID: 1000}},
		{"0:0", Owner{Mode: "ids", UID: 0, GID: 0}},
		{"1234:5678", Owner{Mode: "ids", UID: 1234, GID: 5678}},
	} {
		t.Run(tc.value, func(t *testing.T) {
			c, err := Load(base(env{"STAGED_OWNER": tc.value}).lookup)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.StagedOwner != tc.want {
				t.Errorf("StagedOwner = %+v, want %+v", c.StagedOwner, tc.want)
			}
		})
	}
}

func TestLoadOtherValues(t *testing.T) {
	c, err := Load(base(env{
		"PORT": "9090", "COPY_WORKERS": "3", "STAGED_FILE_MODE": "0440", "STAGED_DIR_MODE": "750",
		"ENABLE_FILE_CREATOR": "true", "DATABASE_URL": "mysql://u:p@db:3306/staging",
		"K_SINK": "http://broker-ingress.knative-eventing.svc/ns/default", "SYMLINK_TARGET_ROOT": "/mnt/source",
		"JUPYTERHUB_URL": "https://hub.example.org", "RUCIO_BASE_URL": "https://rucio.example.org:443",
		"OPERATION_LEASE": "1m30s", "READ_TIMEOUT": "1s", "MAX_INFLIGHT": "8", "MAX_OPEN_FILES": "200",
		"MAX_WAITING_PER_USER": "3",
	}).lookup)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Port != 9090 || c.CopyWorkers != 3 {
		t.Errorf("Port = %d, CopyWorkers = %d", c.Port, c.CopyWorkers)
	}
	if c.StagedFileMode != 0o440 || c.StagedDirMode != 0o750 {
		t.Errorf("modes = %o, %o, want 440, 750", c.StagedFileMode, c.StagedDirMode)
	}
	if !c.EnableFileCreator {
		t.Error("EnableFileCreator = false")
	}
	if c.DatabaseURL != "mysql://u:p@db:3306/staging" {
		t.Errorf("DatabaseURL = %q", c.DatabaseURL)
	}
	if c.Sink != "http://broker-ingress.knative-eventing.svc/ns/default" {
		t.Errorf("Sink = %q", c.Sink)
	}
	if c.OperationLease != 90*time.Second {
		t.Errorf("OperationLease = %v, want 1m30s", c.OperationLease)
	}
	if c.ReadTimeout != time.Second {
		t.Errorf("ReadTimeout = %v, want 1s", c.ReadTimeout)
	}
	if c.SymlinkTargetRoot != "/mnt/source" {
		t.Errorf("SymlinkTargetRoot = %q", c.SymlinkTargetRoot)
	}
	if c.MaxInflight != 8 || c.MaxOpenFiles != 200 {
		t.Errorf("MaxInflight = %d, MaxOpenFiles = %d, want 8 and 200", c.MaxInflight, c.MaxOpenFiles)
	}
	if c.MaxWaitingPerUser != 3 {
		t.Errorf("MaxWaitingPerUser = %d, want 3", c.MaxWaitingPerUser)
	}
}

// Every bad value fails Load with an error naming the variable.
func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      env
		variable string
		also     string // another substring the message must hold, if any
	}{
		{"method not a name", base(env{"ALLOWED_METHODS": `["local_copy","ftp://x"]`}), "ALLOWED_METHODS", `"ftp://x"`},
		{"method with wrong case", base(env{"ALLOWED_METHODS": "Local_Copy"}), "ALLOWED_METHODS", ""},
		{"trailing comma", base(env{"ALLOWED_METHODS": "local_copy,"}), "ALLOWED_METHODS", ""},
		{"malformed JSON list", base(env{"ALLOWED_METHODS": `["local_copy",`}), "ALLOWED_METHODS", ""},
		{"JSON list of numbers", base(env{"ALLOWED_METHODS": `[1,2]`}), "ALLOWED_METHODS", ""},
		{"bad logging level", base(env{"LOGGING_LEVEL": "VERBOSE"}), "LOGGING_LEVEL", `"VERBOSE"`},
		{"numeric logging level", base(env{"LOGGING_LEVEL": "10"}), "LOGGING_LEVEL", ""},
		{"owner word", base(env{"STAGED_OWNER": "root"}), "STAGED_OWNER", `"root"`},
		{"owner uid only", base(env{"STAGED_OWNER": "1000"}), "STAGED_OWNER", ""},
		{"owner negative", base(env{"STAGED_OWNER": "-1:1000"}), "STAGED_OWNER", ""},
		{"owner names", base(env{"STAGED_OWNER": "alice:staff"}), "STAGED_OWNER", ""},
		{"owner three parts", base(env{"STAGED_OWNER": "1:2:3"}), "STAGED_OWNER", ""},
		{"port not a number", base(env{"PORT": "http"}), "PORT", `"http"`},
		{"port zero", base(env{"PORT": "0"}), "PORT", ""},
		{"port too large", base(env{"PORT": "65536"}), "PORT", ""},
		{"copy workers zero", base(env{"COPY_WORKERS": "0"}), "COPY_WORKERS", ""},
		{"handoff timeout not a duration", base(env{"HANDOFF_TIMEOUT": "15"}), "HANDOFF_TIMEOUT", `"15"`},
		{"handoff timeout too short", base(env{"HANDOFF_TIMEOUT": "10ms"}), "HANDOFF_TIMEOUT", ""},
		{"path depth zero", base(env{"MAX_PATH_DEPTH": "0"}), "MAX_PATH_DEPTH", ""},
		{"log streams zero", base(env{"MAX_LOG_STREAMS": "0"}), "MAX_LOG_STREAMS", ""},
		{"log streams not a number", base(env{"MAX_LOG_STREAMS": "many"}), "MAX_LOG_STREAMS", ""},
		{"path depth not a number", base(env{"MAX_PATH_DEPTH": "deep"}), "MAX_PATH_DEPTH", ""},
		{"in flight zero", base(env{"MAX_INFLIGHT": "0"}), "MAX_INFLIGHT", ""},
		{"in flight not a number", base(env{"MAX_INFLIGHT": "lots"}), "MAX_INFLIGHT", `"lots"`},
		{"waiting per user zero", base(env{"MAX_WAITING_PER_USER": "0"}), "MAX_WAITING_PER_USER", "from 1 to 100000"},
		{"waiting per user too large", base(env{"MAX_WAITING_PER_USER": "100001"}), "MAX_WAITING_PER_USER", `"100001"`},
		{"waiting per user not a number", base(env{"MAX_WAITING_PER_USER": "many"}), "MAX_WAITING_PER_USER", `"many"`},
		{"open files zero", base(env{"MAX_OPEN_FILES": "0"}), "MAX_OPEN_FILES", ""},
		{"open files beyond the process's", base(env{"MAX_OPEN_FILES": "2000000000"}), "MAX_OPEN_FILES", "the process may open"},
		{"database postgres", base(env{"DATABASE_URL": "postgres://u:p@db/staging"}), "DATABASE_URL", ""},
		{"database bare path", base(env{"DATABASE_URL": "/var/lib/staging.db"}), "DATABASE_URL", ""},
		{"sink no scheme", base(env{"K_SINK": "broker.default.svc"}), "K_SINK", ""},
		{"sink wrong scheme", base(env{"K_SINK": "ftp://broker"}), "K_SINK", ""},
		{"sink no host", base(env{"K_SINK": "http://"}), "K_SINK", ""},
		{"sink unparsable", base(env{"K_SINK": "http://bad host/%zz"}), "K_SINK", ""},
		{"jupyterhub not a URL", base(env{"JUPYTERHUB_URL": "hub"}), "JUPYTERHUB_URL", ""},
		{"relative symlink target root", base(env{"SYMLINK_TARGET_ROOT": "mnt/source"}), "SYMLINK_TARGET_ROOT", `"mnt/source"`},
		{"file mode not octal", base(env{"STAGED_FILE_MODE": "0489"}), "STAGED_FILE_MODE", ""},
		{"dir mode too large", base(env{"STAGED_DIR_MODE": "01777"}), "STAGED_DIR_MODE", ""},
		{"file creator not bool", base(env{"ENABLE_FILE_CREATOR": "yes"}), "ENABLE_FILE_CREATOR", ""},
		{"lease not a duration", base(env{"OPERATION_LEASE": "15"}), "OPERATION_LEASE", `"15"`},
		{"lease too short", base(env{"OPERATION_LEASE": "10ms"}), "OPERATION_LEASE", ""},
		{"lease negative", base(env{"OPERATION_LEASE": "-5s"}), "OPERATION_LEASE", ""},
		{"read timeout not a duration", base(env{"READ_TIMEOUT": "120"}), "READ_TIMEOUT", `"120"`},
		{"read timeout too short", base(env{"READ_TIMEOUT": "1ms"}), "READ_TIMEOUT", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.env.lookup)
			if err == nil {
				t.Fatalf("Load succeeded with %+v, want an error naming %s", c, tc.variable)
			}
			if !strings.Contains(err.Error(), tc.variable) {
				t.Errorf("error %q does not name %s", err, tc.variable)
			}
			if tc.also != "" && !strings.Contains(err.Error(), tc.also) {
				t.Errorf("error %q does not contain %s", err, tc.also)
			}
		})
	}
}

func TestEmptyAllowedMethodsIsAnError(t *testing.T) {
	for _, v := range []string{"[]", " , ", `["local_copy",""]`} {
		env := map[string]string{"SOURCE_STORAGE_PATH": "/src", "TARGET_STORAGE_PATH": "/dst", "ALLOWED_METHODS": v}
		_, err := Load(func(k string) (string, bool) { x, ok := env[k]; return x, ok })
		if err == nil || !strings.Contains(err.Error(), "ALLOWED_METHODS") {
			t.Errorf("ALLOWED_METHODS=%q: %v", v, err)
		}
	}
}

func TestLoadOIDC(t *testing.T) {
	c, err := Load(base(env{"AUTH_MODE": "OIDC", "OIDC_ISSUER_URL": "https://iam.example.org/", "OIDC_AUDIENCE": "staging",
		"OIDC_ADMIN_GROUPS": `["/skao/admins","/ops"]`, "OIDC_LEEWAY": "30s", "AUTHZ_STORAGE_SCOPES": "true",
		"OIDC_CLIENT_ID": "page"}).lookup)
	if err != nil {
		t.Fatal(err)
	}
	o := c.OIDC
	if c.AuthMode != "oidc" || o.IssuerURL != "https://iam.example.org/" || o.Audience != "staging" || o.UsernameClaim != "preferred_username" ||
		strings.Join(o.AdminGroups, " ") != "/skao/admins /ops" || o.Leeway != 30*time.Second || !o.StorageScopes ||
		o.ClientID != "page" || o.Scopes != "openid profile" {
		t.Fatalf("%+v", c.OIDC)
	}
	if c, _ := Load(base(env{"OIDC_ISSUER_URL": "https://iam.example.org/"}).lookup); c.OIDC.IssuerURL != "" {
		t.Error("OIDC settings read with AUTH_MODE=none")
	}
	if c, _ := Load(base(env{"AUTH_MODE": "oidc", "OIDC_ISSUER_URL": "https://i/", "OIDC_AUDIENCE": "a", "OIDC_ADMIN_GROUPS": " a , b "}).lookup); strings.Join(c.OIDC.AdminGroups, "|") != "a|b" {
		t.Errorf("comma-separated admin groups: %q", c.OIDC.AdminGroups)
	}
}

func TestLoadEvents(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("a-secret-of-at-least-thirty-two-bytes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(base(env{"EVENT_AUTH": "hmac", "EVENT_HMAC_SECRET_FILE": secret}).lookup)
	if err != nil || c.Events.Auth != "hmac" || c.Events.HMACSecret != "a-secret-of-at-least-thirty-two-bytes\n" {
		t.Fatalf("%+v %v", c.Events, err)
	}
	c, err = Load(base(env{"EVENT_AUTH": "oidc", "EVENT_OIDC_AUDIENCE": "fn", "EVENT_SENDERS": "*=system:serviceaccount:a:b",
		"EVENT_TOKEN_FILE": "/var/run/token"}).lookup)
	if err != nil || c.Events.Audience != "fn" || c.Events.Senders != "*=system:serviceaccount:a:b" || c.Events.TokenFile != "/var/run/token" {
		t.Fatalf("%+v %v", c.Events, err)
	}
	if c, _ := Load(base(nil).lookup); c.Events.Auth != "none" {
		t.Errorf("EVENT_AUTH default %q", c.Events.Auth)
	}
	// The default is the one the verifier would take for none.
	if c, _ := Load(base(nil).lookup); c.Events.MaxAge != eventauth.DefaultMaxAge {
		t.Errorf("EVENT_MAX_AGE default %s, want %s", c.Events.MaxAge, eventauth.DefaultMaxAge)
	}
	if c, err := Load(base(env{"EVENT_MAX_AGE": "90m"}).lookup); err != nil || c.Events.MaxAge != 90*time.Minute {
		t.Errorf("EVENT_MAX_AGE=90m: %s %v", c.Events.MaxAge, err)
	}
}

func TestLoadAuthErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      env
		variable string
	}{
		{"oidc without issuer", base(env{"AUTH_MODE": "oidc", "OIDC_AUDIENCE": "a"}), "OIDC_ISSUER_URL"},
		{"oidc without audience", base(env{"AUTH_MODE": "oidc", "OIDC_ISSUER_URL": "https://i/"}), "OIDC_AUDIENCE"},
		{"issuer not a URL", base(env{"AUTH_MODE": "oidc", "OIDC_ISSUER_URL": "iam", "OIDC_AUDIENCE": "a"}), "OIDC_ISSUER_URL"},
		{"leeway too long", base(env{"AUTH_MODE": "oidc", "OIDC_ISSUER_URL": "https://i/", "OIDC_AUDIENCE": "a", "OIDC_LEEWAY": "1h"}), "OIDC_LEEWAY"},
		{"admin groups not a list", base(env{"AUTH_MODE": "oidc", "OIDC_ISSUER_URL": "https://i/", "OIDC_AUDIENCE": "a", "OIDC_ADMIN_GROUPS": "[1"}), "OIDC_ADMIN_GROUPS"},
		{"scopes not a bool", base(env{"AUTH_MODE": "oidc", "OIDC_ISSUER_URL": "https://i/", "OIDC_AUDIENCE": "a", "AUTHZ_STORAGE_SCOPES": "maybe"}), "AUTHZ_STORAGE_SCOPES"},
		{"unknown auth mode", base(env{"AUTH_MODE": "ldap"}), "AUTH_MODE"},
		{"unknown event auth", base(env{"EVENT_AUTH": "mtls"}), "EVENT_AUTH"},
		{"secret twice", base(env{"EVENT_HMAC_SECRET": "x", "EVENT_HMAC_SECRET_FILE": "/f"}), "EVENT_HMAC_SECRET_FILE"},
		{"secret file missing", base(env{"EVENT_HMAC_SECRET_FILE": "/nonexistent/secret"}), "EVENT_HMAC_SECRET_FILE"},
		{"max age not a duration", base(env{"EVENT_MAX_AGE": "2 hours"}), "EVENT_MAX_AGE"},
		{"max age too short", base(env{"EVENT_MAX_AGE": "30s"}), "EVENT_MAX_AGE"},
		{"max age negative", base(env{"EVENT_MAX_AGE": "-2h"}), "EVENT_MAX_AGE"},
	} {
		_, err := Load(tc.env.lookup)
		if err == nil || !strings.Contains(err.Error(), tc.variable) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.variable)
		}
	}
}

// MAX_OPEN_FILES is bounded by the process's own limit of open files,
// leaving some for connections; by default it is half of it.
func TestMaxOpenFiles(t *testing.T) {
	for _, tc := range []struct {
		v     string
		limit int
		want  int // 0: an error
	}{
		{"", 1_048_576, 524_288},
		{"", 1024, 512},
		{"", 0, 512}, // unknown: the usual soft limit of 1024
		{"", 1, 1},
		{"100", 1024, 100},
		{"960", 1024, 960},
		{"961", 1024, 0},
		{"0", 1024, 0},
		{"-5", 1024, 0},
		{"many", 1024, 0},
	} {
		got, err := maxOpenFiles(tc.v, tc.limit)
		if (err != nil) != (tc.want == 0) || got != tc.want {
			t.Errorf("maxOpenFiles(%q, %d) = %d, %v; want %d", tc.v, tc.limit, got, err, tc.want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "MAX_OPEN_FILES: ") {
			t.Errorf("error %q does not name the variable first", err)
		}
	}
}
