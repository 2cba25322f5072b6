package staging

import (
	"context"
	"errors"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// admit checks a request before anything else happens to it, in the
// order every door gets: limits and well-formedness (Invalid, never
// recorded), who asks (Unauthenticated, Forbidden), then the method
// (Rejected) and what it needs. The limits come first so that nothing of
// unbounded size or of bytes the store cannot hold is ever recorded.
func (s *Service) admit(caller Caller, req *Request, opt Options) (Method, error) {
	depth := s.MaxPathDepth
	if depth <= 0 {
		depth = DefaultMaxPathDepth
	}
	for _, p := range []struct{ field, value string }{
		{"local_path_on_storage", req.Source}, {"relative_path", req.Target},
	} {
		if err := CheckPath(p.field, p.value, depth); err != nil {
			return nil, err
		}
	}
	if len(req.DID) > MaxDIDBytes {
		return nil, Errorf(Invalid, "did is longer than %d bytes", MaxDIDBytes)
	}
	if !utf8.ValidString(req.DID) {
		return nil, Errorf(Invalid, "did is not valid UTF-8")
	}
	// Rucio's names have no spaces, and MySQL's PAD SPACE collations
	// compare "scope:name " equal to "scope:name": a request for the one
	// was completed with the other's replica.
	if strings.IndexFunc(req.DID, blank) >= 0 {
		return nil, Errorf(Invalid, "did contains a space or a control character")
	}
	if len(req.JupyterToken) > MaxToken {
		return nil, Errorf(Invalid, "jupyter_token is longer than %d bytes", MaxToken)
	}
	if err := s.admitShared(caller, req, opt); err != nil {
		return nil, err
	}
	m, _ := s.lookup(req.Method) // admitShared checked it
	switch {
	case req.Source == "" && req.DID == "":
		return nil, Errorf(Invalid, "local_path_on_storage is required")
	case req.Source != "" && req.DID != "" && req.OperationID == "":
		return nil, Errorf(Invalid, "Give either local_path_on_storage or did, not both")
	case m.Traits().NeedsTarget && req.Target == "":
		return nil, Errorf(Invalid, "relative_path is required")
	}
	return m, nil
}

// blank reports a space or a control character: never part of a name
// the store compares (DIDs, users, ids).
func blank(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// admitShared checks what the items of a batch share: method, user, the
// caller's right to act for the user, and that the door can deliver what
// the method produces. A method not shaped like a method's name is
// malformed (Invalid); a well-formed one this service does not run is
// Rejected, and recorded.
func (s *Service) admitShared(caller Caller, req *Request, opt Options) error {
	switch {
	case req.Method == "":
		return Errorf(Invalid, "method is required")
	case !ValidMethodName(req.Method):
		return Errorf(Invalid, "Invalid method: must match %s", methodPattern)
	case req.Username == "":
		return Errorf(Invalid, "username is required")
	case !ValidUsername(req.Username):
		return Errorf(Invalid, "Invalid username: must match %s and not contain '..'", usernamePattern)
	}
	if err := authorize(caller, req.Username); err != nil {
		return err
	}
	m, err := s.lookup(req.Method)
	if err != nil {
		return err
	}
	if opt.Fetch && !m.Traits().Streams {
		return Errorf(Invalid, "A download link (GET, or a form post) only fetches content; to stage with %s, POST JSON (Content-Type: application/json)", req.Method)
	}
	if m.Traits().Streams && (!opt.Stream || opt.Async) {
		return Errorf(Invalid, "%s sends its content to the client: it takes one item over HTTP, not a batch, an event or an async request", req.Method)
	}
	return nil
}

// authorize is the one place that decides whether caller may act for
// username: users act for themselves, admins for anyone.
func authorize(caller Caller, username string) error {
	switch {
	case caller.Admin:
		return nil
	case caller.Anonymous():
		return Errorf(Unauthenticated, "Authentication is required")
	case caller.Name == username:
		return nil
	}
	return Errorf(Forbidden, "User %s may not stage data for user %s", caller.Name, username)
}

// ReadableName refuses, as Forbidden, a caller's own name that is not a
// username, before the store is asked for its records. The name comes
// from a token (the hub's or the identity provider's answer), not from
// the request: one that is not a username owns nothing here (staging
// refuses it), and MySQL compares "alice " equal to "alice", whose
// records it would answer.
func ReadableName(name string) error {
	if !ValidUsername(name) {
		return Errorf(Forbidden, "The token's user name %q is not a valid username (%s): it owns no records here",
			truncateTo(name, 200), usernamePattern)
	}
	return nil
}

// AuthorizeRead decides whether caller may read what belongs to username
// (operations, logs): the same rule as acting for them, refused in words
// of reading.
func AuthorizeRead(caller Caller, username string) error {
	err := authorize(caller, username)
	if k, _ := KindOf(err); k == Forbidden {
		return Errorf(Forbidden, "User %s may not read the records of user %s", caller.Name, username)
	}
	return err
}

// SourceResolver says where a source path leads inside the source
// storage (the storage, through its os.Root).
type SourceResolver interface {
	// Resolve returns p relative to the source storage with every link
	// resolved, and whether it is a folder.
	Resolve(p string) (real string, isDir bool, err error)
}

// authorizeSource decides whether caller may read source, by the path it
// really leads to: a request cannot step around a capability through a
// link. A source that does not exist yet (a DID's replica still awaited)
// is judged by where it would be (resolveScoped).
func (s *Service) authorizeSource(caller Caller, source string) error {
	if caller.Reads == nil || source == "" {
		return nil
	}
	denied := Errorf(Forbidden, "The token does not allow reading %s", source)
	if s.Sources == nil {
		return denied
	}
	real, isDir, err := s.resolveScoped(source)
	if real == "" {
		return err
	}
	if !caller.Reads.CanRead(real, isDir) {
		return denied
	}
	if k, _ := KindOf(err); k == Rejected {
		return nil // missing, judged by where it would be: a DID's replica still awaited
	}
	return err
}

// resolveScoped says where p leads for a capability check. A path that
// cannot be resolved (missing, a link leading out, a folder the service
// may not read) is judged by where its deepest folder that can be leads,
// its other elements after it, and returned with its error: the caller
// checks the scope first, so that what lies outside a caller's scopes,
// existing or not, is refused alike. A path outside the storage itself,
// which is nobody's, is returned as "" with its error.
func (s *Service) resolveScoped(p string) (real string, isDir bool, err error) {
	real, isDir, err = s.Sources.Resolve(p)
	if k, _ := KindOf(err); err == nil || (k != Rejected && k != Forbidden) {
		return real, isDir, err
	}
	// Bounded like a request's path, so a long one costs a few lookups.
	depth := max(s.MaxPathDepth, DefaultMaxPathDepth)
	rest := ""
	for dir, i := path.Clean(p), 0; i <= depth; i++ {
		rest = path.Join(path.Base(dir), rest)
		parent := path.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
		if r, _, perr := s.Sources.Resolve(dir); perr == nil {
			if real = path.Join(r, rest); real == ".." || strings.HasPrefix(real, "../") {
				return "", false, err
			}
			return real, false, err
		}
	}
	return "", false, err
}

// AuthorizeBrowse decides whether caller may list the source folder dir,
// and returns which of its entries they may see (by their paths relative
// to the storage, as the listing names them).
func (s *Service) AuthorizeBrowse(caller Caller, dir string) (func(path string, isDir bool) bool, error) {
	all := func(string, bool) bool { return true }
	switch {
	case caller.Anonymous():
		return nil, Errorf(Unauthenticated, "Authentication is required")
	case caller.Reads == nil:
		return all, nil
	case s.Sources == nil:
		return nil, Errorf(Forbidden, "The token does not allow browsing the source storage")
	}
	real := "."
	var err error
	if dir != "" {
		if real, _, err = s.resolveScoped(dir); real == "" {
			return nil, err
		}
	}
	if !caller.Reads.CanList(real) {
		return nil, Errorf(Forbidden, "The token does not allow browsing %s", dir)
	}
	if err != nil {
		return nil, err
	}
	return func(p string, isDir bool) bool {
		if r, d, err := s.Sources.Resolve(p); err == nil {
			p, isDir = r, d
		}
		return caller.Reads.CanRead(p, isDir) || (isDir && caller.Reads.CanList(p))
	}, nil
}

// AuthorizeAdmin lets only an admin through: what changes the storage
// itself, such as the file creator.
func AuthorizeAdmin(caller Caller) error {
	switch {
	case caller.Admin:
		return nil
	case caller.Anonymous():
		return Errorf(Unauthenticated, "Authentication is required")
	}
	return Errorf(Forbidden, "Only an administrator may do this")
}

// locate resolves req.DID to the path of its local replica. It reports
// whether the replica is there; if so req.Source is set to it. A method
// that streams cannot wait for it.
func (s *Service) locate(caller Caller, m Method, req *Request) (bool, error) {
	if s.DIDs == nil {
		return false, Errorf(Rejected, "Staging by DID needs RUCIO_RSE to be configured")
	}
	source, present, err := s.DIDs.Locate(req.DID)
	if err != nil {
		return false, err
	}
	if err := s.authorizeSource(caller, source); err != nil {
		return false, err
	}
	if present {
		req.Source = source
	} else if m.Traits().Streams {
		return false, Errorf(NotFound, "Replica of %s is not at this site yet", req.DID)
	}
	return present, nil
}

// Operations lists the operations matching f that caller may read: their
// own, or anyone's for an admin.
func (s *Service) Operations(ctx context.Context, caller Caller, f Filter) ([]Operation, error) {
	switch {
	case f.Username != "" && !ValidUsername(f.Username):
		return nil, Errorf(Invalid, "Invalid username")
	case f.Status != "" && !f.Status.Valid():
		return nil, Errorf(Invalid, "status must be pending, running, success or failed")
	}
	if !caller.Admin {
		if f.Username == "" {
			f.Username = caller.Name
		}
		if err := AuthorizeRead(caller, f.Username); err != nil {
			return nil, err
		}
		if err := ReadableName(f.Username); err != nil {
			return nil, err
		}
	}
	ops, err := s.Store.List(ctx, f)
	if err != nil {
		return nil, StoreFailure(err)
	}
	if ops == nil {
		ops = []Operation{}
	}
	return ops, nil
}

// Operation returns one operation caller may read. Another user's is
// answered as not found, so ids cannot be probed.
func (s *Service) Operation(ctx context.Context, caller Caller, id string) (*Operation, error) {
	if caller.Anonymous() {
		return nil, Errorf(Unauthenticated, "Authentication is required")
	}
	if id == "" || !validID(id) {
		// Not an id any operation has: the store is not asked, since
		// MySQL would find "<id> " (trailing spaces) as <id>.
		return nil, Errorf(NotFound, "Operation not found: %s", truncate(id))
	}
	op, err := s.Store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) || (err == nil && AuthorizeRead(caller, op.Username) != nil) {
		return nil, Errorf(NotFound, "Operation not found: %s", truncate(id))
	}
	if err != nil {
		return nil, StoreFailure(err)
	}
	return op, nil
}
