// Package staging is the domain of the SKAO Staging Service: what a staging
// request is and who asks for it (Request, Caller), the operation that
// records it, the methods that carry it out with the traits they declare,
// the kinds of failure, and the one pipeline (Service) that every door —
// HTTP single, batch and async, CloudEvents, the internal hand-off, Rucio's
// transfer-done, the jupyter hand-off — sends its requests through:
//
//	admit     limits, then who asks, then the method   -> invalid / unauthenticated / forbidden / rejected
//	resolve   the DID's replica, the method's paths    -> waits (pending) or not found / forbidden
//	reserve   a slot of the work in flight here        -> too_many, nothing recorded (inflight.go)
//	record    one row, keyed by event or operation     -> a redelivery replays the first outcome
//	run       here, in another function, or later      -> under this replica's lease
//	finish    only while still held                    -> a final status is never rewritten
//
// Doors only decode their input into a Request and a Caller, call Handle
// (or HandleBatch) once, and render the Outcome or the error's Kind in
// their own language. Implementations of what the domain needs from the
// outside live in sibling packages: store (goqu over MySQL or SQLite),
// storage (traversal-safe roots), methods, events (CloudEvents), rucio.
package staging
