package netstack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"syscall"
)

// SOCKS5 wire constants (RFC 1928).
const (
	socksVersion = 5

	socksMethodNoAuth       = 0x00
	socksMethodNoAcceptable = 0xff

	socksCmdConnect = 0x01

	socksAtypIPv4   = 0x01
	socksAtypDomain = 0x03
	socksAtypIPv6   = 0x04
)

// SOCKS5 reply codes.
const (
	socksSucceeded           = 0x00
	socksGeneralFailure      = 0x01
	socksNotAllowed          = 0x02
	socksNetworkUnreachable  = 0x03
	socksHostUnreachable     = 0x04
	socksConnectionRefused   = 0x05
	socksTTLExpired          = 0x06
	socksCommandNotSupported = 0x07
	socksAddrNotSupported    = 0x08
)

// readSOCKSGreeting reads the method-selection message and reports whether
// the client offers "no authentication".
func readSOCKSGreeting(r io.Reader) (noAuth bool, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return false, fmt.Errorf("socks greeting: %w", err)
	}
	if hdr[0] != socksVersion {
		return false, fmt.Errorf("socks greeting: version %d: %w", hdr[0], ErrSOCKSVersion)
	}
	if hdr[1] == 0 {
		return false, fmt.Errorf("socks greeting: no methods: %w", ErrSOCKSMalformed)
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return false, fmt.Errorf("socks greeting: %w", err)
	}
	for _, m := range methods {
		if m == socksMethodNoAuth {
			return true, nil
		}
	}
	return false, nil
}

// socksRequest is a parsed SOCKS5 request.
type socksRequest struct {
	Cmd  byte
	Atyp byte
	// Host is the literal IP (for IPv4/IPv6) or the domain name.
	Host string
	Port uint16
}

// Address returns "host:port" for dialing.
func (r socksRequest) Address() string {
	return net.JoinHostPort(r.Host, strconv.Itoa(int(r.Port)))
}

// readSOCKSRequest reads one request. On a malformed or unsupported request
// it returns an error and, where the RFC defines one, the reply code to
// send (0 when the connection should just be dropped).
func readSOCKSRequest(r io.Reader) (socksRequest, byte, error) {
	var req socksRequest
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return req, 0, fmt.Errorf("socks request: %w", err)
	}
	if hdr[0] != socksVersion {
		return req, 0, fmt.Errorf("socks request: version %d: %w", hdr[0], ErrSOCKSVersion)
	}
	if hdr[2] != 0 {
		return req, socksGeneralFailure, fmt.Errorf("socks request: reserved byte %#x: %w", hdr[2], ErrSOCKSMalformed)
	}
	req.Cmd, req.Atyp = hdr[1], hdr[3]
	switch req.Atyp {
	case socksAtypIPv4:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return req, 0, fmt.Errorf("socks request: %w", err)
		}
		req.Host = netip.AddrFrom4(b).String()
	case socksAtypIPv6:
		var b [16]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return req, 0, fmt.Errorf("socks request: %w", err)
		}
		req.Host = netip.AddrFrom16(b).String()
	case socksAtypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return req, 0, fmt.Errorf("socks request: %w", err)
		}
		if n[0] == 0 {
			return req, socksGeneralFailure, fmt.Errorf("socks request: empty domain: %w", ErrSOCKSMalformed)
		}
		b := make([]byte, n[0])
		if _, err := io.ReadFull(r, b); err != nil {
			return req, 0, fmt.Errorf("socks request: %w", err)
		}
		if !validSOCKSDomain(b) {
			return req, socksGeneralFailure, fmt.Errorf("socks request: domain %q: %w", b, ErrSOCKSMalformed)
		}
		req.Host = string(b)
	default:
		return req, socksAddrNotSupported, fmt.Errorf("socks request: address type %#x: %w", req.Atyp, ErrSOCKSAddressType)
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return req, 0, fmt.Errorf("socks request: %w", err)
	}
	req.Port = binary.BigEndian.Uint16(p[:])
	if req.Cmd != socksCmdConnect {
		return req, socksCommandNotSupported, fmt.Errorf("socks request: command %#x: %w", req.Cmd, ErrSOCKSCommand)
	}
	return req, 0, nil
}

// validSOCKSDomain accepts host names: letters, digits, '-', '_' and '.'.
// Anything else (':', '[', '/', '%', ...) could confuse host:port handling
// downstream and is never part of a resolvable name.
func validSOCKSDomain(b []byte) bool {
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// marshal encodes r as a client would (used by tests and fuzzing).
func (r socksRequest) marshal() []byte {
	b := []byte{socksVersion, r.Cmd, 0, r.Atyp}
	switch r.Atyp {
	case socksAtypIPv4, socksAtypIPv6:
		a := netip.MustParseAddr(r.Host)
		b = append(b, a.AsSlice()...)
	default:
		b = append(b, byte(len(r.Host)))
		b = append(b, r.Host...)
	}
	return binary.BigEndian.AppendUint16(b, r.Port)
}

// socksReply encodes a reply with the bound address bind (zero: 0.0.0.0:0).
func socksReply(code byte, bind netip.AddrPort) []byte {
	a := bind.Addr().Unmap()
	b := []byte{socksVersion, code, 0}
	if a.Is6() {
		b = append(b, socksAtypIPv6)
		b = append(b, a.AsSlice()...)
	} else {
		b = append(b, socksAtypIPv4)
		if a.Is4() {
			b = append(b, a.AsSlice()...)
		} else {
			b = append(b, 0, 0, 0, 0)
		}
	}
	return binary.BigEndian.AppendUint16(b, bind.Port())
}

// socksReplyCode maps a dial error to the RFC 1928 reply code.
func socksReplyCode(err error) byte {
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case err == nil:
		return socksSucceeded
	case errors.Is(err, syscall.ECONNREFUSED):
		return socksConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return socksNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return socksHostUnreachable
	case errors.As(err, &dnsErr):
		return socksHostUnreachable
	case errors.Is(err, syscall.ETIMEDOUT), errors.As(err, &ne) && ne.Timeout():
		// A silent peer: the overlay could not reach it in time.
		return socksHostUnreachable
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return socksNotAllowed
	}
	return socksGeneralFailure
}
