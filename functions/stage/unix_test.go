package main

import (
	"context"
	"io/fs"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/ska-telescope/skao-staging-service/internal/testenv"
)

func ownerOf(info fs.FileInfo) (int, int) {
	st := info.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

func testenvBinary(t *testing.T) string { return testenv.FunctionBinary(t, "stage") }

// runWithEnv runs bin with exactly env and returns its output.
func runWithEnv(bin string, env []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}
