package weft

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/nat/ice"
	"github.com/weft-net/weft/trust"
	"github.com/weft-net/weft/tunnel"
)

// NAT traversal. Connecting to a peer races two attempts:
//
//   - the direct exchange (connectDirect): a sealed MsgConnect to every
//     endpoint the peer advertises, which wins in milliseconds when the
//     peer is reachable (same host, LAN, public address);
//   - ICE (iceConnect): a controlling ice.Session whose offer goes, sealed,
//     both straight to the peer's endpoints (msgICEOffer) and through
//     rendezvous nodes (msgICEForward): the peer's rendezvous servers from
//     its record and this node's bootstrap nodes. A rendezvous node passes
//     the offer on (msgICEDeliver) over the binding the target keeps with it
//     (msgICERegister, every iceRegisterEvery) and returns the answer. The
//     forwarded offer and answer are sealed end to end with the two nodes'
//     keys (NaCl box), so the rendezvous node can neither read nor alter
//     them, and it forwards only for admitted members, rate-limited.
//
// The first attempt to succeed becomes the WireGuard endpoint (setPeer,
// with a reason that says which path and why); the other is cancelled.
// A relayed ICE path (local TURN candidate) gets a nat.RelayedEndpoint: a
// loopback stand-in address WireGuard sends to, whose packets go through
// Session.Write, and whose OnPacket comes back through it. While a peer is
// relayed, the initiator retries ICE with a new session (upgradeFirst:
// iceUpgradeFirst or Config.ICEUpgradeAfter, doubling to ten times that)
// and moves to a direct path when one works;
// WireGuard follows the endpoint change without dropping connections. A
// session whose path is lost (consent checks fail for ~30 s: the peer
// moved, or a NAT mapping was rebound) makes the initiator connect again.

// Control messages of NAT traversal.
const (
	// msgICEOffer carries an offer (iceOffer) straight to the target; the
	// answer (iceAnswer) is the response.
	msgICEOffer nat.MsgType = 20
	// msgICEForward asks a rendezvous node to deliver a sealed offer to a
	// member registered with it; the sealed answer is the response.
	msgICEForward nat.MsgType = 21
	// msgICEDeliver is the rendezvous node's delivery to the target.
	msgICEDeliver nat.MsgType = 22
	// msgICERegister keeps a member's binding with a rendezvous node.
	msgICERegister nat.MsgType = 23
	// msgPathPing is `weft ping`: echoed over the WireGuard path.
	msgPathPing nat.MsgType = 24
)

// Timing and bounds of NAT traversal.
const (
	iceConnectTimeout = 15 * time.Second
	iceGatherTimeout  = 3 * time.Second
	iceRegisterEvery  = 20 * time.Second
	iceRegisterTTL    = 75 * time.Second
	iceMaxRegs        = 8192
	iceMaxForwarders  = 4
	iceForwardTimeout = 6 * time.Second
	iceUpgradeFirst   = 30 * time.Second // Config.ICEUpgradeAfter's default
	iceUpgradeGrowth  = 10               // the retries' wait grows up to this many times the first
	iceTick           = 2 * time.Second
	// iceForwardRate and iceForwardBurst limit forwards per member.
	iceForwardRate  = 5.0
	iceForwardBurst = 20.0
	// iceMaxAnswering bounds responder sessions being set up at once.
	iceMaxAnswering = 64
)

// natState is the node's NAT traversal: the ICE mux over its socket, the
// ICE sessions in use, and, as a rendezvous node, the members registered
// with it.
type natState struct {
	mux *ice.Mux // nil: NAT traversal is off (direct exchange only)
	// registered counts registrations with rendezvous nodes that
	// succeeded.
	registered atomic.Int64

	mu        sync.Mutex                    // guards the fields below
	paths     map[addr.NodeID]*peerPath     // ICE paths in use, by peer
	answering map[answerKey]*answering      // responder sessions being set up
	regs      map[[32]byte]registration     // members registered with this node, by key
	limits    map[[32]byte]*tokenBucket     // forwards per member
	report    *nat.NATReport                // the last netcheck, or nil
	lastFail  map[addr.NodeID]failReason    // why the last connect to a peer failed
	creds     map[[32]byte]*relayCredsEntry // weft relays' credentials, by relay node key (relay.go)
	ready     map[[32]byte]int              // answered offers waiting for a path, by caller key (readyPeer)
	probeAlt  net.PacketConn                // second socket for change-port probes, or nil
	probing   bool                          // ServeProbes is on (DHT server role)

	// checked is closed once netchecks have named this node's NAT type,
	// or have tried every STUN server and prober known after the
	// bootstrap nodes answered, or after iceNetcheckWait (netcheckLoop),
	// so that a connect can wait for the NAT type (it goes in the offer
	// and the answer, and so in both sides' path reasons).
	checked   chan struct{}
	checkOnce sync.Once
	// netChanged asks netcheckLoop for a netcheck now: the machine's
	// network changed (watchNetwork).
	netChanged chan struct{}

	portmap        *nat.PortMapper                 // nil: port mapping is off (portmap.go)
	mapped         atomic.Pointer[nat.PortMapping] // the gateway's mapping of the socket, or nil
	portmapClosing atomic.Bool                     // closePortMap has begun
}

// Waits for the first netcheck: a connect's offer (iceNetcheckWait) and
// an answer (iceAnswerNetcheckWait) carry this node's NAT type.
const (
	iceNetcheckWait       = 4 * time.Second
	iceAnswerNetcheckWait = 1500 * time.Millisecond
)

// Netchecks (netcheckLoop). The first runs as the node comes up, when it
// often knows only its bootstrap nodes' addresses: one STUN server, which
// cannot tell a symmetric NAT, and no prober. Another runs as soon as STUN
// servers or probers it has not tried become known (the bootstrap nodes'
// hellos bring their records, with their relays) while the NAT type is
// still unknown, and one every iceNetcheckEvery.
const (
	iceNetcheckEvery   = 10 * time.Minute
	iceNetcheckTimeout = 10 * time.Second
	// iceNetcheckPoll is how often new servers are looked for until the
	// first netchecks settle (checked), iceTick after.
	iceNetcheckPoll = 50 * time.Millisecond
)

// waitNetcheck waits at most d for the first netchecks (checked).
func (n *Node) waitNetcheck(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-n.nat.checked:
	case <-t.C:
	case <-ctx.Done():
	}
}

type failReason struct {
	why string
	at  time.Time
}

// netcheckLoop runs the netchecks (see iceNetcheckEvery) and closes
// checked.
func (n *Node) netcheckLoop() {
	defer n.wg.Done()
	start := time.Now()
	var last time.Time
	// Servers and probers tried since the last periodic netcheck: only
	// new ones make another run (the helpers' order changes with RTTs).
	triedSTUN := map[netip.AddrPort]bool{}
	triedProbers := map[[32]byte]bool{}
	settle := func() { n.nat.checkOnce.Do(func() { close(n.nat.checked) }) }
	defer settle()
	for {
		servers, probers := n.netcheckServers(), n.probers()
		grew := false
		for _, s := range servers {
			grew = grew || !triedSTUN[s]
		}
		for _, p := range probers {
			grew = grew || !triedProbers[p.Key]
		}
		now := time.Now()
		periodic := last.IsZero() || now.Sub(last) >= iceNetcheckEvery
		if periodic || grew && n.natKind() == "" && len(servers) > 0 {
			if periodic {
				clear(triedSTUN)
				clear(triedProbers)
			}
			for _, s := range servers {
				triedSTUN[s] = true
			}
			for _, p := range probers {
				triedProbers[p.Key] = true
			}
			last = now
			ctx, cancel := context.WithTimeout(n.ctx, iceNetcheckTimeout)
			_, err := n.netcheck(ctx, servers, probers)
			cancel()
			if n.ctx.Err() != nil {
				return
			}
			if err != nil {
				n.logger.Debug("netcheck", "err", err)
			}
			continue // look for servers that became known meanwhile
		}
		// Nothing new to try: settled if the NAT type is known, or every
		// bootstrap node answered (their records, and so relays, known).
		if n.natKind() != "" || n.bootstrapResolved() || time.Since(start) >= iceNetcheckWait {
			settle()
		}
		wait := iceTick
		select {
		case <-n.nat.checked:
		default:
			wait = iceNetcheckPoll
		}
		select {
		case <-n.ctx.Done():
			return
		case <-n.nat.netChanged:
			last = time.Time{} // a periodic netcheck now
		case <-time.After(wait):
		}
	}
}

// bootstrapResolved says whether every bootstrap node has answered a
// hello, and its record is known.
func (n *Node) bootstrapResolved() bool {
	n.mu.Lock()
	want := n.selfExcludedBootstrapLocked()
	var ids []addr.NodeID
	ok := len(n.bootPeers) >= len(want)
	for _, id := range n.bootIDs {
		ids = append(ids, id)
	}
	n.mu.Unlock()
	for _, id := range ids {
		ok = ok && n.knownRecord(id) != nil
	}
	return ok
}

// setNATReport keeps a netcheck's report. An early one (partial: the
// mapping only, see nat.NetcheckConfig.Mapped) replaces the last only if
// it names the NAT where the last did not. When the NAT type changes, the
// reasons of the paths in use say so, and checked closes once it is
// known.
func (n *Node) setNATReport(rep *nat.NATReport, partial bool) {
	if rep.Mapping != nat.MappingUnknown || partial && n.bootstrapResolved() {
		// The mapping is what the path reasons need (a relay is needed
		// only with endpoint-dependent mapping): a connect need not wait
		// for the filtering probes, which take a second. With every
		// bootstrap node's servers asked, the mapping is as known as it
		// will be.
		n.nat.checkOnce.Do(func() { close(n.nat.checked) })
	}
	n.nat.mu.Lock()
	old := n.nat.report
	oldKind := ""
	if old != nil {
		oldKind = old.Kind()
	}
	if partial && (rep.Kind() == "" || oldKind != "") {
		n.nat.mu.Unlock()
		return
	}
	n.nat.report = rep
	n.nat.mu.Unlock()
	kind := rep.Kind()
	if kind != "" || !rep.UDP {
		n.nat.checkOnce.Do(func() { close(n.nat.checked) })
	}
	if kind != oldKind {
		n.refreshPathReasons()
	}
}

// refreshPathReasons recomputes the reasons of the ICE paths in use with
// this node's NAT type now (a netcheck may end after a path was chosen).
func (n *Node) refreshPathReasons() {
	n.nat.mu.Lock()
	paths := make([]*peerPath, 0, len(n.nat.paths))
	for _, pp := range n.nat.paths {
		paths = append(paths, pp)
	}
	n.nat.mu.Unlock()
	own := n.natKind()
	for _, pp := range paths {
		pp.mu.Lock()
		if pp.closed || pp.path.IsZero() || pp.reason == "" {
			pp.mu.Unlock()
			continue
		}
		old := pp.reason
		pp.reason = pathReason(pp.path, own, pp.peerNAT)
		reason := pp.reason
		pp.mu.Unlock()
		if reason == old {
			continue
		}
		n.mu.Lock()
		if ps := n.peers[pp.rec.Cert.NodeID]; ps != nil && ps.reason == old {
			ps.reason = reason
		}
		n.mu.Unlock()
		n.logger.Debug("path reason updated", "name", pp.rec.Cert.Name, "reason", reason)
	}
}

// registration is a member's binding with this node.
type registration struct {
	addr    netip.AddrPort
	id      addr.NodeID
	expires time.Time
}

type answerKey struct {
	key [32]byte
	id  uint64
}

// answering is a responder session being set up for one offer: the
// retransmitted offer gets the same answer.
type answering struct {
	done   chan struct{}
	answer []byte
	err    error
}

// peerPath is an ICE session that carries a peer's WireGuard traffic.
type peerPath struct {
	rec       *trust.NodeRecord
	initiator bool
	sess      *ice.Session
	relay     atomic.Pointer[nat.RelayedEndpoint]
	pendMu    sync.Mutex // guards pending, and setting relay
	pending   [][]byte   // packets that arrived before relay was set
	peerNAT   string     // the peer's NAT as it reported it
	// credsExpire is when the weft relay credentials the session was
	// started with expire (zero: none); a session relaying through its
	// own allocation is replaced before then.
	credsExpire time.Time

	mu        sync.Mutex // guards the fields below
	path      ice.Path
	reason    string
	nextRetry time.Time
	backoff   time.Duration
	closed    bool
}

func (p *peerPath) onPacket(b []byte) {
	if r := p.relay.Load(); r != nil {
		r.Deliver(b)
		return
	}
	// The peer may use the path before this side has made the relayed
	// endpoint (usePath): its first handshake initiation, say. Keep a
	// few packets for it.
	p.pendMu.Lock()
	defer p.pendMu.Unlock()
	if r := p.relay.Load(); r != nil {
		r.Deliver(b)
		return
	}
	if len(p.pending) < maxPendingPackets {
		p.pending = append(p.pending, slices.Clone(b))
	}
}

// maxPendingPackets bounds the packets a relayed path keeps until its
// endpoint exists.
const maxPendingPackets = 8

// setRelay sets the relayed endpoint of the path and delivers what
// arrived before it.
func (p *peerPath) setRelay(r *nat.RelayedEndpoint) {
	p.pendMu.Lock()
	p.relay.Store(r)
	pending := p.pending
	p.pending = nil
	p.pendMu.Unlock()
	for _, b := range pending {
		r.Deliver(b)
	}
}

func (p *peerPath) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.sess != nil {
		p.sess.Close()
	}
	if r := p.relay.Load(); r != nil {
		r.Close()
	}
}

// tokenBucket is a small rate limiter.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

func (b *tokenBucket) allow(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// startNAT creates the ICE mux over the node's socket and registers the
// NAT traversal handlers. Called at the end of startDataPlane.
func (n *Node) startNAT() error {
	n.nat = &natState{
		paths:     make(map[addr.NodeID]*peerPath),
		answering: make(map[answerKey]*answering),
		regs:      make(map[[32]byte]registration),
		limits:    make(map[[32]byte]*tokenBucket),
		lastFail:  make(map[addr.NodeID]failReason),
		creds:     make(map[[32]byte]*relayCredsEntry),
		ready:     make(map[[32]byte]int),
		checked:   make(chan struct{}),

		netChanged: make(chan struct{}, 1),
	}
	cfg := ice.Config{
		Send:        n.conn.SendSTUN,
		LocalAddr:   n.conn.LocalAddr(),
		STUNServers: n.stunServers(),
		Logger:      n.cfg.Logger,
	}
	if cfg.LocalAddr.Addr().IsUnspecified() {
		for _, e := range n.endpoints {
			if e.Port() == cfg.LocalAddr.Port() && !e.Addr().IsLoopback() {
				cfg.LocalAddrs = append(cfg.LocalAddrs, e)
			}
		}
	}
	// TURN servers are given per session (gatherRelays): weft relays'
	// credentials expire, and which relays to use depends on the peer.
	if err := n.startRelay(); err != nil {
		return err
	}
	mux, err := ice.NewMux(cfg)
	if err != nil {
		return fmt.Errorf("start NAT traversal: %w", err)
	}
	n.nat.mux = mux
	n.conn.SetSTUNHandler(mux.Deliver)
	n.nat.probeAlt = openProbeAlt(n.conn.LocalAddr())
	n.updateProbes()
	n.conn.Handle(msgICEOffer, n.handleICEOffer)
	n.conn.Handle(msgICEForward, n.handleICEForward)
	n.conn.Handle(msgICEDeliver, n.handleICEDeliver)
	n.conn.Handle(msgICERegister, n.handleICERegister)
	n.conn.Handle(msgPathPing, n.handlePathPing)
	n.startPortMap()
	n.wg.Add(3)
	go n.natLoop()
	go n.netcheckLoop()
	go n.watchNetwork()
	return nil
}

// closeNAT closes every ICE session and the mux. Called from
// closeDataPlane, before the socket closes.
func (n *Node) closeNAT() {
	n.closePortMap()
	n.closeRelay()
	if n.nat != nil && n.nat.probeAlt != nil {
		n.conn.ServeProbes(nil)
		n.nat.probeAlt.Close()
	}
	if n.nat == nil || n.nat.mux == nil {
		return
	}
	n.conn.SetSTUNHandler(nil)
	n.nat.mu.Lock()
	paths := n.nat.paths
	n.nat.paths = map[addr.NodeID]*peerPath{}
	n.nat.mu.Unlock()
	for _, p := range paths {
		p.close()
	}
	n.nat.mux.Close()
}

// stunServers are the bootstrap nodes (every weft node answers STUN) and
// the configured STUN servers.
func (n *Node) stunServers() []netip.AddrPort {
	n.mu.Lock()
	boot := n.selfExcludedBootstrapLocked()
	n.mu.Unlock()
	return mergeAddrPorts(slices.Clone(n.cfg.STUNServers), boot...)
}

// natLoop registers with rendezvous nodes, upgrades relayed paths and
// drops sessions of removed peers. (Netchecks run in netcheckLoop.)
func (n *Node) natLoop() {
	defer n.wg.Done()
	var lastReg time.Time
	for {
		now := time.Now()
		// Until a registration got through (the bootstrap nodes are
		// resolved after the socket is up), try every tick.
		if now.Sub(lastReg) >= iceRegisterEvery || n.nat.registered.Load() == 0 {
			lastReg = now
			n.registerRendezvous(n.ctx)
		}
		n.tendPaths(now)
		n.updateProbes()
		n.refreshRelayCreds()
		wait := iceTick
		if n.nat.registered.Load() == 0 {
			wait = iceTick / 8 // until the bootstrap nodes are known
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// tendPaths closes sessions of peers no longer configured and retries ICE
// for relayed peers this node initiated.
func (n *Node) tendPaths(now time.Time) {
	n.mu.Lock()
	live := make(map[addr.NodeID]bool, len(n.peers))
	for id := range n.peers {
		live[id] = true
	}
	n.mu.Unlock()
	n.nat.mu.Lock()
	var gone, retry []*peerPath
	for id, p := range n.nat.paths {
		if !live[id] {
			gone = append(gone, p)
			delete(n.nat.paths, id)
			continue
		}
		p.mu.Lock()
		switch {
		case p.initiator && p.path.Relayed && !p.nextRetry.IsZero() && now.After(p.nextRetry):
			p.nextRetry = time.Time{} // one retry at a time
			retry = append(retry, p)
		case p.path.LocalType == ice.TypeRelay && !p.credsExpire.IsZero() && now.After(p.credsExpire.Add(-relayRestartBefore)):
			// pion refreshes the allocation with the credentials the
			// session started with; a new session gets fresh ones. Either
			// side does it: the path runs through this side's allocation.
			p.credsExpire = time.Time{} // once
			p.nextRetry = time.Time{}
			retry = append(retry, p)
		}
		p.mu.Unlock()
	}
	n.nat.mu.Unlock()
	for _, p := range gone {
		p.close()
	}
	for _, old := range retry {
		n.goBackground(func(ctx context.Context) { n.upgrade(ctx, old) })
	}
}

// upgradeFirst is how long a relayed peer waits for its first upgrade
// try (Config.ICEUpgradeAfter).
func (n *Node) upgradeFirst() time.Duration {
	if d := n.cfg.ICEUpgradeAfter; d > 0 {
		return d
	}
	return iceUpgradeFirst
}

// upgrade tries a new ICE session for a relayed peer. The new session
// replaces the old one whatever its path (the responder switched to it
// already); a direct path ends the retries.
func (n *Node) upgrade(ctx context.Context, old *peerPath) {
	ctx, cancel := context.WithTimeout(ctx, iceConnectTimeout)
	defer cancel()
	rec := old.rec
	if p, err := n.Resolve(ctx, rec.Cert.NodeID.String()); err == nil && p.rec.Seq > rec.Seq {
		rec = p.rec
	}
	pp, err := n.iceConnect(ctx, rec)
	old.mu.Lock()
	first := n.upgradeFirst()
	backoff := min(max(2*old.backoff, first), iceUpgradeGrowth*first)
	old.mu.Unlock()
	if err != nil {
		n.logger.Debug("path upgrade failed", "name", rec.Cert.Name, "err", err)
		old.mu.Lock()
		old.backoff, old.nextRetry = backoff, time.Now().Add(backoff)
		old.mu.Unlock()
		return
	}
	pp.backoff = backoff
	if err := n.usePath(pp); err != nil {
		pp.close()
		return
	}
	if !pp.path.Relayed {
		n.logger.Info("path upgraded from relay to direct", "name", rec.Cert.Name, "path", pp.path)
	}
}

// connect makes rec's node a WireGuard peer: the direct exchange raced
// with ICE. The first to succeed sets the peer up.
func (n *Node) connect(ctx context.Context, rec *trust.NodeRecord) error {
	if n.nat == nil || n.nat.mux == nil {
		return n.connectExchange(ctx, rec)
	}
	ctx, cancel := context.WithTimeout(ctx, iceConnectTimeout)
	defer cancel()
	type result struct {
		ice   bool
		err   error
		apply func() error
		drop  func()
	}
	ch := make(chan result, 2)
	go func() {
		if len(rec.Endpoints) == 0 {
			ch <- result{err: fmt.Errorf("peer %s advertises no endpoint", rec.Cert.Name)}
			return
		}
		ep, best, err := n.connectDirect(ctx, rec)
		ch <- result{err: err, apply: func() error {
			n.dropPath(rec.Cert.NodeID)
			return n.setPeer(best, ep, "direct: peer answered on "+ep.String(), true)
		}, drop: func() {}}
	}()
	go func() {
		pp, err := n.iceConnect(ctx, rec)
		r := result{ice: true, err: err}
		if err == nil {
			r.apply = func() error { return n.usePath(pp) }
			r.drop = pp.close
		}
		ch <- r
	}()
	var errs []error
	var iceErr error
	for i := 0; i < 2; i++ {
		r := <-ch
		if r.err != nil {
			errs = append(errs, r.err)
			if r.ice {
				iceErr = r.err
			}
			continue
		}
		cancel()
		err := r.apply()
		if i == 0 {
			// The loser may still succeed; drop it if it does.
			go func() {
				if r := <-ch; r.err == nil {
					r.drop()
				}
			}()
		}
		if err == nil {
			n.nat.mu.Lock()
			delete(n.nat.lastFail, rec.Cert.NodeID)
			n.nat.mu.Unlock()
		}
		return err
	}
	why := n.explainFailure(rec, iceErr)
	n.nat.mu.Lock()
	n.nat.lastFail[rec.Cert.NodeID] = failReason{why: why, at: time.Now()}
	n.nat.mu.Unlock()
	return fmt.Errorf("cannot reach %s: %s: %w", rec.Cert.Name, why, errors.Join(errs...))
}

// explainFailure names the cause of a failed connect that a user can act
// on.
func (n *Node) explainFailure(rec *trust.NodeRecord, iceErr error) string {
	if !rec.Expires.After(n.now()) {
		return fmt.Sprintf("peer offline (record expired %s ago)", n.now().Sub(rec.Expires).Round(time.Second))
	}
	n.nat.mu.Lock()
	rep := n.nat.report
	n.nat.mu.Unlock()
	if rep != nil && !rep.UDP {
		return "UDP blocked outbound (no STUN server answered this node)"
	}
	if errors.Is(iceErr, errNoAnswer) {
		return "peer offline or unreachable (no answer to the offer, directly or through a rendezvous node)"
	}
	var np *noPathError
	if errors.As(iceErr, &np) {
		return fmt.Sprintf("no relay reachable (no direct path worked; %s)", np.relays.describe())
	}
	if iceErr != nil {
		return "no relay reachable (no direct path worked)"
	}
	return "peer unreachable"
}

// errNoAnswer: the offer got no answer by any route.
var errNoAnswer = errors.New("no answer to the ICE offer")

// noPathError is ICE's failure to find a working pair, with the relays
// the session had.
type noPathError struct {
	err    error
	relays relaySet
}

func (e *noPathError) Error() string { return e.err.Error() }
func (e *noPathError) Unwrap() error { return e.err }

// iceConnect runs ICE as the controlling side. The returned path is not
// in use yet: pass it to usePath, or close it.
func (n *Node) iceConnect(ctx context.Context, rec *trust.NodeRecord) (*peerPath, error) {
	pp := &peerPath{rec: rec, initiator: true}
	n.waitNetcheck(ctx, iceNetcheckWait)
	relays := n.gatherRelays(ctx, rec)
	pp.credsExpire = relays.expires
	sess, err := n.nat.mux.NewSession(ice.SessionConfig{Controlling: true, OnPacket: pp.onPacket, GatherTimeout: iceGatherTimeout, TURN: relays.turn})
	if err != nil {
		return nil, err
	}
	pp.sess = sess
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	desc, err := sess.LocalDescription()
	if err != nil {
		sess.Close()
		return nil, err
	}
	n.addPortMapping(&desc)
	db, err := desc.MarshalBinary()
	if err != nil {
		sess.Close()
		return nil, err
	}
	var idb [8]byte
	crand.Read(idb[:])
	offer := encodeSignal(binary.BigEndian.Uint64(idb[:]), n.ownRecord(), n.natKind(), db)
	n.logger.Debug("sending ICE offer", "name", rec.Cert.Name, "candidates", len(desc.Candidates))
	ans, err := n.sendOffer(ctx, rec, offer)
	if err != nil {
		sess.Close()
		return nil, err
	}
	var remote ice.Description
	if err := remote.UnmarshalBinary(ans.desc); err != nil {
		sess.Close()
		return nil, fmt.Errorf("answer of %s: %w", rec.Cert.Name, err)
	}
	if ans.rec.Seq > rec.Seq {
		pp.rec = ans.rec
	}
	pp.peerNAT = ans.nat
	path, err := sess.Connect(ctx, remote)
	if err != nil {
		sess.Close()
		return nil, &noPathError{fmt.Errorf("ICE with %s: %w", rec.Cert.Name, err), relays}
	}
	pp.path = path
	return pp, nil
}

// usePath makes an ICE path the peer's WireGuard endpoint and keeps its
// session, replacing the previous one.
func (n *Node) usePath(pp *peerPath) error {
	ep := pp.path.Remote
	if !pp.path.SharedSocket() {
		r, err := n.conn.NewRelayedEndpoint(pp.sess.Write)
		if err != nil {
			return err
		}
		pp.setRelay(r)
		ep = r.AddrPort()
	}
	pp.mu.Lock()
	pp.reason = n.pathReason(pp.path, pp.peerNAT)
	if pp.path.Relayed && pp.initiator {
		if pp.backoff == 0 {
			pp.backoff = n.upgradeFirst()
		}
		pp.nextRetry = time.Now().Add(pp.backoff)
	}
	reason := pp.reason
	pp.mu.Unlock()
	if err := n.setPeer(pp.rec, ep, reason, pp.initiator); err != nil {
		return err
	}
	id := pp.rec.Cert.NodeID
	n.nat.mu.Lock()
	old := n.nat.paths[id]
	n.nat.paths[id] = pp
	n.nat.mu.Unlock()
	if old != nil && old != pp {
		old.close()
	}
	pp.sess.OnPathChange(func(p ice.Path) { n.pathChanged(pp, p) })
	n.logger.Info("ICE path in use", "name", pp.rec.Cert.Name, "path", pp.path, "reason", reason)
	return nil
}

// dropPath closes the ICE session of a peer that a direct exchange set up.
func (n *Node) dropPath(id addr.NodeID) {
	n.nat.mu.Lock()
	old := n.nat.paths[id]
	delete(n.nat.paths, id)
	n.nat.mu.Unlock()
	if old != nil {
		old.close()
	}
}

// pathChanged follows ICE's view of a path in use: a switch of the
// selected pair moves the WireGuard endpoint (shared-socket paths); a lost
// path makes the initiator connect again.
func (n *Node) pathChanged(pp *peerPath, p ice.Path) {
	pp.mu.Lock()
	closed := pp.closed
	old := pp.path
	if !p.IsZero() {
		pp.path = p
	}
	pp.mu.Unlock()
	if closed {
		return
	}
	name := pp.rec.Cert.Name
	if p.IsZero() {
		n.logger.Info("ICE path lost", "name", name, "path", old)
		if pp.initiator {
			n.goBackground(func(ctx context.Context) {
				n.nat.mu.Lock()
				cur := n.nat.paths[pp.rec.Cert.NodeID]
				n.nat.mu.Unlock()
				if cur != pp {
					return
				}
				rec := pp.rec
				if r, err := n.Resolve(ctx, rec.Cert.NodeID.String()); err == nil && r.rec.Seq > rec.Seq {
					rec = r.rec
				}
				if err := n.connect(ctx, rec); err != nil {
					n.logger.Info("reconnect after a lost path failed", "name", name, "err", err)
				}
			})
		}
		return
	}
	if p.SharedSocket() && old.SharedSocket() && p.Remote != old.Remote {
		pp.mu.Lock()
		pp.reason = n.pathReason(p, pp.peerNAT)
		reason := pp.reason
		pp.mu.Unlock()
		n.goBackground(func(context.Context) {
			if err := n.setPeer(pp.rec, p.Remote, reason, pp.initiator); err != nil {
				n.logger.Debug("moving endpoint", "name", name, "err", err)
			}
		})
	}
}

// pathReason says why a path is what it is, from the pair's candidate
// types and both sides' NAT types (this node's netcheck, the peer's as its
// offer or answer said).
func (n *Node) pathReason(p ice.Path, peerNAT string) string {
	return pathReason(p, n.natKind(), peerNAT)
}

func pathReason(p ice.Path, own, peer string) string {
	switch {
	case p.LocalType == ice.TypeRelay || p.RemoteType == ice.TypeRelay:
		var why string
		switch {
		case own == "symmetric" && peer == "symmetric":
			why = "both sides behind endpoint-dependent (symmetric) NAT"
		case own == "UDP blocked":
			why = "UDP blocked here"
		case peer == "UDP blocked":
			why = "UDP blocked at peer"
		case own != "" && peer != "":
			why = fmt.Sprintf("%s here, %s at peer", natPhrase(own), natPhrase(peer))
		case own != "" || peer != "":
			why = fmt.Sprintf("no direct candidate pair worked (%s here, %s at peer)", natPhrase(own), natPhrase(peer))
		default:
			why = "no direct candidate pair worked (NAT types unknown)"
		}
		if p.LocalType == ice.TypeRelay {
			return fmt.Sprintf("relay: %s; via TURN relay address %s", why, p.Local)
		}
		return fmt.Sprintf("relay: %s; via the peer's TURN relay address %s", why, p.Remote)
	case p.LocalType == ice.TypeHost && p.RemoteType == ice.TypeHost:
		if a := p.Remote.Addr(); a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() {
			return fmt.Sprintf("direct: host candidate on the same LAN (%s)", p.Remote)
		}
		return fmt.Sprintf("direct: host candidate, no NAT between (%s)", p.Remote)
	default:
		return fmt.Sprintf("direct: server-reflexive (NAT hole punched) %s %s -> %s %s", p.LocalType, p.Local, p.RemoteType, p.Remote)
	}
}

// natPhrase names a NAT type (nat.NATReport.Kind) in a path reason:
// "symmetric NAT", "port-restricted NAT", "no NAT".
func natPhrase(kind string) string {
	switch kind {
	case "":
		return "NAT type unknown"
	case "symmetric":
		return "symmetric NAT"
	case "port-restricted cone":
		return "port-restricted NAT"
	case "restricted cone":
		return "address-restricted NAT"
	case "full cone":
		return "full-cone NAT"
	case "open internet":
		return "no NAT"
	case "no NAT, firewalled":
		return "no NAT but a firewall"
	}
	return kind
}

// pathKind is "relay" or "direct", from a path reason.
func pathKind(reason string) string {
	if strings.HasPrefix(reason, "relay") {
		return "relay"
	}
	return "direct"
}

// natReport is the last netcheck's report, nil before the first.
func (n *Node) natReport() *nat.NATReport {
	if n.nat == nil {
		return nil
	}
	n.nat.mu.Lock()
	defer n.nat.mu.Unlock()
	return n.nat.report
}

// natKind is this node's NAT type from the last netcheck ("" if unknown).
func (n *Node) natKind() string {
	if n.nat == nil {
		return ""
	}
	n.nat.mu.Lock()
	defer n.nat.mu.Unlock()
	if n.nat.report == nil {
		return ""
	}
	return n.nat.report.Kind()
}

// Signalling messages: an offer and an answer share one layout,
//
//	id(8) recordLen(2) record natLen(1) nat description
//
// (the answer's id echoes the offer's). record is the sender's signed
// node record, nat its NAT type as its netcheck named it, description an
// ice.Description in binary.
type signal struct {
	id   uint64
	raw  []byte
	rec  *trust.NodeRecord
	nat  string
	desc []byte
}

func encodeSignal(id uint64, rec []byte, natKind string, desc []byte) []byte {
	if len(natKind) > maxSignalNAT {
		natKind = natKind[:maxSignalNAT]
	}
	b := binary.BigEndian.AppendUint64(nil, id)
	b = binary.BigEndian.AppendUint16(b, uint16(len(rec)))
	b = append(b, rec...)
	b = append(b, byte(len(natKind)))
	b = append(b, natKind...)
	return append(b, desc...)
}

var errBadSignal = errors.New("malformed ICE signalling message")

// maxSignalNAT bounds a signal's NAT type.
const maxSignalNAT = 64

func decodeSignal(b []byte) (signal, error) {
	var s signal
	if len(b) < 11 {
		return s, errBadSignal
	}
	s.id = binary.BigEndian.Uint64(b)
	rl := int(binary.BigEndian.Uint16(b[8:]))
	b = b[10:]
	if len(b) < rl+1 {
		return s, errBadSignal
	}
	s.raw, b = b[:rl], b[rl:]
	nl := int(b[0])
	b = b[1:]
	if nl > maxSignalNAT || len(b) < nl || len(b)-nl == 0 {
		return s, errBadSignal
	}
	s.nat, s.desc = string(b[:nl]), b[nl:]
	return s, nil
}

// verifySignal decodes a signal and checks its record as handleConnect
// does: it verifies, and its WireGuard key is the sender's.
func (n *Node) verifySignal(b []byte, sender [32]byte) (signal, error) {
	s, err := decodeSignal(b)
	if err != nil {
		return s, err
	}
	rec, err := n.verifyRecord(s.raw, n.now())
	if err != nil {
		n.countReject(err)
		return s, fmt.Errorf("ICE offer refused: %w", err)
	}
	if rec.WireGuardKey() != sender {
		return s, errors.New("ICE offer refused: the record's WireGuard key is not the sender's key")
	}
	if rec.Cert.NodeID == n.cert.NodeID {
		return s, errors.New("ICE offer refused: that is this node's own identity")
	}
	s.rec = rec
	return s, nil
}

// sendOffer sends the offer straight to rec's endpoints and through
// rendezvous nodes at once; the first valid answer wins.
func (n *Node) sendOffer(ctx context.Context, rec *trust.NodeRecord, offer []byte) (signal, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	key := rec.WireGuardKey()
	type result struct {
		ans signal
		err error
	}
	ch := make(chan result, len(rec.Endpoints)+iceMaxForwarders)
	check := func(body []byte, err error) {
		if err != nil {
			ch <- result{err: err}
			return
		}
		ans, err := n.verifySignal(body, key)
		if err == nil && ans.rec.Cert.NodeID != rec.Cert.NodeID {
			err = fmt.Errorf("answered as %s, not %s", ans.rec.Cert.Name, rec.Cert.Name)
		}
		ch <- result{ans: ans, err: err}
	}
	tries := 0
	for _, ep := range rec.Endpoints {
		tries++
		go func() {
			check(n.conn.Call(ctx, nat.Peer{Addr: ep, Key: key}, msgICEOffer, offer))
		}()
	}
	fw := n.forwarders(rec)
	if len(fw) > 0 {
		sealed, err := n.sealTo(key, offer)
		if err != nil {
			return signal{}, err
		}
		own := n.ownRecord()
		body := binary.BigEndian.AppendUint16(nil, uint16(len(own)))
		body = append(body, own...)
		body = append(body, key[:]...)
		body = append(body, sealed...)
		for _, f := range fw {
			tries++
			go func() {
				// A target that just came up may not be registered yet:
				// ask again while the rendezvous node refuses.
				for {
					cctx, ccancel := context.WithTimeout(ctx, iceForwardTimeout)
					out, err := n.conn.Call(cctx, f, msgICEForward, body)
					ccancel()
					var re *nat.RemoteError
					if errors.As(err, &re) && strings.Contains(re.Msg, "not registered") {
						select {
						case <-time.After(500 * time.Millisecond):
							continue
						case <-ctx.Done():
						}
					}
					if err == nil {
						out, err = n.openFrom(key, out)
					}
					check(out, err)
					return
				}
			}()
		}
	}
	var errs []error
	for range tries {
		select {
		case r := <-ch:
			if r.err == nil {
				return r.ans, nil
			}
			errs = append(errs, r.err)
		case <-ctx.Done():
			return signal{}, fmt.Errorf("%w from %s: %w", errNoAnswer, rec.Cert.Name, ctx.Err())
		}
	}
	return signal{}, fmt.Errorf("%w from %s: %w", errNoAnswer, rec.Cert.Name, errors.Join(errs...))
}

// forwarders are the rendezvous nodes to send an offer for rec through:
// its rendezvous servers, then this node's bootstrap nodes.
func (n *Node) forwarders(rec *trust.NodeRecord) []nat.Peer {
	var out []nat.Peer
	add := func(p nat.Peer) {
		if len(out) < iceMaxForwarders && p.Key != rec.WireGuardKey() && p.Key != n.conn.PublicKey() &&
			!slices.ContainsFunc(out, func(q nat.Peer) bool { return q.Key == p.Key }) {
			out = append(out, p)
		}
	}
	n.mu.Lock()
	byAddr := make(map[netip.AddrPort]dht.Peer, len(n.bootPeers))
	for a, p := range n.bootPeers {
		byAddr[a] = p
	}
	n.mu.Unlock()
	if len(rec.Rendezvous) > 0 {
		for _, e := range n.dht.Table().Entries() {
			byAddr[e.Contact.Peer.Addr] = e.Contact.Peer
		}
		for _, a := range rec.Rendezvous {
			if p, ok := byAddr[a]; ok {
				add(nat.Peer{Addr: p.Addr, Key: p.Key})
			}
		}
	}
	n.mu.Lock()
	for _, p := range n.bootPeers {
		add(nat.Peer{Addr: p.Addr, Key: p.Key})
	}
	n.mu.Unlock()
	return out
}

// sealTo seals b for the node with WireGuard key to: nonce(24) box.
func (n *Node) sealTo(to [32]byte, b []byte) ([]byte, error) {
	var nonce [24]byte
	if _, err := crand.Read(nonce[:]); err != nil {
		return nil, err
	}
	n.rotateMu.Lock()
	priv := n.id.WG
	n.rotateMu.Unlock()
	return box.Seal(nonce[:], b, &nonce, &to, &priv), nil
}

// openFrom opens what sealTo sealed, from the node with key from.
func (n *Node) openFrom(from [32]byte, b []byte) ([]byte, error) {
	if len(b) < 24+box.Overhead {
		return nil, errBadSignal
	}
	nonce := [24]byte(b[:24])
	n.rotateMu.Lock()
	priv := n.id.WG
	n.rotateMu.Unlock()
	out, ok := box.Open(nil, b[24:], &nonce, &from, &priv)
	if !ok {
		return nil, errors.New("sealed ICE message does not open")
	}
	return out, nil
}

// handleICEOffer answers an offer sent straight to this node.
func (n *Node) handleICEOffer(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	return n.answerOffer(from.Key, body)
}

// handleICEDeliver answers an offer a rendezvous node forwarded: the body
// is the caller's key and the offer sealed by it.
func (n *Node) handleICEDeliver(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	if len(body) < 32 {
		return nil, errBadSignal
	}
	caller := [32]byte(body[:32])
	offer, err := n.openFrom(caller, body[32:])
	if err != nil {
		return nil, err
	}
	ans, err := n.answerOffer(caller, offer)
	if err != nil {
		return nil, err
	}
	return n.sealTo(caller, ans)
}

// answerOffer verifies an offer, starts the responder session (once per
// offer: retransmissions get the same answer) and returns the answer.
// The session connects in the background and, when it does, its path
// becomes the caller's WireGuard endpoint.
func (n *Node) answerOffer(caller [32]byte, body []byte) ([]byte, error) {
	if n.nat == nil || n.nat.mux == nil {
		return nil, errors.New("NAT traversal is off on this node")
	}
	off, err := n.verifySignal(body, caller)
	if err != nil {
		n.logger.Warn("refused ICE offer", "reason", err)
		return nil, err
	}
	var remote ice.Description
	if err := remote.UnmarshalBinary(off.desc); err != nil {
		return nil, fmt.Errorf("ICE offer: %w", err)
	}
	k := answerKey{caller, off.id}
	n.nat.mu.Lock()
	a, dup := n.nat.answering[k]
	if !dup {
		if len(n.nat.answering) >= iceMaxAnswering {
			n.nat.mu.Unlock()
			return nil, errors.New("too many ICE offers being answered; try again")
		}
		a = &answering{done: make(chan struct{})}
		n.nat.answering[k] = a
	}
	n.nat.mu.Unlock()
	if dup {
		select {
		case <-a.done:
			return a.answer, a.err
		case <-time.After(iceGatherTimeout + time.Second):
			return nil, errors.New("ICE answer not ready")
		}
	}
	n.storeRecord(off.rec, off.raw)
	pp := &peerPath{rec: off.rec, peerNAT: off.nat}
	finish := func(ans []byte, err error) ([]byte, error) {
		a.answer, a.err = ans, err
		close(a.done)
		time.AfterFunc(iceConnectTimeout, func() {
			n.nat.mu.Lock()
			delete(n.nat.answering, k)
			n.nat.mu.Unlock()
		})
		return ans, err
	}
	// The caller waits for the answer (a rendezvous node iceForwardTimeout
	// at most): credentials not cached are asked for briefly.
	n.waitNetcheck(n.ctx, iceAnswerNetcheckWait)
	rctx, rcancel := context.WithTimeout(n.ctx, relayCredsTimeout)
	relays := n.gatherRelays(rctx, off.rec)
	rcancel()
	pp.credsExpire = relays.expires
	sess, err := n.nat.mux.NewSession(ice.SessionConfig{OnPacket: pp.onPacket, GatherTimeout: iceGatherTimeout, TURN: relays.turn})
	if err != nil {
		return finish(nil, err)
	}
	pp.sess = sess
	desc, err := sess.LocalDescription()
	var db []byte
	if err == nil {
		n.addPortMapping(&desc)
		db, err = desc.MarshalBinary()
	}
	if err != nil {
		sess.Close()
		return finish(nil, err)
	}
	// WireGuard must know the caller before it can send its first
	// handshake initiation, which is as soon as the answer has arrived
	// and its side of ICE has chosen a pair (readyPeer).
	release := n.readyPeer(off.rec)
	started := n.goBackground(func(ctx context.Context) {
		defer release()
		ctx, cancel := context.WithTimeout(ctx, iceConnectTimeout)
		defer cancel()
		path, err := sess.Connect(ctx, remote)
		if err != nil {
			n.logger.Debug("ICE as responder failed", "name", off.rec.Cert.Name, "err", err)
			sess.Close()
			return
		}
		pp.path = path
		if err := n.usePath(pp); err != nil {
			n.logger.Debug("ICE path not usable", "name", off.rec.Cert.Name, "err", err)
			pp.close()
		}
	})
	if !started {
		release()
		sess.Close()
		return finish(nil, ErrClosed)
	}
	return finish(encodeSignal(off.id, n.ownRecord(), n.natKind(), db), nil)
}

// readyPeer makes the caller of an offer this node answers a WireGuard
// peer of the tunnel, without endpoint or keepalive, unless it is a
// configured peer already; the returned func removes it again unless it
// was set up meanwhile (setPeer), once no other answered offer of the
// same node needs it.
//
// The caller sends its handshake initiation the moment its side of ICE
// has chosen a pair. The controlled side learns that choice from the
// same check, and sets the peer up (usePath) a moment after: an
// initiation that arrives first is from a key WireGuard does not know,
// dropped as invalid, and the caller tries again only after
// REKEY_TIMEOUT (5 s; wireguard-go sends no other initiation before).
// A peer without endpoint answers where the initiation came from (the
// pair ICE chose, or the relayed endpoint), which is the endpoint
// usePath then sets.
func (n *Node) readyPeer(rec *trust.NodeRecord) (release func()) {
	id, key := rec.Cert.NodeID, rec.WireGuardKey()
	n.nat.mu.Lock()
	n.nat.ready[key]++
	first := n.nat.ready[key] == 1
	n.nat.mu.Unlock()
	n.peerCfgMu.Lock()
	configured := n.configuredKey(id, key)
	if first && !configured {
		err := n.tun.SetPeer(tunnel.Peer{PublicKey: tunnel.Key(key), Keepalive: -1, AllowedIPs: peerPrefixes(rec)})
		if err != nil {
			n.logger.Debug("preparing WireGuard peer", "name", rec.Cert.Name, "err", err)
		}
	}
	n.peerCfgMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			n.nat.mu.Lock()
			n.nat.ready[key]--
			last := n.nat.ready[key] == 0
			if last {
				delete(n.nat.ready, key)
			}
			n.nat.mu.Unlock()
			if !last {
				return
			}
			n.peerCfgMu.Lock()
			defer n.peerCfgMu.Unlock()
			if !n.configuredKey(id, key) {
				_ = n.tun.RemovePeer(tunnel.Key(key))
			}
		})
	}
}

// configuredKey says whether id is a configured peer with WireGuard key
// key.
func (n *Node) configuredKey(id addr.NodeID, key [32]byte) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.peers[id]
	return ok && p.rec.WireGuardKey() == key
}

// handleICEForward forwards a sealed offer to a member registered with
// this node and returns its sealed answer. The body is the caller's
// record (length-prefixed), the target's WireGuard key and the sealed
// offer. Only admitted members may ask, at most iceForwardRate a second.
func (n *Node) handleICEForward(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	now := time.Now()
	n.nat.mu.Lock()
	b := n.nat.limits[from.Key]
	if b == nil {
		if len(n.nat.limits) > iceMaxRegs {
			clear(n.nat.limits)
		}
		b = &tokenBucket{}
		n.nat.limits[from.Key] = b
	}
	ok := b.allow(now, iceForwardRate, iceForwardBurst)
	n.nat.mu.Unlock()
	if !ok {
		return nil, errors.New("forward refused: too many requests; slow down")
	}
	if len(body) < 2 {
		return nil, errBadSignal
	}
	rl := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+rl+32+24 {
		return nil, errBadSignal
	}
	if err := n.checkMember(from.Key, body[2:2+rl]); err != nil {
		return nil, fmt.Errorf("forward refused: %w", err)
	}
	target := [32]byte(body[2+rl : 2+rl+32])
	sealed := body[2+rl+32:]
	n.nat.mu.Lock()
	reg, ok := n.nat.regs[target]
	n.nat.mu.Unlock()
	if !ok || now.After(reg.expires) {
		n.logger.Debug("ICE forward refused: target not registered", "from", from.Addr)
		return nil, errors.New("forward refused: the target is not registered with this node")
	}
	n.logger.Debug("forwarding ICE offer", "from", from.Addr, "to", reg.addr)
	fwd := append(from.Key[:], sealed...)
	ctx, cancel := context.WithTimeout(ctx, iceForwardTimeout)
	defer cancel()
	return n.conn.Call(ctx, nat.Peer{Addr: reg.addr, Key: target}, msgICEDeliver, fwd)
}

// checkMember checks that key belongs to an admitted member: a node
// whose verified record this node holds, or the record raw names it.
func (n *Node) checkMember(key [32]byte, raw []byte) error {
	if n.knownMember(key) {
		return nil
	}
	rec, err := n.verifyRecord(raw, n.now())
	if err != nil {
		n.countReject(err)
		return err
	}
	if rec.WireGuardKey() != key {
		return errors.New("the record's WireGuard key is not the sender's key")
	}
	return nil
}

// handleICERegister records a member's binding: offers for it are
// forwarded to the address the registration came from.
func (n *Node) handleICERegister(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	rec, err := n.verifyRecord(body, n.now())
	if err != nil {
		n.countReject(err)
		return nil, fmt.Errorf("register refused: %w", err)
	}
	if rec.WireGuardKey() != from.Key {
		return nil, errors.New("register refused: the record's WireGuard key is not the sender's key")
	}
	now := time.Now()
	n.nat.mu.Lock()
	defer n.nat.mu.Unlock()
	if _, ok := n.nat.regs[from.Key]; !ok && len(n.nat.regs) >= iceMaxRegs {
		for k, r := range n.nat.regs {
			if now.After(r.expires) {
				delete(n.nat.regs, k)
			}
		}
		if len(n.nat.regs) >= iceMaxRegs {
			return nil, errors.New("register refused: this rendezvous node is full")
		}
	}
	n.nat.regs[from.Key] = registration{addr: from.Addr, id: rec.Cert.NodeID, expires: now.Add(iceRegisterTTL)}
	return nil, nil
}

// registerRendezvous registers this node with its rendezvous servers and
// bootstrap nodes, in parallel.
func (n *Node) registerRendezvous(ctx context.Context) {
	var to []nat.Peer
	n.mu.Lock()
	for _, p := range n.bootPeers {
		to = append(to, nat.Peer{Addr: p.Addr, Key: p.Key})
	}
	n.mu.Unlock()
	n.disc.mu.Lock()
	for _, p := range n.disc.rendezvous {
		to = append(to, nat.Peer{Addr: p.Addr, Key: p.Key})
	}
	n.disc.mu.Unlock()
	own := n.ownRecord()
	self := n.conn.PublicKey()
	seen := map[[32]byte]bool{self: true}
	for _, p := range to {
		if seen[p.Key] {
			continue
		}
		seen[p.Key] = true
		n.goBackground(func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if _, err := n.conn.Call(ctx, p, msgICERegister, own); err != nil {
				n.logger.Debug("rendezvous registration failed", "with", p.Addr, "err", err)
				return
			}
			n.nat.registered.Add(1)
		})
	}
}

// handlePathPing echoes a ping (at most 64 bytes).
func (n *Node) handlePathPing(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	if len(body) > 64 {
		body = body[:64]
	}
	return body, nil
}

// PingResult is one `weft ping` reply.
type PingResult struct {
	Name   string      `json:"name"`
	NodeID addr.NodeID `json:"node_id"`
	// Path is "direct" or "relay", Reason why.
	Path     string         `json:"path"`
	Reason   string         `json:"reason"`
	Endpoint netip.AddrPort `json:"endpoint"`
	// Relay is the TURN relay address a relayed path goes through.
	Relay netip.AddrPort `json:"relay,omitzero"`
	RTT   time.Duration  `json:"rtt_ns"`
	// Seq numbers the pings of one `weft ping` run.
	Seq int `json:"seq"`
}

// Ping connects to host if needed and sends one sealed control ping over
// the path WireGuard uses for it: to the WireGuard endpoint itself, which
// for a relayed peer is its relayed endpoint, so the ping goes through
// the relay like the tunnel's packets. It measures the round trip of the
// path, not of the tunnel's TCP/IP stack.
func (n *Node) Ping(ctx context.Context, host string) (PingResult, error) {
	if n.isClosed() {
		return PingResult{}, ErrClosed
	}
	p, err := n.Resolve(ctx, host)
	if err != nil {
		// A node whose UDP is blocked reaches nobody: say so rather than
		// "no such node".
		n.waitNetcheck(ctx, 3*time.Second)
		if rep := n.natReport(); rep != nil && !rep.UDP {
			return PingResult{}, fmt.Errorf("UDP blocked outbound (no STUN server answered this node; weft needs UDP): %w", err)
		}
		return PingResult{}, err
	}
	if p.NodeID == n.cert.NodeID {
		return PingResult{}, fmt.Errorf("%s is this node", host)
	}
	if err := n.connectPeer(ctx, p.rec); err != nil {
		return PingResult{}, err
	}
	n.mu.Lock()
	ps := n.peers[p.NodeID]
	n.mu.Unlock()
	if ps == nil {
		return PingResult{}, fmt.Errorf("%s is not a configured peer", host)
	}
	res := PingResult{Name: ps.rec.Cert.Name, NodeID: p.NodeID, Reason: ps.reason, Endpoint: ps.endpoint}
	res.Path = pathKind(ps.reason)
	n.nat.mu.Lock()
	if pp := n.nat.paths[p.NodeID]; pp != nil && pp.relay.Load() != nil && pp.relay.Load().AddrPort() == ps.endpoint {
		res.Relay = pp.path.Local
	}
	n.nat.mu.Unlock()
	var nonce [8]byte
	crand.Read(nonce[:])
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := n.conn.Call(ctx, nat.Peer{Addr: ps.endpoint, Key: ps.rec.WireGuardKey()}, msgPathPing, nonce[:])
	if err != nil {
		return res, fmt.Errorf("no reply from %s over %s (%s): %w", res.Name, res.Endpoint, res.Path, err)
	}
	if string(out) != string(nonce[:]) {
		return res, errors.New("ping reply does not echo the ping")
	}
	res.RTT = time.Since(start)
	return res, nil
}

// NetcheckReport is what `weft netcheck` prints.
type NetcheckReport struct {
	// UDP is false when no STUN server answered: UDP is blocked outbound.
	UDP bool `json:"udp"`
	// NAT names the NAT type ("port-restricted cone", "symmetric", ...),
	// empty when it cannot be told.
	NAT       string           `json:"nat"`
	Mapping   string           `json:"mapping"`
	Filtering string           `json:"filtering"`
	Notes     []string         `json:"notes,omitempty"`
	Public    []netip.AddrPort `json:"public"`
	STUN      []ServerCheck    `json:"stun"`
	Relays    []ServerCheck    `json:"relays"`
	// PortMapping is the gateway's mapping of the node's port (NAT-PMP),
	// "none: WHY" without one, empty with port mapping off.
	PortMapping string `json:"port_mapping,omitempty"`
	Summary     string `json:"summary"`
}

// ServerCheck is one STUN server's or relay's answer.
type ServerCheck struct {
	Addr netip.AddrPort `json:"addr"`
	// Name says whose relay it is ("relay of NAME") or which TURN server
	// ("turn:HOST:PORT?transport=udp"); empty for STUN servers.
	Name    string         `json:"name,omitempty"`
	Mapped  netip.AddrPort `json:"mapped,omitzero"`
	Latency time.Duration  `json:"latency_ns,omitempty"`
	Error   string         `json:"error,omitempty"`
}

// Netcheck measures the node's NAT against the bootstrap nodes and the
// configured STUN servers, and checks that the configured TURN relays
// answer.
func (n *Node) Netcheck(ctx context.Context) (NetcheckReport, error) {
	if n.isClosed() {
		return NetcheckReport{}, ErrClosed
	}
	rep, err := n.netcheck(ctx, n.netcheckServers(), n.probers())
	if err != nil {
		return NetcheckReport{}, err
	}
	out := NetcheckReport{UDP: rep.UDP, NAT: rep.Kind(), Mapping: rep.Mapping.String(), Filtering: rep.Filtering.String(),
		Public: rep.Public, STUN: []ServerCheck{}, Relays: []ServerCheck{}, Summary: rep.String()}
	for _, s := range []string{rep.MappingNote, rep.FilteringNote} {
		if s != "" {
			out.Notes = append(out.Notes, s)
		}
	}
	for _, s := range rep.Servers {
		c := ServerCheck{Addr: s.Server, Mapped: s.Mapped, Latency: s.Latency}
		if s.Err != nil {
			c.Error = s.Err.Error()
		}
		out.STUN = append(out.STUN, c)
	}
	out.Relays = n.checkRelays(ctx)
	if m, ok := n.portMapping(); ok {
		out.PortMapping = m.String()
	} else if n.nat != nil && n.nat.portmap != nil {
		out.PortMapping = "none"
		if err := n.nat.portmap.Err(); err != nil {
			out.PortMapping += ": " + err.Error()
		}
	}
	if !rep.UDP {
		out.Summary = "UDP blocked outbound: no STUN server answered; peers can only be reached through a relay over another transport"
	}
	return out, nil
}

// netcheckServers are the STUN servers a netcheck asks. Every weft node
// answers STUN: a few public DHT servers of the table besides the
// bootstrap nodes, so that two addresses tell the mapping even with one
// bootstrap node. TURN servers (and weft relays) answer Binding requests
// too: one on a bootstrap node's IP still tells an address-and-port-
// dependent (symmetric) mapping. The relays of the bootstrap nodes are
// known only once their records are (after the first hellos).
func (n *Node) netcheckServers() []netip.AddrPort {
	servers := n.stunServers()
	for _, p := range n.probeHelpers() {
		servers = mergeAddrPorts(servers, p.Addr)
	}
	for _, u := range n.cfg.TURNServers {
		if u.Addr.IsValid() && u.Transport == "udp" {
			servers = mergeAddrPorts(servers, u.Addr)
		}
	}
	for _, rn := range n.relayNodes(nil) {
		if !rn.self {
			servers = mergeAddrPorts(servers, rn.relay...)
		}
	}
	return servers
}

// netcheck measures the NAT with servers and probers and keeps the report
// (setNATReport). Unlike Netcheck it does not check the relays (which asks
// each for credentials).
func (n *Node) netcheck(ctx context.Context, servers []netip.AddrPort, probers []nat.Peer) (*nat.NATReport, error) {
	if len(servers) == 0 {
		return nil, errors.New("netcheck: no STUN server known: pass --bootstrap or --stun to `weft up`")
	}
	start := time.Now()
	cfg := nat.NetcheckConfig{STUN: servers, Probers: probers}
	if n.nat != nil {
		// The mapping is known long before the filtering probes are
		// done: it alone names a symmetric NAT, or no NAT.
		cfg.Mapped = func(r *nat.NATReport) {
			n.logger.Debug("netcheck mapping", "took", time.Since(start), "mapping", r.Mapping, "public", r.Public)
			n.setNATReport(r, true)
		}
	}
	rep, err := n.conn.Netcheck(ctx, cfg)
	if err != nil {
		n.logger.Debug("netcheck failed", "servers", servers, "took", time.Since(start), "err", err)
		return nil, err
	}
	n.logger.Debug("netcheck", "servers", servers, "probers", len(probers), "took", time.Since(start), "nat", rep.Kind(), "report", rep.String())
	if n.nat != nil {
		n.setNATReport(rep, false)
	}
	return rep, nil
}

// lastFailure is why the last connect to id failed, if it did.
func (n *Node) lastFailure(id addr.NodeID) (string, time.Time) {
	if n.nat == nil {
		return "", time.Time{}
	}
	n.nat.mu.Lock()
	defer n.nat.mu.Unlock()
	f := n.nat.lastFail[id]
	return f.why, f.at
}

// Filtering probes. A DHT server (a node with a public address) answers
// other nodes' netcheck probes (nat.Conn.ServeProbes): change-port probes
// from a second socket on its address, opened at start (openProbeAlt),
// and change-IP probes through a few other DHT servers of its table, which
// relay them only for members (AllowRelay). A client answers none: behind
// a NAT its probes would not come from where they claim.

// probeHelpers bounds the helpers a prober asks for a change-IP probe.
const probeHelpers = 3

// openProbeAlt opens the second socket for change-port probes: on the
// shared socket's IP, port+1 if free, else any port. Nil if none opens.
func openProbeAlt(local netip.AddrPort) net.PacketConn {
	network := "udp4"
	if local.Addr().Is6() && !local.Addr().Is4In6() {
		network = "udp6"
	}
	var ports []uint16
	if local.Port() < 65535 {
		ports = append(ports, local.Port()+1)
	}
	for _, port := range append(ports, 0) {
		pc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Addr().Unmap(), port)))
		if err == nil {
			return pc
		}
	}
	return nil
}

// updateProbes serves probes while the node is a DHT server, and stops
// when it is a client. Called at start and from natLoop.
func (n *Node) updateProbes() {
	role, _, _ := n.role()
	on := role == DHTRoleServer
	n.nat.mu.Lock()
	changed := on != n.nat.probing
	n.nat.probing = on
	alt := n.nat.probeAlt
	n.nat.mu.Unlock()
	if !changed {
		return
	}
	if !on {
		n.conn.ServeProbes(nil)
		return
	}
	cfg := &nat.ProbeConfig{
		Helpers:    n.probeHelpers,
		AllowRelay: func(p nat.Peer) bool { return n.knownMember(p.Key) },
	}
	if alt != nil {
		cfg.Alt = alt
	}
	n.conn.ServeProbes(cfg)
}

// probeHelpers are a few other DHT servers of the routing table (public
// nodes, verified members), fastest first: they send change-IP probes.
func (n *Node) probeHelpers() []nat.Peer {
	if n.dht == nil {
		return nil
	}
	es := n.dht.Table().EntriesByRTT()
	self := n.conn.PublicKey()
	var out []nat.Peer
	for _, e := range es {
		p := e.Contact.Peer
		if p.Key == self || n.isBanned(p.Key) || p.Addr.Addr() == n.conn.LocalAddr().Addr() {
			continue
		}
		out = append(out, nat.Peer{Addr: p.Addr, Key: p.Key})
		if len(out) == probeHelpers {
			break
		}
	}
	return out
}

// probers are the nodes a netcheck asks for filtering probes: bootstrap
// nodes, then DHT servers of the table, a few.
func (n *Node) probers() []nat.Peer {
	var out []nat.Peer
	seen := map[[32]byte]bool{n.conn.PublicKey(): true}
	add := func(p nat.Peer) {
		if !seen[p.Key] && len(out) < 2*probeHelpers {
			seen[p.Key] = true
			out = append(out, p)
		}
	}
	n.mu.Lock()
	for _, p := range n.bootPeers {
		add(nat.Peer{Addr: p.Addr, Key: p.Key})
	}
	n.mu.Unlock()
	for _, p := range n.probeHelpers() {
		add(p)
	}
	return out
}
