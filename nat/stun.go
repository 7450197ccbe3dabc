package nat

// STUN on the shared socket: the Binding responder every node runs, the
// hook through which ICE agents will claim their connectivity checks, and
// the Binding client (STUNBinding) that learns the socket's public mapping.
//
// A STUN datagram read by the reader is copied out and queued for the
// control workers (a queue of its own, so a STUN flood cannot crowd out
// control packets). A worker then routes it, first match wins:
//
//  1. A response (success or error) whose transaction ID is outstanding in
//     this Conn (STUNBinding, netcheck probes) goes to the waiting call,
//     if it came from where the request went (probes accept any source).
//  2. The STUNHandler, if one is set, sees everything else first and
//     claims what it consumes (ICE: its checks, its responses, Binding
//     indications).
//  3. A Binding request without ICE attributes is answered by the plain
//     responder, rate-limited per source IP address: a success response
//     with XOR-MAPPED-ADDRESS (the packet's source), SOFTWARE "weft" and
//     FINGERPRINT. A request with comprehension-required attributes the
//     responder does not know (CHANGE-REQUEST, RESPONSE-PORT, ...) gets a
//     420 error with UNKNOWN-ATTRIBUTES, as RFC 8489 section 6.3.1 asks.
//  4. Anything else (Binding requests carrying USERNAME, MESSAGE-INTEGRITY,
//     PRIORITY, USE-CANDIDATE or ICE-CONTROLLING/-CONTROLLED that no
//     handler claimed, other methods, indications, unmatched responses) is
//     counted and dropped. An ICE check must never get an answer that does
//     not prove knowledge of the ICE password.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/pion/stun/v4"
)

// STUN client retransmission (RFC 8489 section 6.2.1: RTO 500 ms doubling,
// Rc = 7 requests), with the interval capped at stunMaxRTO so a lossy path
// is retried often, and a last wait of stunLastWait after the final
// request. Without a ctx deadline STUNBinding gives up after about 13.5 s.
const (
	stunInitialRTO  = 500 * time.Millisecond
	stunMaxRTO      = 2 * time.Second
	stunMaxRequests = 7
	stunLastWait    = 4 * time.Second

	stunQueueLen = 256
	stunSoftware = "weft"

	stunHeaderSize = 20
)

// STUNHandler sees STUN datagrams received on the shared socket before the
// plain Binding responder does (see SetSTUNHandler). pkt is a whole STUN
// message (header checked: magic cookie, length matching the datagram)
// and is only valid during the call; from is its source. The handler
// returns true if it consumed the packet. It runs on a control worker:
// it must not block.
type STUNHandler func(pkt []byte, from netip.AddrPort) bool

// SetSTUNHandler installs h to see received STUN datagrams before the
// plain responder, except responses to this Conn's own transactions
// (STUNBinding, Netcheck). This is where per-peer ICE agents attach: a
// Binding request the handler does not claim is answered by the responder
// only if it carries no ICE attributes. A nil h removes the handler.
func (c *Conn) SetSTUNHandler(h STUNHandler) {
	if h == nil {
		c.stunHandler.Store(nil)
		return
	}
	c.stunHandler.Store(&h)
}

// SendSTUN sends one STUN message from the shared socket (the socket
// WireGuard uses, so through the same NAT mapping). It is for ICE agents'
// checks and responses; pkt must be a STUN message.
func (c *Conn) SendSTUN(pkt []byte, to netip.AddrPort) error {
	if classify(pkt) != kindSTUN {
		return fmt.Errorf("nat send stun to %s: %w", to, ErrNotSTUN)
	}
	if c.closed.Load() {
		return ErrClosed
	}
	if err := c.writeTo(pkt, unmapAddrPort(to)); err != nil {
		return fmt.Errorf("nat send stun to %s: %w", to, err)
	}
	c.stats.stunOut.Add(1)
	return nil
}

// stunTxn is an outstanding STUN transaction of this Conn.
type stunTxn struct {
	to  netip.AddrPort // where the request went: responses must come from there
	any bool           // accept a response from any source (netcheck probes)
	ch  chan stunReply // buffered 1; the first matching response wins
}

// stunReply is a response to one of our transactions, copied out.
type stunReply struct {
	pkt  []byte
	from netip.AddrPort
	at   time.Time
}

type stunTxID = [stun.TransactionIDSize]byte

// registerSTUN adds a transaction under a fresh random ID.
func (c *Conn) registerSTUN(t *stunTxn) stunTxID {
	c.stunMu.Lock()
	defer c.stunMu.Unlock()
	return insertFresh(c.stunTx, t, stun.NewTransactionID)
}

func (c *Conn) unregisterSTUN(id stunTxID) {
	c.stunMu.Lock()
	delete(c.stunTx, id)
	c.stunMu.Unlock()
}

// enqueueSTUN copies a STUN datagram for the workers. Called by the reader.
func (c *Conn) enqueueSTUN(pkt []byte, from netip.AddrPort) {
	c.stats.stunIn.Add(1)
	if len(pkt) > MaxControlSize {
		c.stats.stunMalformed.Add(1)
		return
	}
	if !c.enqueue(c.stunq, pkt, from) {
		c.stats.stunQueueFull.Add(1)
	}
}

// stunHeader is the fixed header of a STUN message.
type stunHeader struct {
	typ  stun.MessageType
	txid stunTxID
}

// parseSTUNHeader checks the header of a STUN message: the top two bits
// zero, the magic cookie, a length that is a multiple of four and
// matches the datagram exactly (RFC 8489 section 6.3).
func parseSTUNHeader(b []byte) (h stunHeader, ok bool) {
	if len(b) < stunHeaderSize || b[0]&0xC0 != 0 || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return h, false
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n%4 != 0 || stunHeaderSize+n != len(b) {
		return h, false
	}
	h.typ.ReadValue(binary.BigEndian.Uint16(b[0:2]))
	copy(h.txid[:], b[8:20])
	return h, true
}

// decodeSTUN decodes a whole STUN message whose header parseSTUNHeader
// accepted and checks its FINGERPRINT, if present: it must be the last
// attribute and match. The message aliases b.
func decodeSTUN(b []byte) (*stun.Message, error) {
	m := &stun.Message{Raw: b}
	if err := m.Decode(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedSTUN, err)
	}
	for i, a := range m.Attributes {
		if a.Type == stun.AttrFingerprint {
			if i != len(m.Attributes)-1 {
				return nil, fmt.Errorf("%w: FINGERPRINT is not the last attribute", ErrMalformedSTUN)
			}
			if err := stun.Fingerprint.Check(m); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrMalformedSTUN, err)
			}
		}
	}
	return m, nil
}

// iceAttrs are the attributes that make a Binding request an ICE check
// (RFC 8445 section 7.1), or otherwise authenticated: not for the plain
// responder.
var iceAttrs = []stun.AttrType{
	stun.AttrUsername, stun.AttrMessageIntegrity, stun.AttrMessageIntegritySHA256,
	stun.AttrPriority, stun.AttrUseCandidate, stun.AttrICEControlled, stun.AttrICEControlling,
}

func hasICEAttrs(m *stun.Message) bool {
	for _, a := range m.Attributes {
		for _, t := range iceAttrs {
			if a.Type == t {
				return true
			}
		}
	}
	return false
}

// handleSTUN routes one STUN datagram (see the top of this file). pkt is
// only valid during the call.
func (c *Conn) handleSTUN(pkt []byte, from netip.AddrPort) {
	h, ok := parseSTUNHeader(pkt)
	if !ok {
		c.stats.stunMalformed.Add(1)
		return
	}
	resp := h.typ.Class == stun.ClassSuccessResponse || h.typ.Class == stun.ClassErrorResponse
	if resp && c.completeSTUN(h.txid, pkt, from) {
		return
	}
	if hp := c.stunHandler.Load(); hp != nil && (*hp)(pkt, from) {
		c.stats.stunClaimed.Add(1)
		return
	}
	switch {
	case resp:
		c.stats.stunUnmatched.Add(1)
	case h.typ != stun.BindingRequest:
		c.stats.stunDropped.Add(1)
	default:
		c.answerBinding(pkt, from)
	}
}

// completeSTUN hands a response to the transaction waiting for it. It
// reports whether the transaction ID is ours (the packet is then consumed
// even if it came from the wrong source, and counted as unmatched).
func (c *Conn) completeSTUN(id stunTxID, pkt []byte, from netip.AddrPort) bool {
	c.stunMu.Lock()
	t := c.stunTx[id]
	c.stunMu.Unlock()
	if t == nil {
		return false
	}
	if !t.any && from != t.to {
		c.stats.stunUnmatched.Add(1)
		return true
	}
	select {
	case t.ch <- stunReply{pkt: bytes.Clone(pkt), from: from, at: c.now()}:
		c.stats.stunResponsesIn.Add(1)
	default: // a duplicate (we retransmitted, both were answered)
		c.stats.stunUnmatched.Add(1)
	}
	return true
}

// answerBinding is the plain responder.
func (c *Conn) answerBinding(pkt []byte, from netip.AddrPort) {
	if !c.stunLim.allow(from.Addr(), c.now()) {
		c.stats.stunRateLimited.Add(1)
		return
	}
	m, err := decodeSTUN(pkt)
	if err != nil {
		c.stats.stunMalformed.Add(1)
		c.log.Debug("dropping STUN request", "from", from, "err", err)
		return
	}
	if hasICEAttrs(m) {
		c.stats.stunDropped.Add(1)
		return
	}
	var unknown stun.UnknownAttributes
	for _, a := range m.Attributes {
		if a.Type.Required() {
			unknown = append(unknown, a.Type)
		}
	}
	var out []byte
	if len(unknown) > 0 {
		out, err = buildSTUN(m.TransactionID, stun.BindingError,
			stun.ErrorCodeAttribute{Code: stun.CodeUnknownAttribute, Reason: []byte("Unknown Attribute")}, unknown)
	} else {
		out, err = bindingSuccess(m.TransactionID, from)
	}
	if err != nil {
		c.log.Debug("building STUN response", "to", from, "err", err)
		return
	}
	if err := c.writeTo(out, from); err != nil {
		c.log.Debug("STUN response", "to", from, "err", err)
		return
	}
	c.stats.stunAnswered.Add(1)
	c.stats.stunOut.Add(1)
}

// bindingSuccess builds a Binding success response telling mapped.
func bindingSuccess(id stunTxID, mapped netip.AddrPort) ([]byte, error) {
	return buildSTUN(id, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: mapped.Addr().Unmap().WithZone("").AsSlice(), Port: int(mapped.Port())})
}

// buildSTUN builds a message with SOFTWARE and FINGERPRINT.
func buildSTUN(id stunTxID, typ stun.MessageType, attrs ...stun.Setter) ([]byte, error) {
	setters := append([]stun.Setter{stun.NewTransactionIDSetter(id), typ}, attrs...)
	setters = append(setters, stun.NewSoftware(stunSoftware), stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		return nil, err
	}
	return m.Raw, nil
}

// STUNBinding sends a STUN Binding request to server from the shared
// socket and returns the address the server saw it come from: the
// socket's public mapping toward server, the one WireGuard traffic to
// that address uses too. It retransmits as RFC 8489 asks (RTO 500 ms
// doubling, capped at 2 s, 7 requests) until a response arrives, ctx is
// done or the requests are used up; then the error wraps ErrNoSTUNReply
// (and ctx.Err(), if that ended it). A STUN error response is returned as
// a *STUNError.
func (c *Conn) STUNBinding(ctx context.Context, server netip.AddrPort) (mapped netip.AddrPort, err error) {
	r, err := c.stunRequest(ctx, server)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return r.mapped, nil
}

// bindingResult is the outcome of one Binding transaction.
type bindingResult struct {
	mapped netip.AddrPort
	rtt    time.Duration // from the first request to the response
}

// stunRequest runs one Binding transaction with server.
func (c *Conn) stunRequest(ctx context.Context, server netip.AddrPort) (bindingResult, error) {
	server = unmapAddrPort(server)
	if !server.IsValid() {
		return bindingResult{}, fmt.Errorf("nat stun binding: invalid server address %v", server)
	}
	if c.closed.Load() {
		return bindingResult{}, ErrClosed
	}
	t := &stunTxn{to: server, ch: make(chan stunReply, 1)}
	id := c.registerSTUN(t)
	defer c.unregisterSTUN(id)
	req, err := buildSTUN(id, stun.BindingRequest)
	if err != nil {
		return bindingResult{}, fmt.Errorf("nat stun binding %s: %w", server, err)
	}
	start := c.now()
	rto := stunInitialRTO
	timer := time.NewTimer(rto)
	defer timer.Stop()
	var sendErr error
	for sent := 0; ; {
		if sent < stunMaxRequests {
			if err := c.writeTo(req, server); err != nil {
				if c.closed.Load() {
					return bindingResult{}, ErrClosed
				}
				sendErr = err
				c.log.Debug("STUN request", "to", server, "err", err)
			} else {
				c.stats.stunOut.Add(1)
			}
			sent++
		}
		select {
		case r := <-t.ch:
			res, err := parseBindingResponse(r.pkt)
			if err != nil {
				return bindingResult{}, fmt.Errorf("nat stun binding %s: %w", server, err)
			}
			return bindingResult{mapped: res, rtt: r.at.Sub(start)}, nil
		case <-timer.C:
			if sent >= stunMaxRequests {
				return bindingResult{}, noReply(server, c.now().Sub(start), sendErr, nil)
			}
			if sent > 0 {
				c.stats.stunRetransmits.Add(1)
			}
			rto = min(2*rto, stunMaxRTO)
			if sent == stunMaxRequests-1 {
				rto = stunLastWait
			}
			timer.Reset(rto)
		case <-ctx.Done():
			return bindingResult{}, noReply(server, c.now().Sub(start), sendErr, ctx.Err())
		case <-c.closing:
			return bindingResult{}, ErrClosed
		}
	}
}

// noReply is the error of a transaction that got no response.
func noReply(server netip.AddrPort, waited time.Duration, sendErr, ctxErr error) error {
	return &noReplyError{server: server, waited: waited, sendErr: sendErr, ctxErr: ctxErr}
}

// noReplyError says that a STUN server did not answer, and the likely
// reason. It matches ErrNoSTUNReply, and the send error and ctx error, if
// any, with errors.Is.
type noReplyError struct {
	server          netip.AddrPort
	waited          time.Duration
	sendErr, ctxErr error
}

func (e *noReplyError) Error() string {
	why := "UDP may be blocked outbound, or the server is down"
	if e.sendErr != nil {
		why = fmt.Sprintf("sending failed: %v", e.sendErr)
	}
	return fmt.Sprintf("nat stun binding: no STUN reply from %s within %v: %s",
		e.server, e.waited.Round(10*time.Millisecond), why)
}

func (e *noReplyError) Is(target error) bool { return target == ErrNoSTUNReply }

func (e *noReplyError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.sendErr, e.ctxErr} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// parseBindingResponse decodes a Binding response: the mapped address of a
// success (XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an RFC 3489 server),
// or a *STUNError.
func parseBindingResponse(b []byte) (netip.AddrPort, error) {
	m, err := decodeSTUN(b)
	if err != nil {
		return netip.AddrPort{}, err
	}
	switch m.Type {
	case stun.BindingSuccess:
	case stun.BindingError:
		var ec stun.ErrorCodeAttribute
		if err := ec.GetFrom(m); err != nil {
			return netip.AddrPort{}, fmt.Errorf("%w: error response without ERROR-CODE", ErrMalformedSTUN)
		}
		return netip.AddrPort{}, &STUNError{Code: int(ec.Code), Reason: string(ec.Reason)}
	default:
		return netip.AddrPort{}, fmt.Errorf("%w: %v is not a Binding response", ErrMalformedSTUN, m.Type)
	}
	var ip []byte
	var port int
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err == nil {
		ip, port = xa.IP, xa.Port
	} else {
		var ma stun.MappedAddress
		if err := ma.GetFrom(m); err != nil {
			return netip.AddrPort{}, fmt.Errorf("%w: Binding success without XOR-MAPPED-ADDRESS or MAPPED-ADDRESS", ErrMalformedSTUN)
		}
		ip, port = ma.IP, ma.Port
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port <= 0 || port > 0xFFFF {
		return netip.AddrPort{}, fmt.Errorf("%w: bad mapped address %v port %d", ErrMalformedSTUN, ip, port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}

// STUNError is a STUN error response (RFC 8489 section 14.8).
type STUNError struct {
	Code   int
	Reason string
}

func (e *STUNError) Error() string {
	return fmt.Sprintf("STUN error %d: %s", e.Code, e.Reason)
}

var _ error = (*STUNError)(nil)
