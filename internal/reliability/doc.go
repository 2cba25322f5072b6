// Package reliability holds the fault, load and hostile-input suite of the
// staging service. Its tests start the real function binaries, real MariaDB
// servers (internal/testenv) and real clients, then take things away: a
// replica killed mid-copy or stopped under load, the database stopped, the
// user area full, events redelivered, paths and bodies built to escape or
// exhaust, FIFOs and devices named by floods of requests, a tree of a
// million files. Each test asserts what the service promises in that case.
//
// `go test ./internal/reliability` (part of `make test`) runs the fast
// variant of every scenario, a few seconds each. With RELIABILITY=full
// (`make reliability`) they run at full size: 20,000 requests from 32
// clients, a 1 GiB copy killed midway, longer outages. With
// RELIABILITY_RESULTS=<file> the figures measured (throughput, latency,
// error counts, timings) are written to that file as Markdown.
package reliability
