package nat

// Relay credentials over the control RPC. A member asks a relay's node for
// TURN credentials with MsgRelayCreds; the request is sealed like every
// control request, so the relay knows the member's key for certain and
// asks RelayConfig.Authorize about it. See relay.go for the credential
// scheme.
//
//	request:  ver(1)
//	response: ver(1) status(1) [if status is 0:
//	          ttl(4, seconds) udpPort(2) tcpPort(2, 0: UDP only)
//	          host(addr) ulen(1) username(ulen) plen(1) password(plen)]
//	addr:     len(1: 4 or 16) ip(len)
//
// A refusal by Authorize is a response with status 1, not a remote error,
// so that the member can tell it from a relay that is down or confused
// (ErrRelayUnauthorized). The TTL travels rather than the expiry time, so
// the member's idea of Expires does not depend on the two clocks agreeing.

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

const relayCredsVersion = 1

// Response statuses.
const (
	relayCredsOK           = 0
	relayCredsUnauthorized = 1
)

// relayCredsResponse is the body of a MsgRelayCreds response.
type relayCredsResponse struct {
	status           uint8
	ttl              uint32 // seconds
	udpPort, tcpPort uint16
	host             netip.Addr
	user, pass       string
}

func marshalRelayCredsRequest() []byte { return []byte{relayCredsVersion} }

func parseRelayCredsRequest(b []byte) error {
	if len(b) != 1 || b[0] != relayCredsVersion {
		return fmt.Errorf("%w: relay credentials request of %d bytes (version %d only)", ErrMalformed, len(b), relayCredsVersion)
	}
	return nil
}

func (r *relayCredsResponse) marshal() []byte {
	b := []byte{relayCredsVersion, r.status}
	if r.status != relayCredsOK {
		return b
	}
	b = binary.BigEndian.AppendUint32(b, r.ttl)
	b = binary.BigEndian.AppendUint16(b, r.udpPort)
	b = binary.BigEndian.AppendUint16(b, r.tcpPort)
	b = appendAddr(b, r.host)
	b = append(b, byte(len(r.user)))
	b = append(b, r.user...)
	b = append(b, byte(len(r.pass)))
	return append(b, r.pass...)
}

func parseRelayCredsResponse(b []byte) (r relayCredsResponse, err error) {
	bad := func(format string, args ...any) (relayCredsResponse, error) {
		return relayCredsResponse{}, fmt.Errorf("%w: relay credentials: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	if len(b) < 2 {
		return bad("%d bytes", len(b))
	}
	if b[0] != relayCredsVersion {
		return bad("version %d, want %d", b[0], relayCredsVersion)
	}
	r.status = b[1]
	b = b[2:]
	switch r.status {
	case relayCredsOK:
	case relayCredsUnauthorized:
		if len(b) != 0 {
			return bad("%d trailing bytes", len(b))
		}
		return r, nil
	default:
		return bad("unknown status %d", r.status)
	}
	if len(b) < 8 {
		return bad("truncated")
	}
	r.ttl = binary.BigEndian.Uint32(b)
	r.udpPort = binary.BigEndian.Uint16(b[4:])
	r.tcpPort = binary.BigEndian.Uint16(b[6:])
	if r.ttl == 0 || r.udpPort == 0 {
		return bad("zero TTL or port")
	}
	if r.host, b, err = parseAddr(b[8:]); err != nil {
		return relayCredsResponse{}, err
	}
	if !r.host.IsValid() {
		return bad("no relay address")
	}
	str := func() (string, bool) {
		if len(b) < 1 || len(b) < 1+int(b[0]) || b[0] == 0 {
			return "", false
		}
		s := string(b[1 : 1+b[0]])
		b = b[1+b[0]:]
		return s, true
	}
	var ok bool
	if r.user, ok = str(); !ok {
		return bad("username missing or truncated")
	}
	if r.pass, ok = str(); !ok {
		return bad("password missing or truncated")
	}
	if len(b) != 0 {
		return bad("%d trailing bytes", len(b))
	}
	return r, nil
}

// RelayCreds are TURN credentials for one relay, issued to this node.
type RelayCreds struct {
	// URL is the relay's TURN URL over UDP: "turn:IP:PORT?transport=udp".
	URL string

	// TCPURL is the same over TCP ("...?transport=tcp"), or empty if the
	// relay serves UDP only.
	TCPURL string

	// Addr is the relay's TURN address, for UDP (and TCP, if TCPURL is
	// set).
	Addr netip.AddrPort

	// Username and Password are the TURN long-term credential (realm
	// "weft" unless the relay was configured otherwise; clients learn it
	// from the server).
	Username, Password string

	// Expires is when the relay stops accepting the credential, by this
	// node's clock. Ask again before then: an allocation can only be
	// refreshed with an unexpired credential.
	Expires time.Time
}

func newRelayCreds(host netip.Addr, udpPort, tcpPort uint16, user, pass string, exp time.Time) RelayCreds {
	c := RelayCreds{
		Addr:     netip.AddrPortFrom(host.Unmap(), udpPort),
		Username: user,
		Password: pass,
		Expires:  exp,
	}
	c.URL = c.turnURL("udp", udpPort).URL()
	if tcpPort != 0 {
		c.TCPURL = c.turnURL("tcp", tcpPort).URL()
	}
	return c
}

func (c RelayCreds) turnURL(transport string, port uint16) TURNURL {
	ap := netip.AddrPortFrom(c.Addr.Addr(), port)
	return TURNURL{Host: ap.Addr().String(), Port: port, Transport: transport, Username: c.Username, Password: c.Password, Addr: ap}
}

// TURN returns the credential as a TURN server over UDP, in the form
// ParseTURNURL gives for external servers.
func (c RelayCreds) TURN() TURNURL { return c.turnURL("udp", c.Addr.Port()) }

// String describes the credential without its password.
func (c RelayCreds) String() string {
	return fmt.Sprintf("%s user %s until %s", c.URL, c.Username, c.Expires.Format(time.RFC3339))
}

// ServeRelay makes the Conn answer MsgRelayCreds requests with credentials
// for r, for the nodes r's Authorize admits; nil stops it. It registers the
// MsgRelayCreds handler (replacing any set with Handle).
func (c *Conn) ServeRelay(r *Relay) {
	if r == nil {
		c.Handle(MsgRelayCreds, nil)
		return
	}
	c.Handle(MsgRelayCreds, r.handleCreds)
}

// handleCreds serves one MsgRelayCreds request.
func (r *Relay) handleCreds(_ context.Context, from Peer, body []byte) ([]byte, error) {
	if err := parseRelayCredsRequest(body); err != nil {
		return nil, err
	}
	if r.closed.Load() {
		return nil, ErrRelayClosed
	}
	if !r.auth(from) {
		r.stats.credsRefused.Add(1)
		r.log.Debug("relay credentials refused: node not authorized", "node", from)
		return (&relayCredsResponse{status: relayCredsUnauthorized}).marshal(), nil
	}
	user, pass, ttl := r.issue(&from.Key)
	resp := relayCredsResponse{
		status:  relayCredsOK,
		ttl:     uint32(max(ttl/time.Second, 1)),
		udpPort: r.local.Port(),
		host:    r.public,
		user:    user,
		pass:    pass,
	}
	if r.tcp {
		resp.tcpPort = r.local.Port()
	}
	r.log.Debug("relay credentials issued", "node", from, "user", user, "ttl", ttl)
	return resp.marshal(), nil
}

// RelayCredentials asks relay (a node serving a Relay, see ServeRelay) for
// TURN credentials. If the relay refuses this node, the error wraps
// ErrRelayUnauthorized; errors of the call itself are those of Call.
func (c *Conn) RelayCredentials(ctx context.Context, relay Peer) (RelayCreds, error) {
	start := time.Now()
	body, err := c.Call(ctx, relay, MsgRelayCreds, marshalRelayCredsRequest())
	if err != nil {
		return RelayCreds{}, fmt.Errorf("nat relay credentials: %w", err)
	}
	r, err := parseRelayCredsResponse(body)
	if err != nil {
		return RelayCreds{}, fmt.Errorf("nat relay credentials from %s: %w", relay, err)
	}
	if r.status == relayCredsUnauthorized {
		return RelayCreds{}, fmt.Errorf("nat relay credentials from %s: %w (only admitted members may relay; check this node's membership certificate)", relay, ErrRelayUnauthorized)
	}
	exp := start.Add(time.Duration(r.ttl) * time.Second)
	return newRelayCreds(r.host, r.udpPort, r.tcpPort, r.user, r.pass, exp), nil
}
