package config

import (
	"strings"
	"testing"
	"time"
)

func TestLoadLogStore(t *testing.T) {
	for _, tc := range []struct {
		vars      env
		toStore   bool
		retention time.Duration
		bad       string // the variable an error names
	}{
		{vars: nil, toStore: true, retention: 168 * time.Hour},
		{vars: env{"LOG_TO_STORE": "false"}, toStore: false, retention: 168 * time.Hour},
		{vars: env{"LOG_RETENTION": "24h"}, toStore: true, retention: 24 * time.Hour},
		{vars: env{"LOG_TO_STORE": "sometimes"}, bad: "LOG_TO_STORE"},
		{vars: env{"LOG_RETENTION": "a week"}, bad: "LOG_RETENTION"},
		{vars: env{"LOG_RETENTION": "10s"}, bad: "LOG_RETENTION"},
	} {
		c, err := Load(base(tc.vars).lookup)
		if tc.bad != "" {
			if err == nil || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("%v: error %v, want one naming %s", tc.vars, err, tc.bad)
			}
			continue
		}
		if err != nil || c.LogToStore != tc.toStore || c.LogRetention != tc.retention {
			t.Errorf("%v: LogToStore %v, LogRetention %v, %v; want %v, %v", tc.vars, c.LogToStore, c.LogRetention, err, tc.toStore, tc.retention)
		}
	}
}
