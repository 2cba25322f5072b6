package eventauth

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
)

// HMACSubject is the sender of an event signed with the shared secret.
const HMACSubject = "hmac"

// AnyType in EVENT_SENDERS stands for every event type.
const AnyType = "*"

// Senders is the EVENT_SENDERS allow-list: for each event type, who may
// send it. A sender allowed for AnyType may send every type.
type Senders map[string][]string

// The expressions are compiled when EVENT_SENDERS is first read, not at
// every start.
var (
	eventType = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/+-]*$`) })
	// A namespace is a DNS label, a service account name a DNS subdomain.
	dnsLabel     = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`) })
	dnsSubdomain = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	})
)

// ParseSenders reads EVENT_SENDERS: entries separated by ";" or new lines,
// each an event type (or "*" for every type), "=", and the senders allowed
// to send it separated by ",":
//
//	org.skao.staging.request=system:serviceaccount:skao:broker-trigger-oidc,system:serviceaccount:rucio:events;
//	io.rucio.transfer-done=system:serviceaccount:rucio:events
//
// A sender is a Kubernetes service account's subject,
// system:serviceaccount:<namespace>:<name> (the subject of Knative
// Eventing's tokens; a Trigger's is in its status.auth.serviceAccountName),
// or "hmac" for events signed with the shared secret. Spaces around items
// are ignored; a type given twice, a sender given twice for one type, or
// anything else is an error.
func ParseSenders(s string) (Senders, error) {
	out := Senders{}
	for _, entry := range strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == '\n' }) {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		typ, list, ok := strings.Cut(entry, "=")
		typ = strings.TrimSpace(typ)
		if !ok {
			return nil, fmt.Errorf("%q: want <event type>=<sender>[,<sender>...]", entry)
		}
		if typ != AnyType && !eventType().MatchString(typ) {
			return nil, fmt.Errorf("%q: %q is not an event type (letters, digits and . _ : / + -) nor %q", entry, typ, AnyType)
		}
		if _, dup := out[typ]; dup {
			return nil, fmt.Errorf("event type %q is listed twice", typ)
		}
		var subjects []string
		for _, sub := range strings.Split(list, ",") {
			sub = strings.TrimSpace(sub)
			if err := checkSubject(sub); err != nil {
				return nil, fmt.Errorf("%q: %w", entry, err)
			}
			if slices.Contains(subjects, sub) {
				return nil, fmt.Errorf("%q: sender %q is listed twice", entry, sub)
			}
			subjects = append(subjects, sub)
		}
		out[typ] = subjects
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no entries")
	}
	return out, nil
}

func checkSubject(s string) error {
	if s == HMACSubject {
		return nil
	}
	rest, ok := strings.CutPrefix(s, "system:serviceaccount:")
	ns, name, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || len(ns) > 63 || len(name) > 253 || !dnsLabel().MatchString(ns) || !dnsSubdomain().MatchString(name) {
		return fmt.Errorf("sender %q is not system:serviceaccount:<namespace>:<name> nor %q", s, HMACSubject)
	}
	return nil
}

// Allows reports whether subject may send events of type typ.
func (s Senders) Allows(typ, subject string) bool {
	return subject != "" && (slices.Contains(s[typ], subject) || slices.Contains(s[AnyType], subject))
}

// String writes the allow-list back in EVENT_SENDERS syntax, types sorted.
func (s Senders) String() string {
	types := make([]string, 0, len(s))
	for t := range s {
		types = append(types, t)
	}
	sort.Strings(types)
	entries := make([]string, len(types))
	for i, t := range types {
		entries[i] = t + "=" + strings.Join(s[t], ",")
	}
	return strings.Join(entries, ";")
}
