package nat

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Retransmission schedule for Call.
const (
	initialRTO = 200 * time.Millisecond
	maxRTO     = 3 * time.Second
)

// ctlPacket is a control datagram copied out of a read batch.
type ctlPacket struct {
	buf  *[]byte
	n    int
	from netip.AddrPort
}

// pendingCall is an outstanding Call or CallHello awaiting its response.
type pendingCall struct {
	typ   MsgType
	key   [32]byte       // sealed: the key the response must be sealed with
	addr  netip.AddrPort // plain: the address the response must come from
	plain bool
	ch    chan callResult // buffered 1; written once, by whoever removes the entry
}

type callResult struct {
	body []byte
	from Peer
	err  error
}

// Handle registers h for requests of type t, replacing any earlier handler;
// a nil h removes it. Requests of a type with no handler are answered with a
// RemoteError. Only MsgHello requests are accepted unsealed.
func (c *Conn) Handle(t MsgType, h Handler) {
	c.handlersMu.Lock()
	defer c.handlersMu.Unlock()
	if h == nil {
		delete(c.handlers, t)
		return
	}
	c.handlers[t] = h
}

// Call sends a sealed request of type t to the peer and returns the
// response body. It retransmits with exponential backoff until a response
// arrives, ctx is done (the error wraps ctx.Err()) or the Conn closes
// (ErrClosed). An error from the remote handler is returned as a wrapped
// *RemoteError. Call does not retain body.
func (c *Conn) Call(ctx context.Context, to Peer, t MsgType, body []byte) ([]byte, error) {
	shared, err := c.sharedKey(&to.Key)
	if err != nil {
		return nil, fmt.Errorf("nat call %s to %s: %w", t, to, err)
	}
	res, err := c.roundTrip(ctx, to.Addr, t, body, shared, to.Key)
	if err != nil {
		return nil, fmt.Errorf("nat call %s to %s: %w", t, to, err)
	}
	return res.body, nil
}

// CallHello sends an unsealed MsgHello request to addr and returns the
// response body and the responder: its address and the public key named in
// the response header. That key is NOT authenticated here; the caller must
// check that the body (the responder's signed node record) binds it before
// sealing anything to it. Retransmission and errors are as for Call.
func (c *Conn) CallHello(ctx context.Context, addr netip.AddrPort, body []byte) ([]byte, Peer, error) {
	res, err := c.roundTrip(ctx, addr, MsgHello, body, nil, [32]byte{})
	if err != nil {
		return nil, Peer{}, fmt.Errorf("nat hello to %s: %w", addr, err)
	}
	return res.body, res.from, nil
}

// sharedKey returns the cached shared key for peer, computing it if needed.
func (c *Conn) sharedKey(peer *[32]byte) (*[32]byte, error) {
	ks := c.ks.Load()
	if k, ok := ks.keys.get(peer); ok {
		return k, nil
	}
	k, err := precompute(peer, &ks.priv)
	if err != nil {
		return nil, err
	}
	ks.keys.put(peer, k)
	return k, nil
}

// roundTrip runs one request/response exchange. shared == nil means plain.
func (c *Conn) roundTrip(ctx context.Context, addr netip.AddrPort, t MsgType, body []byte, shared *[32]byte, key [32]byte) (callResult, error) {
	if len(body) > MaxBodySize {
		return callResult{}, fmt.Errorf("%d bytes, limit %d: %w", len(body), MaxBodySize, ErrTooLarge)
	}
	if c.closed.Load() {
		return callResult{}, ErrClosed
	}
	addr = unmapAddrPort(addr)
	c.stats.callsStarted.Add(1)
	pc := &pendingCall{typ: t, key: key, addr: addr, plain: shared == nil, ch: make(chan callResult, 1)}
	txid := c.register(pc)
	defer c.unregister(txid)
	pkt := c.buildPacket(&payload{typ: t, txid: txid, body: body}, shared, nil)

	rto := initialRTO
	timer := time.NewTimer(rto)
	defer timer.Stop()
	for {
		if err := c.writeTo(pkt, addr); err != nil {
			if c.closed.Load() {
				return callResult{}, ErrClosed
			}
			// Unreachable networks and the like may heal; keep trying
			// until ctx says stop.
			c.log.Debug("control send", "to", addr, "type", t, "err", err)
		} else {
			c.stats.ctlOut.Add(1)
		}
		select {
		case res := <-pc.ch:
			return res, res.err
		case <-timer.C:
			c.stats.retransmits.Add(1)
			rto = min(2*rto, maxRTO)
			timer.Reset(rto)
		case <-ctx.Done():
			return callResult{}, ctx.Err()
		case <-c.closing:
			return callResult{}, ErrClosed
		}
	}
}

// register adds pc under a fresh random transaction ID.
func (c *Conn) register(pc *pendingCall) uint64 {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	return insertFresh(c.pending, pc, func() uint64 {
		var b [8]byte
		rand.Read(b[:])
		return binary.BigEndian.Uint64(b[:])
	})
}

// insertFresh stores v in m under a key from newKey that m does not hold
// yet, drawing again on a collision, and returns the key. The caller holds
// m's lock.
func insertFresh[K comparable, V any](m map[K]V, v V, newKey func() K) K {
	for {
		k := newKey()
		if _, dup := m[k]; !dup {
			m[k] = v
			return k
		}
	}
}

func (c *Conn) unregister(txid uint64) {
	c.pendingMu.Lock()
	delete(c.pending, txid)
	c.pendingMu.Unlock()
}

// buildPacket seals p to shared, or builds a plain packet if shared is nil.
// sender, if not nil, is the public key to name as sender (the previous key,
// when answering a request sealed to it); nil means the current key.
func (c *Conn) buildPacket(p *payload, shared *[32]byte, sender *[32]byte) []byte {
	h := header{sender: c.ks.Load().pub}
	if sender != nil {
		h.sender = *sender
	}
	rand.Read(h.nonce[:])
	if shared == nil {
		h.flags = FlagPlain
		return plainPacket(&h, p)
	}
	return sealPacket(&h, p, shared)
}

// controlWorker processes queued control packets until the Conn closes.
func (c *Conn) controlWorker() {
	defer c.wg.Done()
	for {
		select {
		case p := <-c.ctlq:
			c.handleControl((*p.buf)[:p.n], p.from)
			c.ctlPool.Put(p.buf)
		case p := <-c.stunq:
			c.handleSTUN((*p.buf)[:p.n], p.from)
			c.ctlPool.Put(p.buf)
		case <-c.closing:
			return
		}
	}
}

// enqueueControl copies a control datagram for the workers, dropping it if
// they are saturated. Called by the reader.
func (c *Conn) enqueueControl(pkt []byte, from netip.AddrPort) {
	c.stats.ctlIn.Add(1)
	if len(pkt) > MaxControlSize || len(pkt) < headerSize {
		c.stats.ctlMalformed.Add(1)
		return
	}
	if !c.enqueue(c.ctlq, pkt, from) {
		c.stats.ctlQueueFull.Add(1)
	}
}

// enqueue copies pkt (at most MaxControlSize bytes) into a pooled buffer
// and queues it on q for the workers. It reports false, dropping the
// packet, if q is full.
func (c *Conn) enqueue(q chan<- ctlPacket, pkt []byte, from netip.AddrPort) bool {
	buf := c.ctlPool.Get().(*[]byte)
	n := copy(*buf, pkt)
	select {
	case q <- ctlPacket{buf: buf, n: n, from: from}:
		return true
	default:
		c.ctlPool.Put(buf)
		return false
	}
}

// handleControl authenticates, decodes and routes one control packet. pkt
// is only valid during the call.
func (c *Conn) handleControl(pkt []byte, from netip.AddrPort) {
	h, rest, err := parseHeader(pkt)
	if err != nil {
		c.stats.ctlMalformed.Add(1)
		c.log.Debug("dropping control packet", "from", from, "err", err)
		return
	}
	if h.flags&FlagPlain != 0 {
		c.handlePlain(&h, rest, from)
		return
	}
	ks := c.ks.Load()
	shared, cached := ks.keys.get(&h.sender)
	if !cached {
		// The Curve25519 operation is the expensive part: charge for it.
		if !c.lim.allow(from.Addr(), c.now()) {
			c.stats.ctlRateLimited.Add(1)
			return
		}
		if shared, err = precompute(&h.sender, &ks.priv); err != nil {
			c.stats.ctlBadKey.Add(1)
			c.log.Debug("dropping control packet", "from", from, "err", err)
			return
		}
	}
	p, err := openPayload(&h, rest, shared)
	var asKey *[32]byte // the key the request was sealed to, if not the current one
	if errors.Is(err, errUnsealable) {
		// Sealed to the key before a rotation?
		if prev := c.prev.Load(); prev != nil {
			if ps, perr := precompute(&h.sender, &prev.priv); perr == nil {
				if pp, perr := openPayload(&h, rest, ps); perr == nil {
					p, err, cached, shared = pp, nil, true, ps // don't cache the old shared key
					asKey = &prev.pub
				}
			}
		}
	}
	if err != nil {
		if errors.Is(err, errUnsealable) {
			c.stats.ctlUnsealable.Add(1)
		} else {
			c.stats.ctlMalformed.Add(1)
		}
		c.log.Debug("dropping control packet", "from", from, "err", err)
		return
	}
	if !cached {
		ks.keys.put(&h.sender, shared)
	}
	peer := Peer{Addr: from, Key: h.sender}
	if p.isResponse() {
		c.complete(&p, peer, false)
		return
	}
	if cached && !c.lim.allow(from.Addr(), c.now()) {
		c.stats.ctlRateLimited.Add(1)
		return
	}
	c.dispatch(&p, peer, shared, asKey)
}

// handlePlain handles an unsealed packet: MsgHello only.
func (c *Conn) handlePlain(h *header, rest []byte, from netip.AddrPort) {
	p, err := parsePayload(rest)
	if err != nil {
		c.stats.ctlMalformed.Add(1)
		c.log.Debug("dropping control packet", "from", from, "err", err)
		return
	}
	if p.typ != MsgHello {
		c.stats.ctlPlainRefused.Add(1)
		c.log.Debug("dropping unsealed control packet", "from", from, "type", p.typ)
		return
	}
	p.body = bytes.Clone(p.body) // pkt is recycled when we return
	peer := Peer{Addr: from, Key: h.sender}
	if p.isResponse() {
		c.complete(&p, peer, true)
		return
	}
	if !c.lim.allow(from.Addr(), c.now()) {
		c.stats.ctlRateLimited.Add(1)
		return
	}
	c.dispatch(&p, peer, nil, nil)
}

// complete hands a response to the call waiting for it, if it matches.
func (c *Conn) complete(p *payload, from Peer, plain bool) {
	c.pendingMu.Lock()
	pc := c.pending[p.txid]
	ok := pc != nil && pc.typ == p.typ && pc.plain == plain
	if ok && plain {
		ok = pc.addr == from.Addr
	} else if ok {
		ok = keyEqual(&pc.key, &from.Key)
	}
	if ok {
		delete(c.pending, p.txid)
	}
	c.pendingMu.Unlock()
	if !ok {
		c.stats.responsesUnmatched.Add(1)
		return
	}
	c.stats.responsesIn.Add(1)
	res := callResult{from: from}
	if p.isError() {
		res.err = &RemoteError{Msg: string(p.body)}
	} else {
		res.body = p.body
	}
	pc.ch <- res
}

// dispatch runs the handler for a request in its own goroutine and sends
// the reply. shared == nil means reply plain.
func (c *Conn) dispatch(p *payload, from Peer, shared *[32]byte, asKey *[32]byte) {
	c.handlersMu.RLock()
	h := c.handlers[p.typ]
	c.handlersMu.RUnlock()
	if h == nil {
		c.stats.ctlUnknownType.Add(1)
		c.reply(from, p, nil, fmt.Errorf("no handler for message type %s", p.typ), shared, asKey)
		return
	}
	select {
	case c.inflight <- struct{}{}:
	default:
		c.stats.ctlQueueFull.Add(1)
		return
	}
	c.stats.requestsHandled.Add(1)
	req := *p
	c.wg.Add(1) // the calling worker holds the WaitGroup above zero
	go func() {
		defer c.wg.Done()
		defer func() { <-c.inflight }()
		ctx, cancel := context.WithTimeout(c.ctx, handlerTimeout)
		resp, err := h(ctx, from, req.body)
		cancel()
		c.reply(from, &req, resp, err, shared, asKey)
	}()
}

// reply sends the response to req.
func (c *Conn) reply(to Peer, req *payload, body []byte, herr error, shared *[32]byte, asKey *[32]byte) {
	if c.closed.Load() {
		return
	}
	if herr == nil && len(body) > MaxBodySize {
		c.log.Warn("handler response too large", "type", req.typ, "size", len(body), "limit", MaxBodySize)
		herr = fmt.Errorf("response to %s too large (%d bytes)", req.typ, len(body))
	}
	p := payload{typ: req.typ, txid: req.txid, flags: payloadResponse, body: body}
	if herr != nil {
		msg := herr.Error()
		if len(msg) > maxErrorMsg {
			msg = msg[:maxErrorMsg]
		}
		p.flags |= payloadError
		p.body = []byte(msg)
	}
	if err := c.writeTo(c.buildPacket(&p, shared, asKey), to.Addr); err != nil {
		c.log.Debug("control reply", "to", to.Addr, "type", req.typ, "err", err)
		return
	}
	c.stats.ctlOut.Add(1)
}
