// Package staging is the domain of the SKAO Staging Service: what a staging
// request is, the operation that records it, the methods that carry it out and
// the pipeline every door (HTTP, CloudEvents, batch, async) sends it through.
//
// Sub-packages implement what the domain needs from the outside world:
// config (environment), storage (traversal-safe roots), store (goqu over MySQL
// or the embedded SQLite), methods (local_copy, local_symlink,
// direct_download), events (CloudEvents glue) and server (the Knative runtime
// contract). Functions under functions/ only wire these together.
package staging
