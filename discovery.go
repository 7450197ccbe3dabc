package weft

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/trust"
)

// DHTRole is a node's part in the DHT.
type DHTRole string

// DHT roles (Config.DHTRole, `weft up --dht-role`).
const (
	// DHTRoleAuto decides from observation: a server if another node can
	// reach the node's advertised endpoint unsolicited, else a client.
	// With no other node to ask, the node stays a server.
	DHTRoleAuto DHTRole = "auto"
	// DHTRoleServer answers FIND_NODE, FIND_VALUE and STORE and sits in
	// other nodes' routing tables.
	DHTRoleServer DHTRole = "server"
	// DHTRoleClient answers no DHT request, is kept out of routing tables
	// and keeps bindings to a few servers, its rendezvous nodes, which it
	// names in its record.
	DHTRoleClient DHTRole = "client"
)

// Timing and bounds of the node's DHT upkeep.
const (
	// dhtTimeout bounds one DHT request (nat retransmits within it, at
	// 0, 200 and 600 ms) to a node whose round trip is not known yet;
	// dht waits 3×RTT (at least 300 ms) for one whose RTT it measured, so
	// a dead contact costs lookups little before it is evicted.
	dhtTimeout = time.Second
	// smallTable: a routing table with fewer live contacts keeps being
	// bootstrapped from the bootstrap nodes (with backoff).
	smallTable = 8
	// bootstrapRetryMax caps the backoff between bootstrap attempts.
	bootstrapRetryMax = 30 * time.Second
	// refreshCheck is how often the table is asked for stale buckets, and
	// livenessCheck how often the heads of full buckets that newcomers
	// wait for are pinged (dht.DHT.Maintain; cheap when there are none).
	refreshCheck  = time.Minute
	livenessCheck = 5 * time.Second
	// rendezvousCount is how many servers a client keeps bindings to, and
	// rendezvousKeepalive how often it refreshes them (NAT bindings
	// commonly last 30 s or more).
	rendezvousCount     = 3
	rendezvousKeepalive = 25 * time.Second
	// reachRecheck is how often an auto-role node checks its
	// reachability again; reachRetry how soon after an inconclusive check.
	reachRecheck = 10 * time.Minute
	reachRetry   = 30 * time.Second
	// fetchBackoff is how long an address whose hello failed is not asked
	// again, and maxFetches how many hellos for unknown contacts run at
	// once: a hostile contact costs one bounded background hello, never a
	// lookup's time.
	fetchBackoff = 30 * time.Second
	maxFetches   = 16
	// maxKnown bounds the verified records kept for Admit and Identify.
	maxKnown = 1 << 16
)

// discovery is the node's DHT bookkeeping beside the dht package's own:
// what it knows about other nodes' keys, its role, and its rendezvous
// servers.
type discovery struct {
	mu           sync.Mutex                        // guards the fields below
	known        map[addr.NodeID]*trust.NodeRecord // verified records, highest seq, for Admit and Identify
	byKey        map[[32]byte]addr.NodeID          // WireGuard key → node of known
	fetching     map[netip.AddrPort]bool           // hellos in flight for unknown contacts
	failed       map[netip.AddrPort]time.Time      // when a hello last failed
	banned       map[[32]byte]bool                 // WireGuard keys of revoked nodes
	role         DHTRole                           // DHTRoleServer or DHTRoleClient
	forced       bool                              // role set by configuration
	roleWhy      string                            // why the role is what it is
	rendezvous   []dht.Peer                        // a client's servers
	reach        map[[16]byte]*reachWait           // reachability checks in flight
	served       map[addr.NodeID]servedCheck       // reachability checks served, by requester
	probed       map[[32]byte]probeRun             // probes run, by asking server
	republish    bool                              // the record changed: publish it now
	retryPublish bool                              // the last publication failed
}

// init readies d for a node configured with role.
func (d *discovery) init(role DHTRole) {
	*d = discovery{
		known:    make(map[addr.NodeID]*trust.NodeRecord),
		byKey:    make(map[[32]byte]addr.NodeID),
		fetching: make(map[netip.AddrPort]bool),
		failed:   make(map[netip.AddrPort]time.Time),
		banned:   make(map[[32]byte]bool),
		reach:    make(map[[16]byte]*reachWait),
		served:   make(map[addr.NodeID]servedCheck),
		probed:   make(map[[32]byte]probeRun),
		role:     DHTRoleServer,
		roleWhy:  "not checked yet",
	}
	switch role {
	case DHTRoleServer:
		d.forced, d.roleWhy = true, "set by configuration (--dht-role server)"
	case DHTRoleClient:
		d.role, d.forced, d.roleWhy = DHTRoleClient, true, "set by configuration (--dht-role client)"
	}
}

// errDHTClient is what a node in the client role answers DHT requests with.
var errDHTClient = errors.New("this node is a DHT client and answers no DHT requests")

// errRevokedPeer refuses DHT traffic with a revoked node.
var errRevokedPeer = errors.New("that node has been revoked by the network's anchors")

// startDHT creates the node's DHT over its socket, and the gossip of trust
// statements over its table. Requests are answered once the socket's
// handlers are registered, which this does.
func (n *Node) startDHT() error {
	n.serving.Store(n.disc.role == DHTRoleServer)
	d, err := dht.New(dht.Options{
		Self:      dht.Contact{ID: n.nodeID, Peer: dht.Peer{Addr: n.conn.LocalAddr(), Key: n.id.WGPublic()}},
		Transport: dhtTransport{n},
		Store:     n.store,
		Validator: validator{n},
		Admit:     n.admit,
		Identify:  n.identify,
		Now:       n.now,
		Logger:    n.cfg.Logger,
		K:         n.cfg.DHTReplication,
		Timeout:   dhtTimeout,
		// A node configured as a client never serves. An auto-role node
		// may switch either way at run time, which dhtTransport does by
		// refusing requests while serving is false.
		Client: n.cfg.DHTRole == DHTRoleClient,
	})
	if err != nil {
		return err
	}
	n.dht = d
	return n.startGossip()
}

// dhtTransport carries the DHT over the node's socket. It refuses to talk
// to revoked nodes, makes a client-role node refuse every DHT request,
// and records each request of a traced lookup (`weft dht lookup`).
type dhtTransport struct{ n *Node }

var _ dht.Transport = dhtTransport{}

func (t dhtTransport) Call(ctx context.Context, to dht.Peer, mt dht.MsgType, body []byte) ([]byte, error) {
	if t.n.isBanned(to.Key) {
		return nil, errRevokedPeer
	}
	start := time.Now()
	b, err := t.n.conn.Call(ctx, nat.Peer{Addr: to.Addr, Key: to.Key}, nat.MsgType(mt), body)
	if tr, ok := ctx.Value(traceKey{}).(*lookupTrace); ok {
		tr.add(t.n, to, mt, start, err)
	}
	return b, err
}

func (t dhtTransport) Handle(mt dht.MsgType, h dht.Handler) {
	n := t.n
	n.conn.Handle(nat.MsgType(mt), func(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
		if !n.serving.Load() {
			return nil, errDHTClient
		}
		if n.isBanned(from.Key) {
			return nil, errRevokedPeer
		}
		return h(ctx, dht.Peer{Addr: from.Addr, Key: from.Key}, body)
	})
}

// learn remembers a verified record's node and key for Admit and
// Identify; the highest sequence number wins.
func (n *Node) learn(rec *trust.NodeRecord) {
	id := rec.Cert.NodeID
	if id == n.nodeID {
		return
	}
	key := rec.WireGuardKey()
	d := &n.disc
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.banned[key] {
		return
	}
	old := d.known[id]
	if old != nil && old.Seq >= rec.Seq {
		return
	}
	if old == nil && len(d.known) >= maxKnown {
		now := n.now()
		for oid, r := range d.known {
			if !r.Expires.After(now) {
				d.forgetLocked(oid)
			}
		}
		if len(d.known) >= maxKnown {
			return
		}
	}
	if old != nil && old.WireGuardKey() != key && d.byKey[old.WireGuardKey()] == id {
		delete(d.byKey, old.WireGuardKey()) // the node rotated its key
	}
	if old != nil && isServer(old) && !isServer(rec) && n.dht != nil {
		// It became a DHT client: out of the table. (Evict takes only the
		// table's lock; the table never calls back with it held.)
		n.dht.Table().Evict(dht.NodeKey(id))
	}
	d.known[id] = rec
	// A key names one node. Records are signed by their node, so a member
	// could claim another's WireGuard key; the first claim stands while
	// its record lives (the claimant cannot open what is sealed to the
	// key anyway).
	if other, ok := d.byKey[key]; ok && other != id {
		if r := d.known[other]; r != nil && r.WireGuardKey() == key && r.Expires.After(n.now()) {
			return
		}
	}
	d.byKey[key] = id
}

func (d *discovery) forgetLocked(id addr.NodeID) {
	if r := d.known[id]; r != nil {
		if d.byKey[r.WireGuardKey()] == id {
			delete(d.byKey, r.WireGuardKey())
		}
		delete(d.known, id)
	}
}

// knownRecord returns the verified record of id if it is still valid.
func (n *Node) knownRecord(id addr.NodeID) *trust.NodeRecord {
	n.disc.mu.Lock()
	rec := n.disc.known[id]
	n.disc.mu.Unlock()
	if rec == nil || !n.stillValid(rec) {
		return nil
	}
	return rec
}

// knownMember reports whether key is the WireGuard key of a member
// whose verified record the node holds and which is still valid.
func (n *Node) knownMember(key [32]byte) bool {
	n.disc.mu.Lock()
	id, ok := n.disc.byKey[key]
	n.disc.mu.Unlock()
	if !ok {
		return false
	}
	rec := n.knownRecord(id) // checks expiry and revocation
	return rec != nil && rec.WireGuardKey() == key
}

// stillValid re-checks what may have changed since a record verified: its
// expiry and a revocation.
func (n *Node) stillValid(rec *trust.NodeRecord) bool {
	if !rec.Expires.After(n.now()) {
		return false
	}
	_, revoked := n.view.Revoked(rec.Cert.NodeID)
	return !revoked
}

// isServer reports whether a record's node is a DHT server: clients name
// their rendezvous servers.
func isServer(rec *trust.NodeRecord) bool { return len(rec.Rendezvous) == 0 }

func (n *Node) isBanned(key [32]byte) bool {
	n.disc.mu.Lock()
	defer n.disc.mu.Unlock()
	return n.disc.banned[key]
}

// admit is the routing table's gate (dht.Options.Admit): a contact enters
// only if its node's record verifies against the network's anchors (so its
// certificate does, and it is not revoked), names the contact's key, and
// is a server's. FIND_NODE contacts carry only an ID and a Peer, so the
// record comes from what this node has verified before or holds in its
// store; failing both, a bounded background hello fetches it and offers
// the contact again, and admit says no for now. A hostile contact thus
// never holds up a lookup.
func (n *Node) admit(c dht.Contact) bool {
	if c.ID == n.nodeID || n.isBanned(c.Peer.Key) {
		return false
	}
	if _, revoked := n.view.Revoked(c.ID); revoked {
		return false
	}
	rec := n.knownRecord(c.ID)
	if rec == nil || rec.WireGuardKey() != c.Peer.Key {
		if r, ok := n.store.Get(dht.NodeKey(c.ID)); ok {
			if sr, err := n.verifyRecord(r.Value, n.now()); err == nil && sr.Cert.NodeID == c.ID {
				rec = sr
			}
		}
	}
	if rec != nil && rec.WireGuardKey() == c.Peer.Key {
		// dht hands a newly admitted server the records it should hold.
		return isServer(rec)
	}
	n.fetchContact(c.Peer, c.ID)
	return false
}

// identify maps the authenticated sender of a DHT request to its node
// (dht.Options.Identify) from verified records, so that servers asking
// this node enter its table; clients and unknown keys do not (an unknown
// key is looked up in the background, as in admit).
func (n *Node) identify(p dht.Peer) (addr.NodeID, bool) {
	n.disc.mu.Lock()
	id, ok := n.disc.byKey[p.Key]
	rec := n.disc.known[id]
	banned := n.disc.banned[p.Key]
	n.disc.mu.Unlock()
	if banned {
		return addr.NodeID{}, false
	}
	if !ok || rec == nil {
		n.fetchContact(p, addr.NodeID{})
		return addr.NodeID{}, false
	}
	if !n.stillValid(rec) || !isServer(rec) {
		return addr.NodeID{}, false
	}
	return id, true
}

// fetchContact asks p's address for its record with a plain hello, in
// the background, and offers p to the routing table if the record
// verifies, is id's (when id is set) and names p's key.
func (n *Node) fetchContact(p dht.Peer, id addr.NodeID) {
	d := &n.disc
	now := n.now()
	d.mu.Lock()
	if d.fetching[p.Addr] || len(d.fetching) >= maxFetches || now.Sub(d.failed[p.Addr]) < fetchBackoff || d.banned[p.Key] {
		d.mu.Unlock()
		return
	}
	d.fetching[p.Addr] = true
	d.mu.Unlock()
	done := func(err error) {
		d.mu.Lock()
		defer d.mu.Unlock()
		delete(d.fetching, p.Addr)
		if err != nil {
			if len(d.failed) > 4096 {
				clear(d.failed)
			}
			d.failed[p.Addr] = n.now()
		}
	}
	ok := n.goBackground(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, dhtTimeout)
		defer cancel()
		body, from, err := n.conn.CallHello(ctx, p.Addr, nil)
		var rec *trust.NodeRecord
		if err == nil {
			rec, err = n.verifyRecord(body, n.now())
		}
		if err == nil && (rec.WireGuardKey() != p.Key || from.Key != p.Key || (!id.IsZero() && rec.Cert.NodeID != id)) {
			err = fmt.Errorf("the record at %s does not match the contact", p.Addr)
		}
		done(err)
		if err != nil {
			n.logger.Debug("dht contact not admitted", "addr", p.Addr, "err", err)
			return
		}
		if isServer(rec) {
			n.dht.Table().Seen(dht.Contact{ID: rec.Cert.NodeID, Peer: p}, 0)
		}
	})
	if !ok {
		done(nil)
	}
}

// banRevoked keeps a revoked node out of the DHT: its keys are refused
// both ways, its table entry goes and its records are forgotten.
func (n *Node) banRevoked(id addr.NodeID, recs ...*trust.NodeRecord) {
	d := &n.disc
	d.mu.Lock()
	if r := d.known[id]; r != nil {
		recs = append(recs, r)
	}
	for _, r := range recs {
		if r != nil {
			d.banned[r.WireGuardKey()] = true
			if r.Cert != nil {
				d.banned[r.Cert.WGKey] = true
			}
		}
	}
	d.forgetLocked(id)
	d.rendezvous = slices.DeleteFunc(d.rendezvous, func(p dht.Peer) bool { return d.banned[p.Key] })
	d.mu.Unlock()
	if n.dht != nil {
		n.dht.Table().Evict(dht.NodeKey(id))
	}
}

// nameOf returns the name of a node this node knows a record of.
func (n *Node) nameOf(id addr.NodeID) string {
	n.disc.mu.Lock()
	defer n.disc.mu.Unlock()
	if r := n.disc.known[id]; r != nil {
		return r.Cert.Name
	}
	return ""
}

// role returns the node's current DHT role and why.
func (n *Node) role() (DHTRole, bool, string) {
	n.disc.mu.Lock()
	defer n.disc.mu.Unlock()
	return n.disc.role, n.disc.forced, n.disc.roleWhy
}

// setRole switches the DHT role; a change re-signs and republishes the
// record (a client's names its rendezvous servers).
func (n *Node) setRole(role DHTRole, why string) {
	d := &n.disc
	d.mu.Lock()
	changed := d.role != role
	d.role, d.roleWhy = role, why
	if changed {
		d.republish = true
		if role == DHTRoleServer {
			d.rendezvous = nil
		}
	}
	d.mu.Unlock()
	n.serving.Store(role == DHTRoleServer)
	if changed {
		n.logger.Info("DHT role changed", "role", role, "why", why)
	}
}

// takeRepublish reports and clears the flag that the record must be
// published now.
func (n *Node) takeRepublish() bool {
	n.disc.mu.Lock()
	defer n.disc.mu.Unlock()
	r := n.disc.republish
	n.disc.republish = false
	return r
}

// rendezvousAddrsLocked lists a client's rendezvous addresses for its
// record; n.mu is held (lock order: n.mu, then disc.mu).
func (n *Node) rendezvousAddrsLocked() []netip.AddrPort {
	n.disc.mu.Lock()
	defer n.disc.mu.Unlock()
	if n.disc.role != DHTRoleClient {
		return nil
	}
	var out []netip.AddrPort
	for _, p := range n.disc.rendezvous {
		out = append(out, p.Addr)
	}
	if len(out) == 0 {
		// Before the first keepalive round: the bootstrap nodes, which
		// the client binds to first. A client's record must never look
		// like a server's, or it would enter routing tables.
		boot := n.selfExcludedBootstrapLocked()
		out = boot[:min(len(boot), rendezvousCount)]
	}
	return out
}

// keepRendezvous refreshes a client's bindings to its rendezvous servers
// (a FIND_NODE for its own key, which also keeps its view of its
// neighbourhood fresh), replaces those that stopped answering with the
// fastest servers it knows, and marks the record for republishing when
// the set changed.
func (n *Node) keepRendezvous(ctx context.Context) {
	self := dht.NodeKey(n.nodeID)
	body, _ := dht.FindNodeRequest{Target: self}.MarshalBinary()
	ping := func(p dht.Peer) bool {
		cctx, cancel := context.WithTimeout(ctx, dhtTimeout)
		defer cancel()
		_, err := n.conn.Call(cctx, nat.Peer{Addr: p.Addr, Key: p.Key}, nat.MsgFindNode, body)
		return err == nil
	}
	n.disc.mu.Lock()
	cur := slices.Clone(n.disc.rendezvous)
	n.disc.mu.Unlock()
	var keep []dht.Peer
	for _, p := range cur {
		if ping(p) {
			keep = append(keep, p)
		}
	}
	if len(keep) < rendezvousCount {
		// Bootstrap nodes first (operators run them to be reachable), then
		// the table's contacts, fastest first.
		n.mu.Lock()
		cands := n.bootstrapPeersLocked()
		n.mu.Unlock()
		for _, e := range n.dht.Table().EntriesByRTT() {
			cands = append(cands, e.Contact.Peer)
		}
		for _, p := range cands {
			if len(keep) >= rendezvousCount {
				break
			}
			if slices.ContainsFunc(keep, func(k dht.Peer) bool { return k.Key == p.Key || k.Addr == p.Addr }) || n.isBanned(p.Key) {
				continue
			}
			if ping(p) {
				keep = append(keep, p)
			}
		}
	}
	n.disc.mu.Lock()
	changed := !slices.Equal(keep, n.disc.rendezvous)
	if n.disc.role == DHTRoleClient {
		n.disc.rendezvous = keep
		n.disc.republish = n.disc.republish || changed
	}
	n.disc.mu.Unlock()
	if changed {
		n.logger.Debug("rendezvous servers", "servers", keep)
	}
}
