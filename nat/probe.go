package nat

// Filtering probes: how a node behind a NAT learns whether the NAT lets in
// packets it did not ask for.
//
// A NAT's filtering (RFC 4787 section 5) is seen only by receiving a packet
// from an address the node has not sent to. RFC 5780 does it with a STUN
// server that owns two IP addresses (CHANGE-REQUEST); weft nodes have one
// address and one socket, so weft does it with a control message,
// MsgProbe, sealed like every control request:
//
//   - probeChangeIP: "send me a packet from another IP address". The
//     prober passes the request on (probeRelay) to one of its helpers,
//     other public nodes (ProbeConfig.Helpers), skipping any whose address
//     the requester lists as already contacted, and the helper sends the
//     packet from its own socket. If it arrives, the NAT filters nothing
//     (endpoint-independent filtering).
//   - probeChangePort: "send me a packet from your address but another
//     port". The prober sends it from a second socket on its own address
//     (ProbeConfig.Alt). If it arrives (and change-IP did not), filtering
//     is address-dependent; if not, address-and-port-dependent.
//
// The probe packet is a STUN Binding success response carrying a
// transaction ID the requester chose and registered, so it reaches the
// requester's netcheck through the ordinary STUN routing, from any
// source. It is sent to the address the request came from (the requester's
// mapping toward the prober), never to an address named in the request,
// except in probeRelay, which a helper accepts only from peers
// ProbeConfig.AllowRelay approves. A probe is smaller than its request,
// so the worst a forged source address buys is a one-for-one reflection,
// rate-limited like any control request.
//
// A prober should be a node with a public address (no NAT): behind a NAT
// its second socket would get a mapping of its own, and its helpers' and
// alternate socket's packets would not look like what they claim to be.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"
)

// probeMode is what a MsgProbe asks for.
type probeMode uint8

const (
	probeChangeIP   probeMode = 1 // send from another IP address (through a helper)
	probeChangePort probeMode = 2 // send from this IP address, another port
	probeRelay      probeMode = 3 // (prober to helper) send to Target from your socket
)

func (m probeMode) String() string {
	switch m {
	case probeChangeIP:
		return "change-ip"
	case probeChangePort:
		return "change-port"
	case probeRelay:
		return "relay"
	}
	return fmt.Sprintf("probeMode(%d)", uint8(m))
}

const (
	probeVersion   = 1
	maxProbeAvoid  = 16              // addresses a request may list as contacted
	probeHelperTTL = 3 * time.Second // bound on one call to a helper
)

// probeRequest is the body of a MsgProbe request:
//
//	ver(1) mode(1) txid(12) target(addr) navoid(1) avoid(addr)*navoid
//	addr: len(1: 0, 4 or 16) ip(len) [port(2) if the address is a target]
//
// Target is only set in probeRelay. Avoid lists addresses the requester has
// sent to (its NAT may let their packets in for that reason alone).
type probeRequest struct {
	mode   probeMode
	txid   stunTxID
	target netip.AddrPort
	avoid  []netip.Addr
}

func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, 0)
	}
	ip := a.AsSlice()
	b = append(b, byte(len(ip)))
	return append(b, ip...)
}

func parseAddr(b []byte) (netip.Addr, []byte, error) {
	if len(b) < 1 {
		return netip.Addr{}, nil, fmt.Errorf("%w: address truncated", ErrMalformed)
	}
	n := int(b[0])
	if n != 0 && n != 4 && n != 16 || len(b) < 1+n {
		return netip.Addr{}, nil, fmt.Errorf("%w: address length %d", ErrMalformed, n)
	}
	if n == 0 {
		return netip.Addr{}, b[1:], nil
	}
	a, _ := netip.AddrFromSlice(b[1 : 1+n])
	return a, b[1+n:], nil
}

func (r *probeRequest) marshal() []byte {
	b := make([]byte, 0, 2+len(r.txid)+20+1+len(r.avoid)*17)
	b = append(b, probeVersion, byte(r.mode))
	b = append(b, r.txid[:]...)
	b = appendAddr(b, r.target.Addr())
	if r.target.Addr().IsValid() {
		b = binary.BigEndian.AppendUint16(b, r.target.Port())
	}
	b = append(b, byte(len(r.avoid)))
	for _, a := range r.avoid {
		b = appendAddr(b, a)
	}
	return b
}

func parseProbeRequest(b []byte) (r probeRequest, err error) {
	if len(b) < 2+len(r.txid) {
		return r, fmt.Errorf("%w: probe request %d bytes", ErrMalformed, len(b))
	}
	if b[0] != probeVersion {
		return r, fmt.Errorf("%w: probe request version %d, want %d", ErrMalformed, b[0], probeVersion)
	}
	r.mode = probeMode(b[1])
	if r.mode < probeChangeIP || r.mode > probeRelay {
		return r, fmt.Errorf("%w: probe mode %d", ErrMalformed, b[1])
	}
	copy(r.txid[:], b[2:])
	b = b[2+len(r.txid):]
	var ta netip.Addr
	if ta, b, err = parseAddr(b); err != nil {
		return r, err
	}
	if ta.IsValid() {
		if len(b) < 2 {
			return r, fmt.Errorf("%w: probe target port truncated", ErrMalformed)
		}
		r.target = netip.AddrPortFrom(ta, binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if (r.mode == probeRelay) != r.target.IsValid() {
		return r, fmt.Errorf("%w: probe target must be set in relay requests only", ErrMalformed)
	}
	if len(b) < 1 {
		return r, fmt.Errorf("%w: probe avoid list truncated", ErrMalformed)
	}
	n := int(b[0])
	b = b[1:]
	if n > maxProbeAvoid {
		return r, fmt.Errorf("%w: %d avoided addresses, limit %d", ErrMalformed, n, maxProbeAvoid)
	}
	for range n {
		var a netip.Addr
		if a, b, err = parseAddr(b); err != nil {
			return r, err
		}
		if !a.IsValid() {
			return r, fmt.Errorf("%w: empty avoided address", ErrMalformed)
		}
		r.avoid = append(r.avoid, a)
	}
	if len(b) != 0 {
		return r, fmt.Errorf("%w: %d trailing bytes in probe request", ErrMalformed, len(b))
	}
	return r, nil
}

// ProbeConfig makes a Conn answer MsgProbe: it becomes a prober that
// netchecks of other nodes ask to find their NAT's filtering (see the top
// of probe.go). Run it on nodes with a public address only.
type ProbeConfig struct {
	// Helpers returns public nodes that relay change-IP probes (and whose
	// AllowRelay admits this node). Nil, or none usable (all at addresses
	// the requester has contacted), refuses change-IP requests.
	Helpers func() []Peer

	// Alt is a second UDP socket on the Conn's IP address (another port),
	// used only to send change-port probes. Nil refuses change-port
	// requests. The Conn never reads or closes it.
	Alt net.PacketConn

	// AllowRelay reports whether peer may ask this node, as a helper, to
	// send a probe to an address the request names. Nil refuses every
	// relay request: a node is a helper only for probers it trusts.
	AllowRelay func(peer Peer) bool
}

// ServeProbes makes the Conn answer MsgProbe requests as cfg says; nil
// stops it. It registers the MsgProbe handler (replacing any set with
// Handle).
func (c *Conn) ServeProbes(cfg *ProbeConfig) {
	c.probeMu.Lock()
	c.probe = cfg
	c.probeMu.Unlock()
	if cfg == nil {
		c.Handle(MsgProbe, nil)
		return
	}
	c.Handle(MsgProbe, c.handleProbe)
}

// handleProbe serves one MsgProbe request.
func (c *Conn) handleProbe(ctx context.Context, from Peer, body []byte) ([]byte, error) {
	c.probeMu.RLock()
	cfg := c.probe
	c.probeMu.RUnlock()
	req, err := parseProbeRequest(body)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		c.stats.probesRefused.Add(1)
		return nil, errors.New("probes not served")
	}
	switch req.mode {
	case probeChangePort:
		if cfg.Alt == nil {
			c.stats.probesRefused.Add(1)
			return nil, errors.New("no second socket for change-port probes")
		}
		pkt, err := bindingSuccess(req.txid, from.Addr)
		if err != nil {
			return nil, err
		}
		if _, err := cfg.Alt.WriteTo(pkt, net.UDPAddrFromAddrPort(from.Addr)); err != nil {
			return nil, fmt.Errorf("sending change-port probe: %v", err)
		}
		c.stats.probesSent.Add(1)
		return nil, nil

	case probeChangeIP:
		var helpers []Peer
		if cfg.Helpers != nil {
			helpers = cfg.Helpers()
		}
		var errs []error
		for _, h := range helpers {
			ip := h.Addr.Addr().Unmap()
			if ip == from.Addr.Addr() || slices.Contains(req.avoid, ip) || keyEqual(&h.Key, &from.Key) {
				continue
			}
			hctx, cancel := context.WithTimeout(ctx, probeHelperTTL)
			relay := probeRequest{mode: probeRelay, txid: req.txid, target: from.Addr}
			_, err := c.Call(hctx, h, MsgProbe, relay.marshal())
			cancel()
			if err == nil {
				c.stats.probesForwarded.Add(1)
				return nil, nil
			}
			errs = append(errs, err)
			c.log.Debug("probe helper", "helper", h, "err", err)
		}
		c.stats.probesRefused.Add(1)
		if len(errs) == 0 {
			return nil, errors.New("no probe helper at an address the requester has not contacted")
		}
		return nil, fmt.Errorf("no probe helper answered: %v", errors.Join(errs...))

	case probeRelay:
		if cfg.AllowRelay == nil || !cfg.AllowRelay(from) {
			c.stats.probesRefused.Add(1)
			return nil, errors.New("relay probes not allowed for this peer")
		}
		pkt, err := bindingSuccess(req.txid, req.target)
		if err != nil {
			return nil, err
		}
		if err := c.writeTo(pkt, unmapAddrPort(req.target)); err != nil {
			return nil, fmt.Errorf("sending relay probe: %v", err)
		}
		c.stats.probesSent.Add(1)
		c.stats.stunOut.Add(1)
		return nil, nil
	}
	return nil, fmt.Errorf("probe mode %v not served", req.mode)
}

// probeResult is the outcome of one filtering probe.
type probeResult struct {
	got  bool           // the probe packet arrived
	from netip.AddrPort // its source
}

// requestProbe asks prober for a probe of mode and waits up to wait after
// the prober confirmed it for the packet. A non-nil error means the prober
// could not or would not send it.
func (c *Conn) requestProbe(ctx context.Context, prober Peer, mode probeMode, avoid []netip.Addr, timeout, wait time.Duration) (probeResult, error) {
	t := &stunTxn{any: true, ch: make(chan stunReply, 1)}
	id := c.registerSTUN(t)
	defer c.unregisterSTUN(id)
	req := probeRequest{mode: mode, txid: id, avoid: avoid}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	_, err := c.Call(cctx, prober, MsgProbe, req.marshal())
	cancel()
	if err != nil {
		return probeResult{}, err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case r := <-t.ch:
		return probeResult{got: true, from: r.from}, nil
	case <-timer.C:
		return probeResult{}, nil
	case <-ctx.Done():
		return probeResult{}, ctx.Err()
	case <-c.closing:
		return probeResult{}, ErrClosed
	}
}
