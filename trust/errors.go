package trust

import (
	"errors"
	"fmt"
	"time"
)

// Reason says why something was rejected. Each Reason has a sentinel error
// (see Sentinel) so callers can write errors.Is(err, trust.ErrExpired).
type Reason uint8

// Rejection reasons. The zero Reason is ReasonMalformed so that a
// zero-valued RejectError still says something true.
const (
	ReasonMalformed          Reason = iota // bytes could not be decoded or fail a structural check
	ReasonExpired                          // validity window has ended
	ReasonNotYetValid                      // validity window has not started
	ReasonWrongNetwork                     // object belongs to another network
	ReasonTooFewEndorsements               // fewer than Threshold distinct anchors endorsed it
	ReasonNotAnchor                        // an endorsement is by a key that is not a current anchor
	ReasonBadSignature                     // a signature does not verify
	ReasonReplayed                         // sequence number not newer than the one held
	ReasonUseLimit                         // invite has been used by as many nodes as it allows
	ReasonInvalid                          // content is well-formed but inconsistent (key/ID/address/name mismatch)
	ReasonNameTaken                        // requested node name belongs to another node
	ReasonPoolExhausted                    // no free IPv4 address left in the network's prefix
	ReasonRevoked                          // the node has been revoked by a quorum of anchors
	ReasonAddressTaken                     // proposed IPv4 address belongs to another node
	ReasonPendingApproval                  // join without invite waits for anchor operators to approve it
	ReasonFork                             // anchor-set change or signed statement conflicts with the chain held (wrong seq/prev, double signing)
	ReasonDenied                           // an anchor operator rejected the request
	numReasons
)

// Sentinel errors, one per Reason. A *RejectError matches the sentinel of
// its Reason under errors.Is.
var (
	// ErrMalformed: undecodable or structurally invalid bytes.
	ErrMalformed = errors.New("malformed")
	// ErrExpired: the validity window (NotAfter/Expires) has ended.
	ErrExpired = errors.New("expired")
	// ErrNotYetValid: the validity window (NotBefore) has not started.
	ErrNotYetValid = errors.New("not yet valid")
	// ErrWrongNetwork: the object belongs to a different network.
	ErrWrongNetwork = errors.New("wrong network")
	// ErrTooFewEndorsements: fewer than Threshold distinct current anchors endorsed it.
	ErrTooFewEndorsements = errors.New("too few endorsements")
	// ErrNotAnchor: an endorsement was made by a key that is not a current anchor.
	ErrNotAnchor = errors.New("endorsement by non-anchor")
	// ErrBadSignature: a signature does not verify.
	ErrBadSignature = errors.New("bad signature")
	// ErrReplayed: a sequence number is not newer than the one already held.
	ErrReplayed = errors.New("replayed sequence")
	// ErrUseLimit: an invite has reached its use limit.
	ErrUseLimit = errors.New("use limit reached")
	// ErrInvalid: well-formed but inconsistent content.
	ErrInvalid = errors.New("invalid")
	// ErrNameTaken: the node name belongs to another node.
	ErrNameTaken = errors.New("name taken")
	// ErrPoolExhausted: no free IPv4 overlay address is left.
	ErrPoolExhausted = errors.New("address pool exhausted")
	// ErrRevoked: the node was revoked by a quorum of anchors.
	ErrRevoked = errors.New("revoked")
	// ErrAddressTaken: the proposed IPv4 address belongs to another node;
	// propose the next candidate (JoinSpec.Attempt+1).
	ErrAddressTaken = errors.New("address taken")
	// ErrPendingApproval: a join without invite was queued and waits for
	// anchor operators (`weft trust approve`).
	ErrPendingApproval = errors.New("pending approval")
	// ErrFork: a statement conflicts with the anchor-set chain held (wrong
	// sequence or previous hash), or an anchor was asked to sign two
	// different statements with the same sequence number.
	ErrFork = errors.New("fork")
	// ErrDenied: an anchor operator rejected the request.
	ErrDenied = errors.New("denied")
)

var sentinels = [numReasons]error{
	ReasonMalformed:          ErrMalformed,
	ReasonExpired:            ErrExpired,
	ReasonNotYetValid:        ErrNotYetValid,
	ReasonWrongNetwork:       ErrWrongNetwork,
	ReasonTooFewEndorsements: ErrTooFewEndorsements,
	ReasonNotAnchor:          ErrNotAnchor,
	ReasonBadSignature:       ErrBadSignature,
	ReasonReplayed:           ErrReplayed,
	ReasonUseLimit:           ErrUseLimit,
	ReasonInvalid:            ErrInvalid,
	ReasonNameTaken:          ErrNameTaken,
	ReasonPoolExhausted:      ErrPoolExhausted,
	ReasonRevoked:            ErrRevoked,
	ReasonAddressTaken:       ErrAddressTaken,
	ReasonPendingApproval:    ErrPendingApproval,
	ReasonFork:               ErrFork,
	ReasonDenied:             ErrDenied,
}

// Sentinel returns the sentinel error of r (ErrMalformed for unknown values).
func (r Reason) Sentinel() error {
	if r < numReasons {
		return sentinels[r]
	}
	return ErrMalformed
}

// String returns a short lowercase name, e.g. "expired", for logs and metrics.
func (r Reason) String() string {
	if r < numReasons {
		return sentinels[r].Error()
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// RejectError is returned when a certificate, invite, join request or node
// record is refused. Detail is a complete sentence for a human: what was
// wrong and what to do about it.
type RejectError struct {
	Reason Reason
	Detail string
}

// Error returns Detail, or the Reason's name if Detail is empty.
func (e *RejectError) Error() string {
	if e.Detail == "" {
		return e.Reason.String()
	}
	return e.Detail
}

// Is makes errors.Is(err, ErrX) true for the sentinel of e.Reason.
func (e *RejectError) Is(target error) bool { return target == e.Reason.Sentinel() }

func reject(r Reason, format string, args ...any) *RejectError {
	return &RejectError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the Reason of the first *RejectError in err's chain.
func ReasonOf(err error) (Reason, bool) {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason, true
	}
	return 0, false
}

// fmtTime formats t for user-facing messages: UTC, minute precision when
// seconds are zero (e.g. 2026-11-26T12:00Z), otherwise RFC 3339.
func fmtTime(t time.Time) string {
	t = t.UTC()
	if t.Second() == 0 && t.Nanosecond() == 0 {
		return t.Format("2006-01-02T15:04Z07:00")
	}
	return t.Format(time.RFC3339)
}

// ErrKeyPermissions is returned (wrapped) by LoadIdentity when the key file
// can be read or written by group or others.
var ErrKeyPermissions = errors.New("key file permissions too open")

// ErrClosed is returned (wrapped) by Anchor methods after Close.
var ErrClosed = errors.New("trust anchor closed")
