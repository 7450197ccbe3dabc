package sim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
)

// Kind is how a simulated node behaves.
type Kind uint8

// Node kinds. Every Byzantine node runs a real dht.DHT (so it bootstraps,
// is admitted to tables and answers PING like anyone); its misbehaviour is
// applied by the network when requests reach it.
const (
	Honest   Kind = iota
	Silent        // admitted, then never answers
	Dropping      // answers a fraction (Config.DropAnswer) of requests
	Eclipse       // answers FIND_NODE/FIND_VALUE with the colluders closest to the target, never a value; drops stores
	Stale         // routes honestly but serves an older, validly signed record and drops stores
	Forged        // routes honestly but serves forged records and forged gossip
	numKinds
)

var kindNames = [numKinds]string{"honest", "silent", "dropping", "eclipse", "stale", "forged"}

func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// errNoHandler is what a node without a handler for a type answers.
var errNoHandler = errors.New("no handler")

// node is one simulated node.
type node struct {
	idx    int
	id     addr.NodeID
	key    dht.Key
	peer   dht.Peer
	kind   Kind
	client bool
	up     atomic.Bool

	mu       sync.Mutex // guards handlers
	handlers map[dht.MsgType]dht.Handler

	d  *dht.DHT
	st *dht.Store
	g  *dht.Gossip

	delivered atomic.Int64 // virtual unix nanos of the gossip delivery; 0 = not yet
}

func (n *node) contact() dht.Contact { return dht.Contact{ID: n.id, Peer: n.peer} }

// network is the simulated packet network: latency per pair of nodes, loss
// per packet, and the Byzantine behaviours. It is addressed by index: node
// i sits at 10.i/8:4000.
type network struct {
	cfg *Config
	sim *Sim

	mu    sync.RWMutex // guards nodes (appended on joins)
	nodes []*node

	calls [16]atomic.Int64 // requests sent, by MsgType
}

func peerOf(i int) dht.Peer {
	var k [32]byte
	binary.BigEndian.PutUint64(k[:], uint64(i)+1)
	k[31] = 0x5A
	ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	return dht.Peer{Addr: netip.AddrPortFrom(ip, 4000), Key: k}
}

func (nw *network) byPeer(p dht.Peer) *node {
	a := p.Addr.Addr().As4()
	i := int(a[1])<<16 | int(a[2])<<8 | int(a[3])
	nw.mu.RLock()
	defer nw.mu.RUnlock()
	if i >= len(nw.nodes) || nw.nodes[i].peer != p {
		return nil
	}
	return nw.nodes[i]
}

// latency is the one-way delay between a and b: Config.Latency scaled by
// a factor in [0.5, 1.5) fixed per pair, so that RTT-aware choice has
// something to choose.
func (nw *network) latency(a, b int) time.Duration {
	if a > b {
		a, b = b, a
	}
	x := uint64(a)<<32 | uint64(b)
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	f := 0.5 + float64(x>>11)/float64(1<<53)
	return time.Duration(float64(nw.cfg.Latency) * f)
}

// transport is one node's attachment.
type transport struct {
	nw   *network
	self *node
}

var _ dht.Transport = (*transport)(nil)

func (t *transport) Handle(typ dht.MsgType, h dht.Handler) {
	t.self.mu.Lock()
	t.self.handlers[typ] = h
	t.self.mu.Unlock()
}

// sleep waits d of (virtual) time or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Call delivers the request after the link latency, runs the receiver's
// behaviour, and delivers the reply after the latency again. A lost
// packet, a dead or silent receiver is never answered: Call returns when
// ctx is done.
func (t *transport) Call(ctx context.Context, to dht.Peer, typ dht.MsgType, body []byte) ([]byte, error) {
	nw := t.nw
	nw.calls[typ&15].Add(1)
	dst := nw.byPeer(to)
	noReply := func() ([]byte, error) {
		<-ctx.Done()
		return nil, fmt.Errorf("call %s %s: no reply: %w", to, typ, ctx.Err())
	}
	if dst == nil || rand.Float64() < nw.cfg.Loss {
		return noReply()
	}
	lat := nw.latency(t.self.idx, dst.idx)
	if err := sleep(ctx, lat); err != nil {
		return nil, fmt.Errorf("call %s %s: %w", to, typ, err)
	}
	if !dst.up.Load() {
		return noReply()
	}
	reply, answer, err := nw.serve(ctx, t.self, dst, typ, slices.Clone(body))
	if !answer || rand.Float64() < nw.cfg.Loss {
		return noReply()
	}
	if err := sleep(ctx, lat); err != nil {
		return nil, fmt.Errorf("call %s %s: %w", to, typ, err)
	}
	if err != nil {
		return nil, fmt.Errorf("call %s %s: remote error: %w", to, typ, err)
	}
	return reply, nil
}

// serve runs dst's behaviour for one request; answer false means no reply
// is sent.
func (nw *network) serve(ctx context.Context, src, dst *node, typ dht.MsgType, body []byte) (reply []byte, answer bool, err error) {
	dst.mu.Lock()
	h := dst.handlers[typ]
	dst.mu.Unlock()
	honest := func() ([]byte, bool, error) {
		if h == nil {
			return nil, true, errNoHandler
		}
		b, err := h(ctx, src.peer, body)
		return b, true, err
	}
	switch dst.kind {
	case Honest:
		return honest()
	case Silent:
		return nil, false, nil
	case Dropping:
		if rand.Float64() >= nw.cfg.DropAnswer {
			return nil, false, nil
		}
		if typ == dht.MsgGossip {
			return blackHole()
		}
		return honest()
	}
	// Eclipse, Stale and Forged.
	switch typ {
	case dht.MsgPing:
		return honest()
	case dht.MsgStore:
		var req dht.StoreRequest
		if err := req.UnmarshalBinary(body); err != nil {
			return nil, true, err
		}
		b, err := dht.StoreResponse{Status: dht.StatusOK, StoredSeq: nw.sim.recs.seqOf(req.Key)}.MarshalBinary()
		return b, true, err
	case dht.MsgGossip:
		if dst.kind == Forged {
			b, err := dht.GossipResponse{Payloads: [][]byte{nw.sim.recs.forgedRevocation()}}.MarshalBinary()
			return b, true, err
		}
		return blackHole()
	case dht.MsgFindNode:
		if dst.kind != Eclipse {
			return honest()
		}
		var req dht.FindNodeRequest
		if err := req.UnmarshalBinary(body); err != nil {
			return nil, true, err
		}
		b, err := dht.FindNodeResponse{Contacts: nw.sim.colluders(req.Target, dht.MaxContacts)}.MarshalBinary()
		return b, true, err
	case dht.MsgFindValue:
		var req dht.FindValueRequest
		if err := req.UnmarshalBinary(body); err != nil {
			return nil, true, err
		}
		var resp dht.FindValueResponse
		switch dst.kind {
		case Eclipse:
			resp.Contacts = nw.sim.colluders(req.Key, dht.MaxContacts)
		case Stale:
			if v := nw.sim.recs.stale(req.Key); v != nil {
				resp.Found, resp.Value = true, v
			} else {
				return honest()
			}
		case Forged:
			resp.Found, resp.Value = true, nw.sim.recs.forged(req.Key)
		}
		b, err := resp.MarshalBinary()
		return b, true, err
	}
	return honest()
}

// blackHole answers a gossip request with nothing: the node takes pushes
// and never forwards or serves them.
func blackHole() ([]byte, bool, error) {
	b, err := dht.GossipResponse{}.MarshalBinary()
	return b, true, err
}
