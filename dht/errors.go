package dht

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of these (and
// the operation that failed), so callers test with errors.Is.
var (
	// ErrNotFound means no server returned a valid, unexpired record for
	// the key. The wrapping *QueryError lists what each server said.
	ErrNotFound = errors.New("record not found")

	// ErrNotStored means no server accepted a Put. The wrapping
	// *QueryError lists each server's reason.
	ErrNotStored = errors.New("no server stored the record")

	// ErrNoServers means Put or Get was called with an empty server list;
	// configure at least one bootstrap node.
	ErrNoServers = errors.New("no DHT servers to ask; configure a bootstrap node")

	// ErrReplay means the record's sequence number is lower than the one
	// already stored: an old record was replayed, or the publisher must
	// increase its sequence number.
	ErrReplay = errors.New("stale sequence number (replayed or outdated record)")

	// ErrConflict means a different record with the same sequence number
	// is already stored; the publisher must increase its sequence number.
	ErrConflict = errors.New("different record with the same sequence number already stored")

	// ErrInvalid means the Validator rejected the record.
	ErrInvalid = errors.New("invalid record")

	// ErrGossipIgnored, wrapped by a GossipOptions.Validate error, drops
	// a payload that is not valid now but is no evidence of misbehaviour
	// either (a statement that cannot be judged yet, such as the successor
	// of a change not yet held): it is neither delivered nor forwarded nor
	// remembered, so a later copy is validated again, and its sender is
	// not scored.
	ErrGossipIgnored = errors.New("gossip payload ignored for now")

	// ErrExpired means the record's expiry time has passed.
	ErrExpired = errors.New("record expired")

	// ErrTooLarge means the record exceeds the per-record size cap.
	ErrTooLarge = errors.New("record too large")

	// ErrFull means accepting the record would exceed the store's total
	// size cap.
	ErrFull = errors.New("record store full")

	// ErrRateLimited means the peer sent stores faster than its rate limit
	// allows; retry later.
	ErrRateLimited = errors.New("rate limited; retry later")

	// ErrMalformed means a message could not be decoded.
	ErrMalformed = errors.New("malformed message")

	// ErrClosed means the Store has been closed.
	ErrClosed = errors.New("dht store closed")
)

// StoreError is the rejection of a record by a Store, or by a remote server's
// Store as reported in a STORE reply. It unwraps to Reason, one of the
// sentinels above.
type StoreError struct {
	Key       Key
	Reason    error  // ErrReplay, ErrConflict, ErrInvalid, ...
	Seq       uint64 // sequence number of the rejected record, if known
	StoredSeq uint64 // sequence number of the stored record for ErrReplay/ErrConflict
	Detail    string // free-form detail (validator message, sizes)
	Err       error  // underlying cause, e.g. the Validator's error; may be nil
}

func (e *StoreError) Error() string {
	msg := fmt.Sprintf("dht store %s: %v", e.Key.Short(), e.Reason)
	switch {
	case errors.Is(e.Reason, ErrReplay):
		msg += fmt.Sprintf(": seq %d is older than stored seq %d; publish with seq > %d", e.Seq, e.StoredSeq, e.StoredSeq)
	case errors.Is(e.Reason, ErrConflict):
		msg += fmt.Sprintf(": seq %d; publish with seq > %d", e.Seq, e.StoredSeq)
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

func (e *StoreError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.Err}
}

// ServerError is what one server answered, or failed to answer, in a Get or
// Put.
type ServerError struct {
	Server Peer
	Err    error
}

func (e ServerError) Error() string { return fmt.Sprintf("%s: %v", e.Server, e.Err) }

func (e ServerError) Unwrap() error { return e.Err }

// QueryError is returned by Client.Get and Client.Put when no server gave a
// usable answer. It unwraps to Err (ErrNotFound for Get, or ErrNoServers)
// and to each server's error, so errors.Is(err, ErrNotFound),
// errors.Is(err, ErrReplay) and errors.Is(err, context.DeadlineExceeded)
// all work.
type QueryError struct {
	Op       string // "get" or "put"
	Key      Key
	Err      error
	Failures []ServerError
}

func (e *QueryError) Error() string {
	msg := fmt.Sprintf("dht %s %s: %v", e.Op, e.Key.Short(), e.Err)
	if len(e.Failures) == 0 {
		return msg
	}
	if len(e.Failures) == 1 {
		msg += " (asked 1 server:"
	} else {
		msg += fmt.Sprintf(" (asked %d servers:", len(e.Failures))
	}
	for i, f := range e.Failures {
		if i > 0 {
			msg += ";"
		}
		msg += " " + f.Error()
	}
	return msg + ")"
}

func (e *QueryError) Unwrap() []error {
	errs := make([]error, 0, 1+len(e.Failures))
	errs = append(errs, e.Err)
	for _, f := range e.Failures {
		errs = append(errs, f)
	}
	return errs
}
