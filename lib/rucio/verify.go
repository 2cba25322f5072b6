package rucio

import (
	"context"
	"sync"
	"time"

	"github.com/ska-telescope/skao-staging-service/lib/staging"
)

// Bounds of the replica checks a Completer keeps.
const (
	maxChecks       = 1024      // checks remembered, running ones included
	maxReading      = 2         // checks reading a replica at once
	checkRemembered = time.Hour // how long an outcome answers redeliveries
)

// checks runs the checks of replicas (size and checksum, which reads the
// whole file) once per replica and message, whoever asks: a redelivery of
// a transfer-done whose first delivery timed out while the checksum was
// being computed waits for that check or takes its outcome, instead of
// reading the replica again; a check goes on when its asker stops waiting.
// Only lasting outcomes are kept (the replica checks out, or does not).
type checks struct {
	mu      sync.Mutex
	byKey   map[checkKey]*check
	reading chan struct{} // a slot per replica being read
}

// checkKey names a check: the replica as it is on disk, and what the
// message says of it.
type checkKey struct {
	path        string
	size, mtime int64
	wantSize    int64
	adler, md5  string
}

type check struct {
	done chan struct{}
	err  error
	at   time.Time // when it ended
}

// run returns the outcome of verify for key: a remembered one, the one of
// a check running for it, or that of a new check. It waits at most until
// ctx ends; the check goes on.
func (c *checks) run(ctx context.Context, key checkKey, did string, verify func() error) error {
	c.mu.Lock()
	if c.byKey == nil {
		c.byKey = map[checkKey]*check{}
		c.reading = make(chan struct{}, maxReading)
	}
	ch, ok := c.byKey[key]
	if ok && ch.ended() && time.Since(ch.at) > checkRemembered {
		delete(c.byKey, key)
		ok = false
	}
	if !ok {
		if len(c.byKey) >= maxChecks && !c.forgetEnded() {
			c.mu.Unlock()
			return staging.Errorf(staging.TooMany, "Too many replicas being verified here: try again shortly")
		}
		ch = &check{done: make(chan struct{})}
		c.byKey[key] = ch
		go c.verify(key, ch, verify)
	}
	c.mu.Unlock()
	select {
	case <-ch.done:
		return ch.err
	case <-ctx.Done():
		return staging.Wrap(staging.Unavailable, "The replica of "+did+" is being verified: try again shortly", ctx.Err())
	}
}

// verify runs one check in a reading slot, and keeps its outcome if it
// lasts.
func (c *checks) verify(key checkKey, ch *check, verify func() error) {
	c.reading <- struct{}{}
	err := verify()
	<-c.reading
	c.mu.Lock()
	defer c.mu.Unlock()
	ch.err, ch.at = err, time.Now()
	close(ch.done)
	if err != nil && staging.Transient(err) {
		delete(c.byKey, key) // the next delivery tries again
	}
}

func (ch *check) ended() bool {
	select {
	case <-ch.done:
		return true
	default:
		return false
	}
}

// forgetEnded drops the outcomes of ended checks, to make room; it
// reports whether there is room now. c.mu is held.
func (c *checks) forgetEnded() bool {
	for k, ch := range c.byKey {
		if ch.ended() {
			delete(c.byKey, k)
		}
	}
	return len(c.byKey) < maxChecks
}
