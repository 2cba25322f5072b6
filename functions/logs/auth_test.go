package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
	"github.com/ska-telescope/skao-staging-service/lib/logging"
)

// TestReadsScopedByCaller: with AUTH_MODE=jupyterhub, /logs (follow
// included) shows a user the records about themselves, an admin
// everyone's; no token or an unknown one is 401, asking for another
// user's records 403.
func TestReadsScopedByCaller(t *testing.T) {
	hub := testenv.Hub(t)
	c := newCluster(t, map[string]string{"AUTH_MODE": "jupyterhub", "JUPYTERHUB_URL": hub.URL})
	owner, other := hub.NewHubUser(t, "logowner", false), hub.NewHubUser(t, "logother", false)
	admin := hub.NewHubUser(t, "logadmin", true)
	ownerTok, otherTok, adminTok := hub.UserToken(t, owner), hub.UserToken(t, other), hub.UserToken(t, admin)
	a := c.start(t, "stage", nil)
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"token " + tok}} }
	mine := stage(t, http.DefaultClient, a, owner, 0, bearer(ownerTok))
	theirs := stage(t, http.DefaultClient, a, other, 1, bearer(otherTok))

	records := func(query, tok string) (int, []logging.Record) {
		status, body, _ := c.get(t, "format=json&"+query, bearer(tok))
		var recs []logging.Record
		if status == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &recs); err != nil {
				t.Fatalf("%s: %v", query, err)
			}
		}
		return status, recs
	}
	// The admin sees both stagings, once the writers have flushed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, recs := records("", adminTok)
		if len(finished(recs, mine, theirs)) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin never saw both stagings:\n%s", texts(recs))
		}
		time.Sleep(50 * time.Millisecond)
	}
	status, recs := records("", ownerTok)
	if status != http.StatusOK || len(finished(recs, mine)) != 1 {
		t.Fatalf("owner: %d, %d of their records", status, len(finished(recs, mine)))
	}
	for _, r := range recs {
		if r.Username != owner {
			t.Errorf("the owner sees a record about %q: %s", r.Username, r.Text())
		}
	}
	if status, recs = records("username="+owner, ownerTok); status != http.StatusOK || len(finished(recs, mine)) != 1 {
		t.Errorf("owner naming themselves: %d", status)
	}
	if status, _ = records("username="+other, ownerTok); status != http.StatusForbidden {
		t.Errorf("owner reading another user's records: %d, want 403", status)
	}
	if status, _ = records("username="+owner, adminTok); status != http.StatusOK {
		t.Errorf("admin reading the owner's records: %d", status)
	}
	// An anonymous caller learns nothing but 401, whatever it asks: not
	// even which parameters are bad.
	for _, tok := range []string{"", "not-a-token"} {
		for _, query := range []string{"", "limit=0", "after=x", "follow=maybe", "username=../x", "follow=true&after=1"} {
			if status, _ = records(query, tok); status != http.StatusUnauthorized {
				t.Errorf("token %q, %q: %d, want 401", tok, query, status)
			}
		}
	}

	// Following: the same rules, and the stream carries only the caller's.
	follow := func(ctx context.Context, tok, query string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.logs.URL+"/logs?follow=true&format=json&"+query, nil)
		if tok != "" {
			req.Header.Set("Authorization", "token "+tok)
		}
		return http.DefaultClient.Do(req)
	}
	for _, tc := range []struct {
		tok, query string
		want       int
	}{
		{"", "", http.StatusUnauthorized}, {ownerTok, "username=" + other, http.StatusForbidden},
	} {
		resp, err := follow(context.Background(), tc.tok, tc.query)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("follow %q with token %v: %d, want %d", tc.query, tc.tok != "", resp.StatusCode, tc.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := follow(ctx, ownerTok, "")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("owner follows: %v %v", resp, err)
	}
	defer resp.Body.Close()
	events := make(chan logging.Record, 1000)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var r logging.Record
				if json.Unmarshal([]byte(data), &r) == nil {
					events <- r
				}
			}
		}
		close(events)
	}()
	theirsLive := stage(t, http.DefaultClient, a, other, 2, bearer(otherTok))
	mineLive := stage(t, http.DefaultClient, a, owner, 3, bearer(ownerTok))
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r, ok := <-events:
			if !ok {
				t.Fatal("the stream ended")
			}
			if r.Username != owner || r.Operation == theirsLive {
				t.Fatalf("the owner's stream carries %s", r.Text())
			}
			if r.Operation == mineLive && r.Message == "staging finished" {
				return
			}
		case <-timeout:
			t.Fatal("the owner's new record never came")
		}
	}
}
