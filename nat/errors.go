package nat

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by operations on a closed Conn.
	ErrClosed = errors.New("nat: connection closed")

	// ErrPortMismatch is returned by Bind.Open when asked for a port other
	// than the shared socket's. Configure WireGuard with listen_port 0 or the
	// port reported by Conn.LocalAddr.
	ErrPortMismatch = errors.New("nat: bind port differs from the shared socket's port")

	// ErrTooLarge is returned by Call and CallHello when the body does not
	// fit in one control packet (MaxBodySize).
	ErrTooLarge = errors.New("nat: control message body too large")

	// ErrBadKey is returned when a peer's public key is unusable (a
	// low-order Curve25519 point, such as all zeros).
	ErrBadKey = errors.New("nat: unusable peer public key")

	// ErrMalformed is returned by the control packet decoders for input that
	// is not a well-formed weft control packet.
	ErrMalformed = errors.New("nat: malformed control packet")

	// ErrMalformedSTUN is returned for a STUN message that does not decode,
	// or whose FINGERPRINT is wrong or misplaced.
	ErrMalformedSTUN = errors.New("nat: malformed STUN message")

	// ErrNoSTUNReply is returned by STUNBinding when no response arrived:
	// UDP may be blocked outbound, or the server is down or unreachable.
	ErrNoSTUNReply = errors.New("nat: no STUN reply")

	// ErrNotSTUN is returned by SendSTUN for a packet that is not a STUN
	// message (it would not be demultiplexed as one by the peer).
	ErrNotSTUN = errors.New("nat: not a STUN message")

	// ErrRelayUnauthorized is returned by RelayCredentials when the relay
	// refused this node: its Authorize check (membership, certificate)
	// failed.
	ErrRelayUnauthorized = errors.New("nat: relay refused credentials: this node is not authorized to use it")

	// ErrRelayClosed is returned by a Relay's methods after Close.
	ErrRelayClosed = errors.New("nat: relay closed")

	// ErrBadTURNURL is returned by ParseTURNURL for a URL weft cannot use.
	ErrBadTURNURL = errors.New("nat: bad TURN URL")
)

// RemoteError is an error returned by the remote handler (or by the remote
// Conn itself, for example for an unknown message type). Call returns it
// wrapped; use errors.As to get at it.
type RemoteError struct {
	Msg string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("remote error: %s", e.Msg)
}
