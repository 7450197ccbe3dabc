package ice

import "errors"

var (
	// ErrClosed is returned by operations on a closed Mux or Session.
	ErrClosed = errors.New("ice: closed")

	// ErrBadDescription is wrapped by errors about a Description that cannot
	// be encoded, decoded or used: the peer sent garbage, or an old or newer
	// weft version.
	ErrBadDescription = errors.New("ice: bad description")

	// ErrNoPath is wrapped by Connect's error when connectivity checks end
	// without a working candidate pair: the peer never answered, or every
	// pair is blocked. A TURN server (Config.TURN) on both sides is the way
	// through two symmetric NATs.
	ErrNoPath = errors.New("ICE checks failed")

	// ErrNoCandidates is returned by LocalDescription when gathering found
	// no candidate at all: no host address, no STUN answer, no TURN
	// allocation.
	ErrNoCandidates = errors.New("ice: no local candidates")

	// ErrNotConnected is returned by Session.Write before Connect has
	// succeeded, and after ICE declared the path lost.
	ErrNotConnected = errors.New("ice: session not connected")

	// ErrConnectCalled is returned by a second call to Session.Connect.
	ErrConnectCalled = errors.New("ice: Connect already called on this session")
)
