package addr

import "errors"

var (
	// ErrInvalidID is returned (wrapped) when a NodeID or NetworkID cannot be
	// parsed.
	ErrInvalidID = errors.New("invalid ID")

	// ErrInvalidName is returned (wrapped) by CheckName for a name that is
	// not a valid lowercase DNS label.
	ErrInvalidName = errors.New("invalid node name")

	// ErrInvalidDomain is returned (wrapped) by CheckDomain.
	ErrInvalidDomain = errors.New("invalid domain")

	// ErrInvalidPrefix is returned (wrapped) for an IPv4 overlay prefix that
	// is not an IPv4 prefix between /8 and /30 with its host bits zero.
	ErrInvalidPrefix = errors.New("invalid IPv4 overlay prefix")

	// ErrAddrMismatch is returned (wrapped) by CheckIPv6 when an address does
	// not belong to the claimed node in the claimed network.
	ErrAddrMismatch = errors.New("overlay address does not belong to node")
)
