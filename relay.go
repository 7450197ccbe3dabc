package weft

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/nat/ice"
	"github.com/weft-net/weft/trust"
)

// The node's TURN relay (`weft up --relay`, Config.Relay): a nat.Relay on
// a port of its own, whose credentials the node hands out over its control
// socket (nat.Conn.ServeRelay) to admitted members only. Its address goes
// into the node's record (NodeRecord.Relays), so members that connect to
// each other find it without configuration (gatherRelays, ice.go).

// Bounds of the relay's membership check.
const (
	// relayAuthFetchTimeout bounds the hello that fetches the record of a
	// requester the node does not know yet.
	relayAuthFetchTimeout = 3 * time.Second
	// relayAuthMaxFetches bounds those hellos in flight; beyond it,
	// unknown requesters are refused (they ask again).
	relayAuthMaxFetches = 8
	// relayAuthBackoff is how long an address whose hello failed is not
	// asked again.
	relayAuthBackoff = 30 * time.Second
)

// relayState is the node's relay, if it runs one.
type relayState struct {
	relay   *nat.Relay
	fetches chan struct{} // a slot per hello in flight (relayAuthMaxFetches)
}

// startRelay runs the TURN relay of Config.Relay and serves its
// credentials. Called from startNAT, before the first record is signed,
// so that record already names the relay.
func (n *Node) startRelay() error {
	if !n.cfg.Relay {
		return nil
	}
	listen := n.cfg.RelayListen
	if !listen.IsValid() {
		ip := n.conn.LocalAddr().Addr()
		if !ip.IsValid() || ip.IsUnspecified() {
			ip = netip.IPv4Unspecified()
		}
		listen = netip.AddrPortFrom(ip, nat.DefaultRelayPort)
	}
	public := relayPublicIP(listen, n.endpoints)
	if !public.IsValid() {
		return fmt.Errorf("start relay: no address to advertise it at: listen on a specific IP with --relay-listen IP:PORT, or advertise a public endpoint")
	}
	rs := &relayState{fetches: make(chan struct{}, relayAuthMaxFetches)}
	r, err := nat.NewRelay(nat.RelayConfig{
		Listen:    listen,
		PublicIP:  public,
		Authorize: n.relayAuthorize,
		Logger:    n.cfg.Logger,
		Now:       n.now,
	})
	if err != nil {
		return fmt.Errorf("start relay on %s: %w", listen, err)
	}
	rs.relay = r
	n.relay = rs
	n.conn.ServeRelay(r)
	n.logger.Info("TURN relay up", "listen", r.LocalAddr(), "advertised", r.Addr())
	return nil
}

// closeRelay stops the relay. Called from closeNAT.
func (n *Node) closeRelay() {
	if n.relay == nil {
		return
	}
	n.conn.ServeRelay(nil)
	n.relay.relay.Close()
}

// relayPublicIP is the address the relay is advertised at: listen's own
// address if it is a specific one, else the first public endpoint, else
// the first endpoint that is not loopback, else the first one.
func relayPublicIP(listen netip.AddrPort, endpoints []netip.AddrPort) netip.Addr {
	if a := listen.Addr().Unmap(); a.IsValid() && !a.IsUnspecified() {
		return a
	}
	want4 := listen.Addr().Unmap().Is4()
	fits := func(a netip.Addr) bool { return !want4 || a.Unmap().Is4() }
	for _, pass := range []func(netip.Addr) bool{
		func(a netip.Addr) bool { return a.IsGlobalUnicast() && !a.IsPrivate() },
		func(a netip.Addr) bool { return !a.IsLoopback() && !a.IsUnspecified() },
		func(a netip.Addr) bool { return !a.IsUnspecified() },
	} {
		for _, e := range endpoints {
			if a := e.Addr().Unmap(); fits(a) && pass(a) {
				return a
			}
		}
	}
	return netip.Addr{}
}

// relayAddrs lists the relay's address for the node's record; nil if the
// node runs no relay. (The relay is fixed from Start to Close, so the
// record changes with it only at start.)
func (n *Node) relayAddrs() []netip.AddrPort {
	if n.relay == nil {
		return nil
	}
	return []netip.AddrPort{n.relay.relay.Addr()}
}

// relayAuthorize is the relay's nat.RelayConfig.Authorize: the requester's
// key (authenticated by the sealed request) must be that of a member whose
// record verified, is unexpired and unrevoked. A requester the node has no
// record of is asked for it with a hello, bounded in time and in number.
func (n *Node) relayAuthorize(p nat.Peer) bool {
	if n.isBanned(p.Key) || p.Key == n.conn.PublicKey() {
		return false
	}
	if n.knownMember(p.Key) {
		return true
	}
	rs := n.relay
	select {
	case rs.fetches <- struct{}{}:
		defer func() { <-rs.fetches }()
	default:
		n.logger.Debug("relay credentials: too many unknown requesters at once", "from", p.Addr)
		return false
	}
	ctx, cancel := context.WithTimeout(n.ctx, relayAuthFetchTimeout)
	defer cancel()
	body, from, err := n.conn.CallHello(ctx, p.Addr, nil)
	if err != nil {
		n.logger.Debug("relay credentials: requester's record not fetched", "from", p.Addr, "err", err)
		return false
	}
	if from.Key != p.Key {
		return false
	}
	rec, err := n.verifyRecord(body, n.now()) // learns it
	if err != nil {
		n.countReject(err)
		return false
	}
	return rec.WireGuardKey() == p.Key && n.stillValid(rec)
}

// RelayStatus is the node's TURN relay in Status.
type RelayStatus struct {
	// Listen is the relay's socket; Addr is where members reach it (the
	// address in the node's record).
	Listen netip.AddrPort `json:"listen"`
	Addr   netip.AddrPort `json:"addr"`
	// Allocations are the allocations now; AllocationsTotal those made.
	Allocations      int    `json:"allocations"`
	AllocationsTotal uint64 `json:"allocations_total"`
	// CredentialsIssued and CredentialsRefused count credential requests
	// answered and refused (the requester was no admitted member).
	CredentialsIssued  uint64 `json:"credentials_issued"`
	CredentialsRefused uint64 `json:"credentials_refused"`
	// AuthFailures counts TURN requests with bad or expired credentials,
	// QuotaRefused allocations over a quota.
	AuthFailures uint64 `json:"auth_failures"`
	QuotaRefused uint64 `json:"quota_refused"`
	// BytesToPeers and BytesFromPeers are the bytes relayed each way.
	BytesToPeers   uint64 `json:"bytes_to_peers"`
	BytesFromPeers uint64 `json:"bytes_from_peers"`
	// BandwidthDropped counts datagrams dropped by a bandwidth cap.
	BandwidthDropped uint64 `json:"bandwidth_dropped,omitempty"`
}

// relayStatus returns the relay's status, nil if the node runs none.
func (n *Node) relayStatus() *RelayStatus {
	if n.relay == nil {
		return nil
	}
	r := n.relay.relay
	s := r.Stats()
	return &RelayStatus{
		Listen: r.LocalAddr(), Addr: r.Addr(),
		Allocations: s.Allocations, AllocationsTotal: s.AllocationsTotal,
		CredentialsIssued: s.CredentialsIssued, CredentialsRefused: s.CredentialsRefused,
		AuthFailures: s.AuthFailures, QuotaRefused: s.QuotaRefused,
		BytesToPeers: s.BytesToPeers, BytesFromPeers: s.BytesFromPeers, BandwidthDropped: s.BandwidthDropped,
	}
}

// relayMetrics are the relay's counters as metrics (collectStruct names
// them weft_relay_*).
type relayMetrics struct {
	Allocations        int
	AllocationsMade    uint64
	CredentialsIssued  uint64
	CredentialsRefused uint64
	AuthFailures       uint64
	QuotaRefused       uint64
	BytesToPeers       uint64
	BytesFromPeers     uint64
	PacketsToPeers     uint64
	PacketsFromPeers   uint64
	BandwidthDropped   uint64
}

func (n *Node) relayMetrics() (relayMetrics, bool) {
	if n.relay == nil {
		return relayMetrics{}, false
	}
	s := n.relay.relay.Stats()
	return relayMetrics{
		Allocations: s.Allocations, AllocationsMade: s.AllocationsTotal,
		CredentialsIssued: s.CredentialsIssued, CredentialsRefused: s.CredentialsRefused,
		AuthFailures: s.AuthFailures, QuotaRefused: s.QuotaRefused,
		BytesToPeers: s.BytesToPeers, BytesFromPeers: s.BytesFromPeers,
		PacketsToPeers: s.PacketsToPeers, PacketsFromPeers: s.PacketsFromPeers,
		BandwidthDropped: s.BandwidthDropped,
	}, true
}

// Relays for ICE sessions. Before a connect, the node gathers TURN servers
// (gatherRelays): the external ones of Config.TURNServers, and weft relays
// named in records it holds: the target's, its own relay's, its bootstrap
// and rendezvous nodes', then any other verified record's. A weft relay's
// credentials come from its node (nat.Conn.RelayCredentials) and are
// cached until relayCredsMargin before they expire. A session holds the
// credentials it was started with (pion refreshes its allocation with
// them), so a session whose path runs through its own TURN allocation is
// replaced relayRestartBefore its credentials expire (tendPaths).
const (
	// relayCredsMargin: cached credentials with less time left are
	// fetched again; a session started with them lives at least this long.
	relayCredsMargin = 15 * time.Minute
	// relayRestartBefore is how long before its credentials expire a
	// relayed session is replaced by a new one.
	relayRestartBefore = 5 * time.Minute
	// relayCredsTimeout bounds one credentials request.
	relayCredsTimeout = 2 * time.Second
	// relayCredsRetry is how long a relay that refused or did not answer
	// is not asked again.
	relayCredsRetry = 30 * time.Second
	// relayMaxPerSession bounds the weft relays one session allocates on
	// (each relay candidate is an allocation), relayMaxAsked the relays
	// asked for credentials per gathering.
	relayMaxPerSession = 3
	relayMaxAsked      = 6
	// relayResolveTimeout bounds resolving an external TURN server's name.
	relayResolveTimeout = 2 * time.Second
)

// relayCredsEntry is a weft relay's cached credentials, or why there are
// none.
type relayCredsEntry struct {
	creds nat.RelayCreds
	err   error
	at    time.Time // when err happened
}

// relayNode is a node whose record names relays.
type relayNode struct {
	name  string
	key   [32]byte         // its WireGuard key: the credentials request goes to it
	ctrl  []netip.AddrPort // its endpoints (control socket)
	relay []netip.AddrPort // its relays (hints; the credentials name the address)
	self  bool
}

// relaySet is what gatherRelays found: TURN servers for a session, when
// the weft relays' credentials among them expire, and what went wrong.
type relaySet struct {
	turn    []ice.TURNServer
	expires time.Time // earliest expiry of weft relay credentials; zero: none
	notes   []string  // relays that could not be used, and why
	known   int       // weft relays known (asked or not)
}

// describe says what the set offers, for a "no relay reachable" error.
func (s relaySet) describe() string {
	switch {
	case len(s.turn) == 0 && s.known == 0 && len(s.notes) == 0:
		return "no relay known: no record this node holds names a weft relay and no --turn server is configured; run `weft up --relay` on a node with a public address, or pass --turn"
	case len(s.turn) == 0:
		return "no relay usable: " + strings.Join(s.notes, "; ")
	}
	var addrs []string
	for _, t := range s.turn {
		addrs = append(addrs, t.Addr.String())
	}
	why := fmt.Sprintf("relays %s gave no working path", strings.Join(addrs, ", "))
	if len(s.notes) > 0 {
		why += "; " + strings.Join(s.notes, "; ")
	}
	return why
}

// gatherRelays collects the TURN servers for a session with target (nil:
// none in particular).
func (n *Node) gatherRelays(ctx context.Context, target *trust.NodeRecord) relaySet {
	ctx, cancel := context.WithTimeout(ctx, 2*relayCredsTimeout)
	defer cancel()
	var set relaySet
	for _, u := range n.cfg.TURNServers {
		ap := u.Addr
		if !ap.IsValid() {
			rctx, cancel := context.WithTimeout(ctx, relayResolveTimeout)
			ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", u.Host)
			cancel()
			if err != nil || len(ips) == 0 {
				set.notes = append(set.notes, fmt.Sprintf("TURN server %s: cannot resolve %s: %v", u.URL(), u.Host, err))
				continue
			}
			ap = netip.AddrPortFrom(ips[0].Unmap(), u.Port)
		}
		set.turn = append(set.turn, ice.TURNServer{Addr: ap, Username: u.Username, Password: u.Password, Transport: u.Transport})
	}
	nodes := n.relayNodes(target)
	set.known = len(nodes)
	type result struct {
		creds nat.RelayCreds
		err   error
		node  relayNode
	}
	ch := make(chan result, len(nodes))
	for _, rn := range nodes {
		go func() {
			c, err := n.relayCreds(ctx, rn)
			ch <- result{c, err, rn}
		}()
	}
	weft := 0
	for range nodes {
		r := <-ch
		if r.err != nil {
			set.notes = append(set.notes, fmt.Sprintf("relay of %s: %v", r.node.name, r.err))
			continue
		}
		if weft >= relayMaxPerSession {
			continue
		}
		weft++
		t := r.creds.TURN()
		set.turn = append(set.turn, ice.TURNServer{Addr: r.creds.Addr, Username: t.Username, Password: t.Password, Transport: "udp"})
		if set.expires.IsZero() || r.creds.Expires.Before(set.expires) {
			set.expires = r.creds.Expires
		}
	}
	slices.Sort(set.notes)
	return set
}

// relayNodes lists the nodes whose relays to ask, best first: the
// target's, this node's own, its bootstrap and rendezvous nodes', then
// other verified records'; at most relayMaxAsked, valid and unrevoked.
func (n *Node) relayNodes(target *trust.NodeRecord) []relayNode {
	var out []relayNode
	seen := map[[32]byte]bool{}
	add := func(rec *trust.NodeRecord) {
		if rec == nil || len(rec.Relays) == 0 || len(out) >= relayMaxAsked || !n.stillValid(rec) {
			return
		}
		key := rec.WireGuardKey()
		if seen[key] || n.isBanned(key) {
			return
		}
		seen[key] = true
		out = append(out, relayNode{name: rec.Cert.Name, key: key, ctrl: rec.Endpoints, relay: rec.Relays})
	}
	if n.relay != nil {
		self := n.conn.PublicKey()
		seen[self] = true
		out = append(out, relayNode{name: n.cert.Name + " (this node)", key: self, relay: n.relayAddrs(), self: true})
	}
	if target != nil {
		add(target)
	}
	n.mu.Lock()
	var ids []addr.NodeID
	for _, id := range n.bootIDs {
		ids = append(ids, id)
	}
	n.mu.Unlock()
	n.disc.mu.Lock()
	for _, p := range n.disc.rendezvous {
		if id, ok := n.disc.byKey[p.Key]; ok {
			ids = append(ids, id)
		}
	}
	var others []*trust.NodeRecord
	for _, r := range n.disc.known {
		if len(r.Relays) > 0 {
			others = append(others, r)
		}
	}
	n.disc.mu.Unlock()
	for _, id := range ids {
		add(n.knownRecord(id))
	}
	// The others in a stable order, so a node does not spread its
	// allocations over every relay it ever heard of.
	slices.SortFunc(others, func(a, b *trust.NodeRecord) int { return strings.Compare(a.Cert.Name, b.Cert.Name) })
	for _, r := range others {
		add(r)
	}
	return out
}

// relayCreds returns cached credentials for rn's relay that are good for
// relayCredsMargin yet, or asks rn for new ones.
func (n *Node) relayCreds(ctx context.Context, rn relayNode) (nat.RelayCreds, error) {
	now := time.Now()
	n.nat.mu.Lock()
	e := n.nat.creds[rn.key]
	n.nat.mu.Unlock()
	if e != nil {
		if e.err == nil && e.creds.Expires.Sub(now) > relayCredsMargin {
			return e.creds, nil
		}
		if e.err != nil && now.Sub(e.at) < relayCredsRetry {
			return nat.RelayCreds{}, e.err
		}
	}
	c, err := n.fetchRelayCreds(ctx, rn)
	if err != nil && ctx.Err() != nil {
		return c, err // our deadline, not the relay's fault: do not cache
	}
	n.nat.mu.Lock()
	if len(n.nat.creds) >= 256 {
		clear(n.nat.creds)
	}
	n.nat.creds[rn.key] = &relayCredsEntry{creds: c, err: err, at: now}
	n.nat.mu.Unlock()
	return c, err
}

// fetchRelayCreds asks rn for credentials: this node's own relay
// directly, another node over its endpoints in turn.
func (n *Node) fetchRelayCreds(ctx context.Context, rn relayNode) (nat.RelayCreds, error) {
	if rn.self {
		return n.relay.relay.Credentials(rn.key)
	}
	var errs []error
	for _, ep := range rn.ctrl {
		cctx, cancel := context.WithTimeout(ctx, relayCredsTimeout)
		c, err := n.conn.RelayCredentials(cctx, nat.Peer{Addr: ep, Key: rn.key})
		cancel()
		if err == nil {
			return c, nil
		}
		if errors.Is(err, nat.ErrRelayUnauthorized) {
			return c, errors.New("credentials refused: the relay does not take this node for an admitted member")
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nat.RelayCreds{}, errors.New("its node advertises no endpoint to ask for credentials")
	}
	return nat.RelayCreds{}, fmt.Errorf("no answer to the credentials request: %w", errors.Join(errs...))
}

// refreshRelayCreds fetches again, in the background, cached credentials
// that are within relayCredsMargin of expiring, so that the next session
// does not wait for them. Called from natLoop.
func (n *Node) refreshRelayCreds() {
	now := time.Now()
	var stale [][32]byte
	n.nat.mu.Lock()
	for k, e := range n.nat.creds {
		if e.err == nil && e.creds.Expires.Sub(now) <= relayCredsMargin {
			stale = append(stale, k)
		}
	}
	n.nat.mu.Unlock()
	if len(stale) == 0 {
		return
	}
	nodes := n.relayNodes(nil)
	for _, rn := range nodes {
		if slices.Contains(stale, rn.key) {
			n.goBackground(func(ctx context.Context) {
				ctx, cancel := context.WithTimeout(ctx, 2*relayCredsTimeout)
				defer cancel()
				if _, err := n.relayCreds(ctx, rn); err != nil {
					n.logger.Debug("relay credentials refresh failed", "relay", rn.name, "err", err)
				}
			})
		}
	}
}

// checkRelays is netcheck's look at the relays a connect would use: the
// external TURN servers and the weft relays of the records the node holds
// (their credentials asked for, as a connect would). A TURN server answers
// plain Binding requests: that is its latency.
func (n *Node) checkRelays(ctx context.Context) []ServerCheck {
	type item struct {
		name string
		ap   netip.AddrPort
		err  error
	}
	var items []item
	for _, u := range n.cfg.TURNServers {
		it := item{name: u.URL(), ap: u.Addr}
		if !u.Addr.IsValid() {
			rctx, cancel := context.WithTimeout(ctx, relayResolveTimeout)
			ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", u.Host)
			cancel()
			if err == nil && len(ips) > 0 {
				it.ap = netip.AddrPortFrom(ips[0].Unmap(), u.Port)
			} else {
				it.err = fmt.Errorf("cannot resolve %s: %v", u.Host, err)
			}
		}
		items = append(items, it)
	}
	nodes := n.relayNodes(nil)
	weft := make([]item, len(nodes))
	var wg sync.WaitGroup
	for i, rn := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			it := item{name: "relay of " + rn.name}
			if len(rn.relay) > 0 {
				it.ap = rn.relay[0]
			}
			c, err := n.relayCreds(ctx, rn)
			if err != nil {
				it.err = err
			} else {
				it.ap = c.Addr
			}
			weft[i] = it
		}()
	}
	wg.Wait()
	items = append(items, weft...)
	out := make([]ServerCheck, len(items))
	for i, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ServerCheck{Addr: it.ap, Name: it.name}
			if it.err != nil {
				c.Error = "no relay reachable: " + it.err.Error()
				out[i] = c
				return
			}
			start := time.Now()
			m, err := n.conn.STUNBinding(ctx, it.ap)
			if err != nil {
				c.Error = "no relay reachable at this address: " + err.Error()
			} else {
				c.Mapped, c.Latency = m, time.Since(start)
			}
			out[i] = c
		}()
	}
	wg.Wait()
	return out
}
