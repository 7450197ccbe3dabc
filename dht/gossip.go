package dht

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/weft-net/weft/addr"
)

// Gossip spreads small signed statements that every node must learn
// quickly — revocations, anchor-set changes — over the DHT's peers. It is
// push–pull epidemic dissemination:
//
//   - Push. A node that learns a new valid payload (from Publish, a push,
//     or a pull reply) forwards it at once to Fanout peers, and again in
//     each of the next PushRounds rounds. Forward-once push alone misses
//     about e^-Fanout of the nodes (more with silent Byzantine peers).
//   - Pull. Every round's requests also carry a digest of the IDs the
//     sender holds, and the peer answers with the payloads it holds that
//     the digest lacks. An uninformed node stays uninformed only if all of
//     its Fanout peers are, so the uninformed fraction u shrinks to about
//     u^(Fanout+1) per round: the tail converges doubly exponentially.
//     Pull is also how clients (which are in nobody's table and so are
//     never pushed to) and newly joined nodes catch up.
//
// Fan-out peers come from Table.Sample, which spreads picks over the
// buckets in proportion to the ID space they cover, approximating a
// uniform sample of the network.
//
// A message's ID is the SHA-256 of its payload; IDs are remembered for
// Remember, so each payload is validated and delivered once. Payloads are
// kept (and offered to pulls) for Retain. Abuse limits: a size cap per
// payload (MaxPayload) and per message (MaxMessageSize), a per-sender
// token bucket charged for every payload not seen before (before
// validation, so a flood costs the sender its budget rather than us
// signature checks), and an offence against the sender's table entry for
// every invalid payload, which bans it after TableOptions.MaxOffences.
//
// Gossip starts no goroutines of its own between rounds except the
// immediate forwarding of new payloads, which Close cancels and waits for.
// The owner calls Round on a timer (package weft) or on virtual time
// (internal/sim).
type Gossip struct {
	tr         Transport
	table      *Table
	validate   func([]byte) error
	deliver    func([]byte)
	identify   func(Peer) (addr.NodeID, bool)
	now        func() time.Time
	log        *slog.Logger
	fanout     int
	pushRounds int
	retain     time.Duration
	remember   time.Duration
	maxPayload int
	timeout    time.Duration

	base      context.Context // cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup // forwarding goroutines

	mu      sync.Mutex // guards the fields below
	msgs    map[GossipID]*gossipMsg
	limiter limiter
	stats   GossipStats
}

// GossipID identifies a gossip message: the SHA-256 of its payload.
type GossipID [32]byte

// GossipIDOf returns payload's ID.
func GossipIDOf(payload []byte) GossipID { return sha256.Sum256(payload) }

func (id GossipID) String() string { return hex.EncodeToString(id[:8]) }

// short is the digest form of an ID.
func (id GossipID) short() [gossipShortID]byte { return [gossipShortID]byte(id[:gossipShortID]) }

type gossipMsg struct {
	payload  []byte // nil once older than Retain, or if invalid
	first    time.Time
	pushLeft int  // rounds still to push in
	invalid  bool // failed validation: senders are scored, never forwarded
}

// Defaults and limits for GossipOptions.
const (
	DefaultFanout        = 4
	MinFanout            = 3
	MaxFanout            = 5
	DefaultPushRounds    = 2
	DefaultGossipRetain  = 10 * time.Minute
	DefaultGossipForget  = time.Hour
	DefaultGossipPayload = 2 << 10
	DefaultGossipRate    = 2.0 // new payloads per second per sender
	DefaultGossipBurst   = 64

	// MaxGossipDigest bounds the IDs in one digest; a node holding more
	// sends its newest.
	MaxGossipDigest = 512

	// MaxGossipPayloads bounds the payloads in one message.
	MaxGossipPayloads = 255

	gossipShortID = 8
)

// ErrGossipClosed means the Gossip has been closed.
var ErrGossipClosed = errors.New("dht gossip closed")

// GossipOptions configures a Gossip.
type GossipOptions struct {
	// Transport carries the messages. Required. NewGossip registers the
	// MsgGossip handler on it; a DHT client's Transport works too.
	Transport Transport

	// Table supplies fan-out peers (Table.Sample) and takes offences for
	// invalid payloads. Required; usually DHT.Table().
	Table *Table

	// Validate checks a payload (signatures, that it is a kind gossip may
	// carry, that it is not too old). Required. Invalid payloads are
	// dropped and scored against the sender, except when the error wraps
	// ErrGossipIgnored: then the payload is only dropped.
	Validate func(payload []byte) error

	// Deliver receives each valid payload once, on the goroutine that
	// received it, before it is forwarded. It must not block for long.
	// Publish does not deliver the publisher's own payload. Nil discards.
	Deliver func(payload []byte)

	// Identify maps a sender to its node ID so offences reach its table
	// entry. Nil looks the sender's transport key up in Table.
	Identify func(Peer) (addr.NodeID, bool)

	// Fanout is how many peers each push and each round contacts. Zero
	// means DefaultFanout; otherwise it must be MinFanout..MaxFanout.
	Fanout int

	// PushRounds is how many rounds after its immediate forwarding a new
	// payload is pushed again. Zero means DefaultPushRounds; negative
	// means only the immediate push (pull still runs every round).
	PushRounds int

	// Retain is how long payloads are kept, listed in digests and served
	// to pulls. Zero means DefaultGossipRetain. Forget is how long an ID
	// is remembered so the payload is not accepted again; zero means
	// DefaultGossipForget, and it is raised to Retain if shorter. The
	// Validator should reject payloads older than Forget.
	Retain time.Duration
	Forget time.Duration

	// MaxPayload caps one payload in bytes. Zero means
	// DefaultGossipPayload; it may not exceed MaxValueSize.
	MaxPayload int

	// Rate and Burst bound the new payloads (not seen before) one sender,
	// by transport key, may hand us per second and at once. Zero means
	// DefaultGossipRate and DefaultGossipBurst; negative Rate disables the
	// limit. MaxPeers bounds the rate-limit buckets kept (zero means
	// DefaultMaxPeers).
	Rate     float64
	Burst    int
	MaxPeers int

	// Timeout bounds each request. Zero means DefaultTimeout.
	Timeout time.Duration

	// Now is the clock. Nil means time.Now.
	Now func() time.Time

	// Logger receives offences at Info and rounds at Debug. Nil discards.
	Logger *slog.Logger
}

// GossipStats counts what a Gossip has done.
type GossipStats struct {
	Held        int    // payloads held (within Retain)
	Published   uint64 // payloads published here
	Delivered   uint64 // new valid payloads received and delivered
	Duplicates  uint64 // payloads received again
	Invalid     uint64 // payloads rejected by Validate or too large
	Ignored     uint64 // payloads Validate ignored for now (ErrGossipIgnored)
	RateLimited uint64 // new payloads dropped by a sender's rate limit
	Requests    uint64 // requests sent (pushes and rounds)
	Failed      uint64 // requests unanswered or answered with garbage
}

// NewGossip returns a Gossip and registers its handler on opts.Transport.
func NewGossip(opts GossipOptions) (*Gossip, error) {
	switch {
	case opts.Transport == nil:
		return nil, errors.New("dht new gossip: GossipOptions.Transport must be non-nil")
	case opts.Table == nil:
		return nil, errors.New("dht new gossip: GossipOptions.Table must be non-nil")
	case opts.Validate == nil:
		return nil, errors.New("dht new gossip: GossipOptions.Validate must be non-nil")
	case opts.Fanout != 0 && (opts.Fanout < MinFanout || opts.Fanout > MaxFanout):
		return nil, fmt.Errorf("dht new gossip: Fanout %d outside %d..%d", opts.Fanout, MinFanout, MaxFanout)
	case opts.MaxPayload > MaxValueSize:
		return nil, fmt.Errorf("dht new gossip: MaxPayload %d exceeds MaxValueSize %d", opts.MaxPayload, MaxValueSize)
	}
	g := &Gossip{
		tr:         opts.Transport,
		table:      opts.Table,
		validate:   opts.Validate,
		deliver:    opts.Deliver,
		identify:   opts.Identify,
		now:        opts.Now,
		log:        opts.Logger,
		fanout:     opts.Fanout,
		pushRounds: opts.PushRounds,
		retain:     opts.Retain,
		remember:   opts.Forget,
		maxPayload: opts.MaxPayload,
		timeout:    opts.Timeout,
		msgs:       make(map[GossipID]*gossipMsg),
		limiter:    newLimiter(opts.Rate, opts.Burst, opts.MaxPeers),
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.log = g.log.With("component", "dht-gossip")
	if g.fanout == 0 {
		g.fanout = DefaultFanout
	}
	switch {
	case g.pushRounds == 0:
		g.pushRounds = DefaultPushRounds
	case g.pushRounds < 0:
		g.pushRounds = 0
	}
	if g.retain <= 0 {
		g.retain = DefaultGossipRetain
	}
	if g.remember <= 0 {
		g.remember = DefaultGossipForget
	}
	g.remember = max(g.remember, g.retain)
	if g.maxPayload <= 0 {
		g.maxPayload = DefaultGossipPayload
	}
	if g.timeout <= 0 {
		g.timeout = DefaultTimeout
	}
	if g.limiter.rate == 0 {
		g.limiter.rate = DefaultGossipRate
	}
	if g.limiter.burst <= 0 {
		g.limiter.burst = DefaultGossipBurst
	}
	if g.limiter.max <= 0 {
		g.limiter.max = DefaultMaxPeers
	}
	g.base, g.cancel = context.WithCancel(context.Background())
	g.tr.Handle(MsgGossip, g.handle)
	return g, nil
}

// Close stops forwarding, waits for forwards in flight, and makes the
// handler refuse requests. It is idempotent and returns nil.
func (g *Gossip) Close() error {
	g.closeOnce.Do(g.cancel)
	g.wg.Wait()
	return nil
}

// Stats returns counters.
func (g *Gossip) Stats() GossipStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.stats
	for _, m := range g.msgs {
		if m.payload != nil {
			st.Held++
		}
	}
	return st
}

// Has reports whether payload id has been received (or published) and
// is still remembered.
func (g *Gossip) Has(id GossipID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.msgs[id]
	return m != nil && !m.invalid
}

// Publish validates payload and pushes it to Fanout peers now; later
// rounds push it again and serve it to pulls. It returns the payload's ID
// and the error of validation, or ErrNoContacts when the table is empty
// (the payload is still held and will spread by pull). Publishing a
// payload already held only pushes it again.
func (g *Gossip) Publish(ctx context.Context, payload []byte) (GossipID, error) {
	id := GossipIDOf(payload)
	if len(payload) == 0 || len(payload) > g.maxPayload {
		return id, fmt.Errorf("dht gossip publish: payload is %d bytes, want 1..%d", len(payload), g.maxPayload)
	}
	if err := g.validate(payload); err != nil {
		return id, fmt.Errorf("dht gossip publish %s: %w: %w", id, ErrInvalid, err)
	}
	if err := g.base.Err(); err != nil {
		return id, ErrGossipClosed
	}
	payload = slices.Clone(payload)
	g.mu.Lock()
	if m := g.msgs[id]; m == nil || m.invalid {
		g.msgs[id] = &gossipMsg{payload: payload, first: g.now(), pushLeft: g.pushRounds}
	}
	g.stats.Published++
	g.mu.Unlock()
	if n := g.exchange(ctx, [][]byte{payload}, false); n == 0 {
		return id, fmt.Errorf("dht gossip publish %s: %w", id, ErrNoContacts)
	}
	return id, nil
}

// Round runs one gossip round: it forgets expired messages, then sends
// Fanout peers (Table.Sample) a request carrying the payloads still being
// pushed and a digest of the IDs held, takes in what they answer with,
// and counts the round against each pushed payload. It returns when every
// request has been answered or timed out. The owner calls it on a timer,
// every second or so.
func (g *Gossip) Round(ctx context.Context) error {
	if g.base.Err() != nil {
		return ErrGossipClosed
	}
	now := g.now()
	var push [][]byte
	g.mu.Lock()
	for id, m := range g.msgs {
		age := now.Sub(m.first)
		switch {
		case age >= g.remember:
			delete(g.msgs, id)
		case age >= g.retain:
			m.payload = nil
		}
		if m.payload != nil && m.pushLeft > 0 {
			m.pushLeft--
			push = append(push, m.payload)
		}
	}
	g.limiter.pruneLocked(now)
	g.mu.Unlock()
	g.exchange(ctx, push, true)
	return ctx.Err()
}

// forward pushes newly learned payloads to Fanout peers in the
// background.
func (g *Gossip) forward(payloads [][]byte) {
	if len(payloads) == 0 || g.base.Err() != nil {
		return
	}
	g.wg.Go(func() { g.exchange(g.base, payloads, false) })
}

// exchange sends one request to each of Fanout sampled peers, carrying
// push and (with pull) this node's digest, and takes in the replies. It
// returns the number of peers asked.
func (g *Gossip) exchange(ctx context.Context, push [][]byte, pull bool) int {
	peers := g.table.Sample(g.fanout)
	if len(peers) == 0 {
		return 0
	}
	req := GossipRequest{Payloads: fitPayloads(push, gossipRequestOverhead)}
	if pull {
		req.Digest = g.digest()
	}
	body, err := req.MarshalBinary()
	if err != nil { // fitPayloads and digest keep within limits
		g.log.Error("gossip request not encodable", "err", err)
		return 0
	}
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() { g.ask(ctx, p.Peer, body) })
	}
	wg.Wait()
	return len(peers)
}

func (g *Gossip) ask(ctx context.Context, to Peer, body []byte) {
	g.count(&g.stats.Requests)
	cctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	b, err := g.tr.Call(cctx, to, MsgGossip, body)
	if err != nil {
		g.count(&g.stats.Failed)
		return
	}
	var resp GossipResponse
	if err := resp.UnmarshalBinary(b); err != nil {
		g.count(&g.stats.Failed)
		g.offence(to, "malformed gossip reply", err)
		return
	}
	g.forward(g.acceptAll(to, resp.Payloads))
}

func (g *Gossip) handle(ctx context.Context, from Peer, body []byte) ([]byte, error) {
	if g.base.Err() != nil {
		return nil, ErrGossipClosed
	}
	var req GossipRequest
	if err := req.UnmarshalBinary(body); err != nil {
		g.offence(from, "malformed gossip request", err)
		return nil, err
	}
	g.forward(g.acceptAll(from, req.Payloads))
	var resp GossipResponse
	if req.Digest != nil {
		resp.Payloads = g.missing(req.Digest)
	}
	return resp.MarshalBinary()
}

// acceptAll takes in payloads from a peer and returns the new valid ones,
// to be forwarded.
func (g *Gossip) acceptAll(from Peer, payloads [][]byte) [][]byte {
	var fresh [][]byte
	for _, p := range payloads {
		if g.accept(from, p) {
			fresh = append(fresh, p)
		}
	}
	return fresh
}

// accept dedupes, rate-limits, size-checks and validates one payload from
// a peer, delivers it if new and valid, and reports whether it was.
func (g *Gossip) accept(from Peer, payload []byte) bool {
	id := GossipIDOf(payload)
	now := g.now()
	g.mu.Lock()
	if m := g.msgs[id]; m != nil {
		invalid := m.invalid
		if !invalid {
			g.stats.Duplicates++
		} else {
			g.stats.Invalid++
		}
		g.mu.Unlock()
		if invalid {
			g.offence(from, "invalid gossip payload (again)", nil)
		}
		return false
	}
	if !g.limiter.allowLocked(from.Key, now) {
		g.stats.RateLimited++
		g.mu.Unlock()
		return false
	}
	g.mu.Unlock()

	err := error(nil)
	if len(payload) > g.maxPayload {
		err = fmt.Errorf("payload is %d bytes, limit %d", len(payload), g.maxPayload)
	} else {
		err = g.validate(payload)
	}

	g.mu.Lock()
	if g.msgs[id] != nil { // raced with another copy
		g.stats.Duplicates++
		g.mu.Unlock()
		return false
	}
	if errors.Is(err, ErrGossipIgnored) {
		g.stats.Ignored++
		g.mu.Unlock()
		g.log.Debug("gossip payload ignored for now", "id", id, "from", from, "err", err)
		return false
	}
	if err != nil {
		g.msgs[id] = &gossipMsg{first: now, invalid: true}
		g.stats.Invalid++
		g.mu.Unlock()
		g.offence(from, "invalid gossip payload", err)
		return false
	}
	g.msgs[id] = &gossipMsg{payload: payload, first: now, pushLeft: g.pushRounds}
	g.stats.Delivered++
	g.mu.Unlock()
	if g.deliver != nil {
		g.deliver(payload)
	}
	return true
}

// digest lists the short IDs of the payloads held, newest first, at most
// MaxGossipDigest. It is never nil, so a request always asks for a pull.
func (g *Gossip) digest() [][gossipShortID]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	type held struct {
		id    GossipID
		first time.Time
	}
	var hs []held
	for id, m := range g.msgs {
		if m.payload != nil {
			hs = append(hs, held{id, m.first})
		}
	}
	slices.SortFunc(hs, func(a, b held) int { return b.first.Compare(a.first) })
	out := make([][gossipShortID]byte, 0, min(len(hs), MaxGossipDigest))
	for _, h := range hs[:min(len(hs), MaxGossipDigest)] {
		out = append(out, h.id.short())
	}
	return out
}

// missing returns the payloads held whose IDs digest lacks, newest first,
// as many as fit in one reply.
func (g *Gossip) missing(digest [][gossipShortID]byte) [][]byte {
	have := make(map[[gossipShortID]byte]bool, len(digest))
	for _, s := range digest {
		have[s] = true
	}
	g.mu.Lock()
	type held struct {
		payload []byte
		first   time.Time
	}
	var hs []held
	for id, m := range g.msgs {
		if m.payload != nil && !have[id.short()] {
			hs = append(hs, held{m.payload, m.first})
		}
	}
	g.mu.Unlock()
	slices.SortFunc(hs, func(a, b held) int { return b.first.Compare(a.first) })
	ps := make([][]byte, len(hs))
	for i, h := range hs {
		ps[i] = h.payload
	}
	return fitPayloads(ps, gossipResponseOverhead)
}

// offence scores the sender's table entry, if it has one.
func (g *Gossip) offence(from Peer, what string, err error) {
	var key Key
	ok := false
	if g.identify != nil {
		var id addr.NodeID
		if id, ok = g.identify(from); ok {
			key = NodeKey(id)
		}
	} else {
		key, ok = g.table.KeyOf(from.Key)
	}
	evicted := ok && g.table.Offence(key)
	g.log.Info("gossip peer misbehaved", "peer", from, "what", what, "err", err, "evicted", evicted)
}

func (g *Gossip) count(c *uint64) {
	g.mu.Lock()
	*c++
	g.mu.Unlock()
}

// Wire overheads: header, counts, and the largest digest.
const (
	gossipResponseOverhead = 2 + 1
	gossipRequestOverhead  = 2 + 1 + 2 + MaxGossipDigest*gossipShortID
)

// fitPayloads returns the longest prefix of ps that fits one message
// beside overhead bytes.
func fitPayloads(ps [][]byte, overhead int) [][]byte {
	size := overhead
	for i, p := range ps {
		size += 2 + len(p)
		if i == MaxGossipPayloads || size > MaxGossipMessage {
			return ps[:i]
		}
	}
	return ps
}

// MaxGossipMessage bounds an encoded gossip message. It is larger than
// MaxMessageSize, within what nat carries in one sealed packet.
const MaxGossipMessage = 8000

// GossipRequest pushes payloads and, when Digest is non-nil, asks for a
// pull: the payloads the receiver holds whose short IDs (the first 8
// bytes of the SHA-256) Digest lacks.
type GossipRequest struct {
	Payloads [][]byte
	Digest   [][gossipShortID]byte
}

// GossipResponse carries the payloads a pull asked for.
type GossipResponse struct {
	Payloads [][]byte
}

// MarshalBinary encodes m. It fails on more than MaxGossipPayloads
// payloads, an empty or oversized payload, more than MaxGossipDigest
// digest entries, or a message over MaxGossipMessage bytes.
func (m GossipRequest) MarshalBinary() ([]byte, error) {
	b, err := appendPayloads(header(nil, tagGossipRequest), m.Payloads)
	if err != nil {
		return nil, fmt.Errorf("encode GOSSIP request: %w", err)
	}
	if len(m.Digest) > MaxGossipDigest {
		return nil, fmt.Errorf("encode GOSSIP request: digest of %d IDs, limit %d", len(m.Digest), MaxGossipDigest)
	}
	if m.Digest == nil {
		b = append(b, 0xFF, 0xFF) // no pull
	} else {
		b = append(b, byte(len(m.Digest)>>8), byte(len(m.Digest)))
		for _, s := range m.Digest {
			b = append(b, s[:]...)
		}
	}
	if len(b) > MaxGossipMessage {
		return nil, fmt.Errorf("encode GOSSIP request: %d bytes, limit %d", len(b), MaxGossipMessage)
	}
	return b, nil
}

// UnmarshalBinary decodes b into m. Payloads do not alias b.
func (m *GossipRequest) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, what: "GOSSIP request"}
	if len(b) > MaxGossipMessage {
		d.fail("%d bytes, limit %d", len(b), MaxGossipMessage)
	}
	d.header(tagGossipRequest)
	var v GossipRequest
	v.Payloads = d.payloads()
	switch n := int(d.uint16()); {
	case d.err != nil:
	case n == 0xFFFF:
	case n > MaxGossipDigest:
		d.fail("digest of %d IDs, limit %d", n, MaxGossipDigest)
	default:
		v.Digest = make([][gossipShortID]byte, n)
		for i := range v.Digest {
			copy(v.Digest[i][:], d.bytes(gossipShortID))
		}
	}
	if err := d.finish(); err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalBinary encodes m, with the limits of GossipRequest.
func (m GossipResponse) MarshalBinary() ([]byte, error) {
	b, err := appendPayloads(header(nil, tagGossipResponse), m.Payloads)
	if err != nil {
		return nil, fmt.Errorf("encode GOSSIP response: %w", err)
	}
	if len(b) > MaxGossipMessage {
		return nil, fmt.Errorf("encode GOSSIP response: %d bytes, limit %d", len(b), MaxGossipMessage)
	}
	return b, nil
}

// UnmarshalBinary decodes b into m. Payloads do not alias b.
func (m *GossipResponse) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, what: "GOSSIP response"}
	if len(b) > MaxGossipMessage {
		d.fail("%d bytes, limit %d", len(b), MaxGossipMessage)
	}
	d.header(tagGossipResponse)
	v := GossipResponse{Payloads: d.payloads()}
	if err := d.finish(); err != nil {
		return err
	}
	*m = v
	return nil
}

func appendPayloads(b []byte, ps [][]byte) ([]byte, error) {
	if len(ps) > MaxGossipPayloads {
		return nil, fmt.Errorf("%d payloads, limit %d", len(ps), MaxGossipPayloads)
	}
	b = append(b, byte(len(ps)))
	for i, p := range ps {
		if len(p) == 0 {
			return nil, fmt.Errorf("payload %d is empty", i)
		}
		var err error
		if b, err = appendValue(b, p); err != nil {
			return nil, fmt.Errorf("payload %d: %w", i, err)
		}
	}
	return b, nil
}

func (d *decoder) payloads() [][]byte {
	n := int(d.byte())
	if d.err != nil || n == 0 {
		return nil
	}
	ps := make([][]byte, 0, n)
	for i := range n {
		p := d.value()
		if d.err != nil {
			return nil
		}
		if len(p) == 0 {
			d.fail("payload %d is empty", i)
			return nil
		}
		ps = append(ps, p)
	}
	return ps
}
