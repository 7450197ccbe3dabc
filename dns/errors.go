package dns

import "errors"

var (
	// ErrNotFound is wrapped by a Resolver's error when the name or address
	// it was asked about belongs to no node. The server answers NXDOMAIN for
	// it; any other Resolver error becomes SERVFAIL.
	ErrNotFound = errors.New("no such overlay name")

	// ErrClosed is returned by the Serve and Listen methods of a Server that
	// has been closed.
	ErrClosed = errors.New("dns server closed")
)
