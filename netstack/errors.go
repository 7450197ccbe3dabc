package netstack

import "errors"

// Sentinel errors. Match them with errors.Is; returned errors wrap them with
// the failing operation.
var (
	// ErrUnsupportedNetwork is returned by DialContext for a network other
	// than "tcp", "tcp4", "tcp6", "udp", "udp4" or "udp6".
	ErrUnsupportedNetwork = errors.New("unsupported network (use tcp, tcp4, tcp6, udp, udp4 or udp6)")

	// ErrAddressFamily is returned when an address's family does not match
	// the requested network, or the stack has no local address of that
	// family (add one to Config.Addrs).
	ErrAddressFamily = errors.New("address family not configured on this stack")

	// ErrInvalidAddress is returned for an invalid or zero remote address.
	ErrInvalidAddress = errors.New("invalid address")

	// ErrProxyClosed is returned by Serve after Close has been called.
	ErrProxyClosed = errors.New("proxy closed")

	// ErrSOCKSVersion means a client spoke a SOCKS version other than 5.
	ErrSOCKSVersion = errors.New("socks: unsupported protocol version (only SOCKS5 is served)")

	// ErrSOCKSNoMethod means the client offered no authentication method
	// the server accepts (only "no authentication" is supported).
	ErrSOCKSNoMethod = errors.New("socks: no acceptable authentication method (configure the client for no-auth)")

	// ErrSOCKSMalformed means a SOCKS5 message could not be parsed.
	ErrSOCKSMalformed = errors.New("socks: malformed message")

	// ErrSOCKSCommand means the client asked for a command other than
	// CONNECT (BIND and UDP ASSOCIATE are not supported).
	ErrSOCKSCommand = errors.New("socks: command not supported (only CONNECT)")

	// ErrSOCKSAddressType means the request used an unknown address type.
	ErrSOCKSAddressType = errors.New("socks: address type not supported")

	// ErrBadProxyRequest means an HTTP proxy request named no usable target
	// (neither CONNECT host:port nor an absolute http:// URI).
	ErrBadProxyRequest = errors.New("http proxy: request has no usable target (send CONNECT host:port or an absolute http:// URI)")
)
