package weft

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/trust"
)

// validator accepts a value under a key only if it is a node record that
// verifies against the network's genesis and that the key names: its node
// ID, its certificate's name or one of its overlay addresses.
type validator struct{ n *Node }

func (v validator) Validate(key dht.Key, value []byte, now time.Time) (uint64, time.Time, error) {
	rec, err := v.n.verifyRecord(value, now)
	if err != nil {
		v.n.countReject(err)
		return 0, time.Time{}, err
	}
	c := rec.Cert
	switch key {
	case dht.NodeKey(c.NodeID), dht.NameKey(c.Name), dht.IPKey(c.IPv4), dht.IPKey(c.IPv6()):
		return rec.Seq, rec.Expires, nil
	}
	return 0, time.Time{}, fmt.Errorf("record of %s (%s) does not belong under key %s", c.Name, c.NodeID.Short(), key.Short())
}

// verifyRecord decodes and verifies a node record, and remembers the
// node's key for the DHT (learn).
func (n *Node) verifyRecord(b []byte, now time.Time) (*trust.NodeRecord, error) {
	rec, err := n.checkRecord(b, now)
	if err != nil {
		return nil, err
	}
	n.learn(rec)
	return rec, nil
}

// checkRecord decodes and verifies a node record without learning from it.
func (n *Node) checkRecord(b []byte, now time.Time) (*trust.NodeRecord, error) {
	rec, err := trust.UnmarshalNodeRecord(b)
	if err != nil {
		return nil, err
	}
	if err := n.view.VerifyRecord(rec, now); err != nil {
		return nil, err
	}
	return rec, nil
}

// resignRecord signs a fresh record of this node (signRecordLocked) and
// stores it locally under its keys; publishing it is up to the caller.
func (n *Node) resignRecord() error {
	n.mu.Lock()
	err := n.signRecordLocked()
	rec, raw := n.record, n.recordRaw
	n.mu.Unlock()
	if err != nil {
		return err
	}
	n.storeRecord(rec, raw)
	return nil
}

// recordKeys are the keys a node record is stored under.
func recordKeys(c *trust.Certificate) []dht.Key {
	return []dht.Key{dht.NodeKey(c.NodeID), dht.NameKey(c.Name), dht.IPKey(c.IPv4), dht.IPKey(c.IPv6())}
}

// signRecord makes a fresh record of this node with a new sequence number.
func (n *Node) signRecordLocked() error {
	now := n.now()
	seq := uint64(now.UnixNano())
	if n.record != nil && seq <= n.record.Seq {
		seq = n.record.Seq + 1
	}
	expires := now.Add(n.cfg.RecordTTL)
	if expires.After(n.cert.NotAfter) {
		expires = n.cert.NotAfter // a record never outlives its certificate
	}
	rec := &trust.NodeRecord{
		Cert:       n.cert,
		Seq:        seq,
		Expires:    expires,
		Endpoints:  n.withPortMapping(slices.Clone(n.endpoints)),
		WGKey:      n.id.WGPublic(),
		Rendezvous: n.rendezvousAddrsLocked(),
		Relays:     n.relayAddrs(),
	}
	if err := rec.Sign(n.id); err != nil {
		return fmt.Errorf("sign node record: %w", err)
	}
	raw, err := rec.Marshal()
	if err != nil {
		return fmt.Errorf("encode node record: %w", err)
	}
	n.record, n.recordRaw = rec, raw
	return nil
}

func (n *Node) ownRecord() []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.recordRaw
}

// publishInitial signs the first record, stores it locally and remembers the
// listen address; the maintain loop takes it to the bootstrap nodes.
func (n *Node) publishInitial(ctx context.Context) error {
	n.mu.Lock()
	err := n.signRecordLocked()
	raw := n.recordRaw
	n.mu.Unlock()
	if err != nil {
		return err
	}
	for _, k := range recordKeys(n.cert) {
		if err := n.store.Put(dht.Peer{}, k, raw); err != nil {
			return fmt.Errorf("store own record: %w", err)
		}
	}
	n.stateMu.Lock()
	st, err := loadNodeState(n.cfg.StateDir)
	if err != nil {
		n.stateMu.Unlock()
		return err
	}
	st.Listen = n.conn.LocalAddr()
	st.Endpoints = n.endpoints
	st.Bootstrap = n.bootAddrs
	if err := saveNodeState(n.cfg.StateDir, st); err != nil {
		n.logger.Warn("could not save node state", "err", err)
	}
	// Not held across publish: applying synced statements saves the view
	// under stateMu.
	n.stateMu.Unlock()
	// An auto-role node learns its role before its first DHT request, so
	// that a node behind NAT never enters routing tables as a server
	// (costing others timeouts): a reachable node knows within a few
	// round trips, an unreachable one after reachPingWait.
	if _, forced, _ := n.role(); !forced {
		rctx, cancel := context.WithTimeout(ctx, reachPingWait+2*time.Second)
		if !(len(n.resolveBootstrap(rctx)) > 0 && n.checkReachability(rctx)) {
			n.reachInconclusive.Store(true) // the maintain loop asks again soon
		}
		cancel()
		if err := n.resignRecord(); err != nil { // with the role's rendezvous
			return err
		}
		n.takeRepublish()
	}
	// A first publication attempt, bounded, so that a node started with a
	// live bootstrap is findable when Start returns.
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if !n.publish(pctx) {
		n.republishSoon()
	}
	return nil
}

// saveInterval is how often changed peer lists are written to the state
// directory.
const saveInterval = 30 * time.Second

// maintain keeps the node in the DHT until the node closes: it bootstraps
// (with backoff) while the routing table is small or a bootstrap node was
// never reached, republishes the node's record to the k closest nodes,
// refreshes stale buckets, replicates held records, keeps a client's
// rendezvous bindings and an auto-role node's reachability current; and
// besides, reaps idle peers, renews the certificate, rotates keys and
// saves the peer list.
func (n *Node) maintain() {
	defer n.wg.Done()
	retry := time.Second
	start := n.now()
	nextBoot := start.Add(retry)
	lastPublish, lastRefresh, lastReplicate, lastSave, lastRotate, lastLiveness := start, start, start, start, start, start
	var nextRenew, lastRendezvous, nextPublishRetry time.Time
	nextReach := start.Add(reachRecheck) // Start checked (or set the retry flag)
	publishRetry := time.Second
	// replicating: a Republish of held records runs.
	var replicating atomic.Bool
	_, forced, _ := n.role()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		now := n.now()
		n.reapIdle()
		if n.cfg.KeyRotation > 0 && now.Sub(lastRotate) >= n.cfg.KeyRotation {
			rctx, cancel := context.WithTimeout(n.ctx, 20*time.Second)
			if err := n.RotateKey(rctx); err != nil {
				n.logger.Warn("scheduled key rotation failed; will retry", "err", err)
			}
			cancel()
			lastRotate = now
		}
		if !now.Before(nextRenew) {
			rctx, cancel := context.WithTimeout(n.ctx, 20*time.Second)
			if err := n.maybeRenew(rctx); err != nil {
				nextRenew = now.Add(renewRetry)
			}
			cancel()
		}
		if now.Sub(lastSave) >= saveInterval {
			n.savePeers()
			lastSave = now
		}

		// Join (again) while the table is small: a lone node bootstraps
		// as soon as a bootstrap node answers.
		n.mu.Lock()
		missing := len(n.bootPeers) < len(n.selfExcludedBootstrapLocked())
		n.mu.Unlock()
		small := n.dht.Table().Len() < smallTable
		grew := false
		if (small || missing) && !now.Before(nextBoot) {
			before := n.dht.Table().Len()
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			n.joinDHT(ctx)
			cancel()
			grew = before == 0 && n.dht.Table().Len() > 0
			retry = min(retry*2, bootstrapRetryMax)
			nextBoot = n.now().Add(retry)
		} else if !small && !missing {
			retry = time.Second
		}

		role, _, _ := n.role()
		if role == DHTRoleClient && now.Sub(lastRendezvous) >= rendezvousKeepalive {
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			n.keepRendezvous(ctx)
			cancel()
			lastRendezvous = now
		}
		if !forced && !now.Before(nextReach) && (n.dht.Table().Len() > 0 || !missing) {
			nextReach = now.Add(reachRecheck)
			n.goBackground(func(ctx context.Context) {
				if !n.checkReachability(ctx) {
					n.reachInconclusive.Store(true)
				}
			})
		}
		if n.reachInconclusive.Swap(false) {
			nextReach = now.Add(reachRetry)
		}

		n.disc.mu.Lock()
		retryDue := n.disc.retryPublish && !now.Before(nextPublishRetry)
		n.disc.mu.Unlock()
		if now.Sub(lastPublish) >= n.cfg.RepublishInterval || n.takeRepublish() || grew || retryDue {
			if err := n.resignRecord(); err != nil {
				n.logger.Warn("re-sign record", "err", err)
				continue
			}
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			ok := n.publish(ctx)
			cancel()
			lastPublish = now
			n.disc.mu.Lock()
			n.disc.retryPublish = !ok
			n.disc.mu.Unlock()
			if ok {
				publishRetry = time.Second
			} else {
				publishRetry = min(2*publishRetry, bootstrapRetryMax)
				nextPublishRetry = n.now().Add(publishRetry)
			}
		}
		if now.Sub(lastLiveness) >= livenessCheck {
			ctx, cancel := context.WithTimeout(n.ctx, 2*dhtTimeout)
			if st, err := n.dht.Maintain(ctx); err != nil || st.Evicted > 0 {
				n.logger.Debug("dht liveness", "pinged", st.Pinged, "evicted", st.Evicted, "err", err)
			}
			cancel()
			lastLiveness = now
		}
		if now.Sub(lastRefresh) >= refreshCheck {
			ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
			if k, err := n.dht.Refresh(ctx); err != nil || k > 0 {
				n.logger.Debug("dht refresh", "buckets", k, "err", err)
			}
			cancel()
			lastRefresh = now
		}
		if now.Sub(lastReplicate) >= n.cfg.RecordTTL/2 && replicating.CompareAndSwap(false, true) {
			lastReplicate = now
			n.goBackground(func(ctx context.Context) {
				defer replicating.Store(false)
				ctx, cancel := context.WithTimeout(ctx, n.cfg.RecordTTL/4)
				defer cancel()
				if k, err := n.dht.Republish(ctx); err != nil {
					n.logger.Debug("dht republish", "records", k, "err", err)
				}
			})
		}
	}
}

// selfExcludedBootstrapLocked lists bootstrap addresses that are not this
// node's own socket.
func (n *Node) selfExcludedBootstrapLocked() []netip.AddrPort {
	local := n.conn.LocalAddr()
	var out []netip.AddrPort
	for _, b := range n.bootAddrs {
		if b.Port() == local.Port() && (b.Addr().IsLoopback() || b.Addr() == local.Addr() || containsAddr(n.endpoints, b)) {
			continue
		}
		out = append(out, b)
	}
	return out
}

// bootstrapPeersLocked lists the bootstrap nodes of
// selfExcludedBootstrapLocked whose keys are known, in their configured
// order.
func (n *Node) bootstrapPeersLocked() []dht.Peer {
	var out []dht.Peer
	for _, a := range n.selfExcludedBootstrapLocked() {
		if p, ok := n.bootPeers[a]; ok {
			out = append(out, p)
		}
	}
	return out
}

func containsAddr(list []netip.AddrPort, a netip.AddrPort) bool {
	for _, b := range list {
		if a == b {
			return true
		}
	}
	return false
}

// helloTimeout bounds one hello to a bootstrap node or remembered contact.
const helloTimeout = 2 * time.Second

// resolveBootstrap learns the keys of bootstrap nodes it has not reached yet
// with a plain hello, whose answer is their signed record.
func (n *Node) resolveBootstrap(ctx context.Context) []dht.Peer {
	n.mu.Lock()
	addrs := n.selfExcludedBootstrapLocked()
	var todo []netip.AddrPort
	for _, a := range addrs {
		if _, ok := n.bootPeers[a]; !ok {
			todo = append(todo, a)
		}
	}
	n.mu.Unlock()
	type res struct {
		a  netip.AddrPort
		p  dht.Peer
		id addr.NodeID
	}
	ch := make(chan res, len(todo))
	for _, a := range todo {
		go func() {
			hctx, cancel := context.WithTimeout(ctx, helloTimeout)
			body, from, err := n.conn.CallHello(hctx, a, nil)
			cancel()
			if err != nil {
				n.logger.Debug("bootstrap hello failed", "addr", a, "err", err)
				ch <- res{}
				return
			}
			rec, err := n.verifyRecord(body, n.now())
			if err != nil {
				n.logger.Warn("bootstrap node sent an invalid record", "addr", a, "err", err)
				ch <- res{}
				return
			}
			if rec.WireGuardKey() != from.Key && from.Key != ([32]byte{}) {
				n.logger.Warn("bootstrap record key does not match its sender", "addr", a)
				ch <- res{}
				return
			}
			ch <- res{a, dht.Peer{Addr: a, Key: rec.WireGuardKey()}, rec.Cert.NodeID}
			// Remember it: a bootstrap is also a peer worth knowing.
			n.storeRecord(rec, body)
		}()
	}
	for range todo {
		r := <-ch
		if r.a.IsValid() {
			n.mu.Lock()
			n.bootPeers[r.a] = r.p
			n.bootIDs[r.a] = r.id
			n.mu.Unlock()
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]dht.Peer, 0, len(n.bootPeers))
	for _, a := range addrs {
		if p, ok := n.bootPeers[a]; ok {
			out = append(out, p)
		}
	}
	return out
}

// storeRecord keeps a verified record in the local store under its keys.
func (n *Node) storeRecord(rec *trust.NodeRecord, raw []byte) {
	for _, k := range recordKeys(rec.Cert) {
		_ = n.store.Put(dht.Peer{}, k, raw)
	}
}

// joinDHT bootstraps the DHT from the bootstrap nodes that answer, or,
// with none (after joining, the bootstrap nodes may all be gone), from the
// routing table itself.
func (n *Node) joinDHT(ctx context.Context) {
	var seeds, saved []dht.Peer
	if n.dht.Table().Len() == 0 && len(n.contactAddrs) > 0 {
		// Not in the DHT: ask the contacts of the previous run at the same
		// time, in case every bootstrap node is gone.
		var wg sync.WaitGroup
		wg.Go(func() { saved = n.helloSeeds(ctx, n.contactAddrs) })
		seeds = n.resolveBootstrap(ctx)
		wg.Wait()
	} else {
		seeds = n.resolveBootstrap(ctx)
	}
	seeds = append(seeds, saved...)
	if len(seeds) == 0 && n.dht.Table().Len() == 0 {
		return
	}
	if err := n.dht.Bootstrap(ctx, seeds); err != nil {
		n.logger.Debug("dht bootstrap", "seeds", len(seeds), "err", err)
		return
	}
	n.logger.Debug("dht bootstrapped", "seeds", len(seeds), "contacts", n.dht.Table().Len())
}

// helloSeeds learns the keys of the nodes at addrs with plain hellos, in
// parallel, and returns those whose records verify: DHT seeds when no
// bootstrap node answers (contacts of the previous run).
func (n *Node) helloSeeds(ctx context.Context, addrs []netip.AddrPort) []dht.Peer {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		seeds []dht.Peer
	)
	for _, a := range addrs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, helloTimeout)
			defer cancel()
			body, from, err := n.conn.CallHello(ctx, a, nil)
			if err != nil {
				return
			}
			rec, err := n.verifyRecord(body, n.now())
			if err != nil || rec.WireGuardKey() != from.Key || rec.Cert.NodeID == n.cert.NodeID {
				return
			}
			mu.Lock()
			seeds = append(seeds, dht.Peer{Addr: a, Key: from.Key})
			mu.Unlock()
		})
	}
	wg.Wait()
	return seeds
}

// publish pulls the trust statements of the bootstrap nodes, joins the
// DHT if the table is empty, and stores the node's record on the k nodes
// closest to each of its keys (node ID, name, overlay addresses).
func (n *Node) publish(ctx context.Context) bool {
	if n.dht.Table().Len() == 0 {
		// Half the time to join, at most: the Puts need the rest (the
		// maintain loop keeps bootstrapping a small table on its own).
		jctx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok {
			jctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)/2))
		}
		n.joinDHT(jctx)
		cancel()
	} else {
		n.resolveBootstrap(ctx)
	}
	n.mu.Lock()
	seeds := make([]dht.Peer, 0, len(n.bootPeers))
	for _, p := range n.bootPeers {
		seeds = append(seeds, p)
	}
	n.mu.Unlock()
	// A bootstrap node that went away must not hold up the publication.
	var wg sync.WaitGroup
	wg.Go(func() { n.syncTrust(ctx, seeds) })
	ok := n.publishOwn(ctx)
	wg.Wait()
	return ok
}

// publishOwn Puts the node's current record under each of its keys, in
// parallel, and reports whether every Put reached some node.
func (n *Node) publishOwn(ctx context.Context) bool {
	raw := n.ownRecord()
	var wg sync.WaitGroup
	var failed atomic.Bool
	for _, k := range recordKeys(n.certificate()) {
		wg.Go(func() {
			stored, err := n.dht.Put(ctx, k, raw)
			switch {
			case err == nil:
				n.logger.Debug("published record", "key", k.Short(), "stored_on", stored)
				return
			case errors.Is(err, dht.ErrNoContacts) || n.dht.Table().Len() == 0:
				n.logger.Debug("record not published: no DHT contacts yet", "key", k.Short())
			default:
				n.logger.Warn("publish record; will retry", "key", k.Short(), "err", err)
			}
			failed.Store(true)
		})
	}
	wg.Wait()
	return !failed.Load()
}

// republishSoon makes the maintain loop publish the record again on one
// of its next ticks (a publication failed).
func (n *Node) republishSoon() {
	n.disc.mu.Lock()
	n.disc.retryPublish = true
	n.disc.mu.Unlock()
}

// Peer describes another node of the overlay.
type Peer struct {
	Name   string      `json:"name"`
	NodeID addr.NodeID `json:"node_id"`
	IPv4   netip.Addr  `json:"ipv4"`
	IPv6   netip.Addr  `json:"ipv6"`
	Tags   []string    `json:"tags,omitempty"`
	// Endpoints are the UDP addresses the peer advertises.
	Endpoints []netip.AddrPort `json:"endpoints"`
	// Rendezvous are the DHT servers a peer behind NAT is reached through
	// (empty for a DHT server).
	Rendezvous []netip.AddrPort `json:"rendezvous,omitempty"`
	// Expires is when the peer's current record expires.
	Expires time.Time `json:"expires"`
	// Seq is the record's sequence number.
	Seq uint64 `json:"seq"`

	rec *trust.NodeRecord
}

func peerFromRecord(rec *trust.NodeRecord) Peer {
	c := rec.Cert
	return Peer{Name: c.Name, NodeID: c.NodeID, IPv4: c.IPv4, IPv6: c.IPv6(), Tags: c.Tags,
		Endpoints: rec.Endpoints, Rendezvous: rec.Rendezvous, Expires: rec.Expires, Seq: rec.Seq, rec: rec}
}

// Resolve finds the node that host names: a bare name ("api"), a name in the
// network's domain ("api.weft.internal"), "<nodeid>.id.<domain>", a node ID
// in hex, or one of the node's overlay IPs. The record is looked up in the
// DHT (over disjoint paths, verified, highest sequence number first); one
// found less than Config.LookupCache ago is used without asking again.
func (n *Node) Resolve(ctx context.Context, host string) (Peer, error) {
	p, _, err := n.lookup(ctx, host, false)
	return p, err
}

// lookup resolves host, from the short cache unless force, else with a
// DHT Get. st is the Get's statistics, zero when none ran.
func (n *Node) lookup(ctx context.Context, host string, force bool) (Peer, dht.LookupStats, error) {
	var st dht.LookupStats
	if n.isClosed() {
		return Peer{}, st, ErrClosed
	}
	key, err := n.keyFor(host)
	if err != nil {
		return Peer{}, st, err
	}
	for _, k := range recordKeys(n.certificate()) {
		if k == key {
			n.mu.Lock()
			rec := n.record
			n.mu.Unlock()
			return peerFromRecord(rec), st, nil
		}
	}
	now := n.now()
	if !force {
		n.mu.Lock()
		f, ok := n.fetched[key]
		n.mu.Unlock()
		if ok && now.Sub(f.at) < n.cfg.LookupCache {
			if rec, err := n.verifyRecord(f.raw, now); err == nil {
				return peerFromRecord(rec), st, nil
			}
		}
	}
	if n.dht.Table().Len() == 0 {
		// Not joined yet (or every contact is gone): try the bootstrap
		// nodes first, within the caller's time.
		n.joinDHT(ctx)
	}
	r, st, err := n.dht.Get(ctx, key)
	if err != nil {
		switch {
		case errors.Is(err, dht.ErrNoContacts) && len(n.bootAddrs) > 0:
			return Peer{}, st, fmt.Errorf("resolve %q: %w (no DHT node reachable: is `weft up` running on a bootstrap node %v?)", host, ErrNotFound, n.bootAddrs)
		case errors.Is(err, dht.ErrNotFound) || errors.Is(err, dht.ErrNoContacts):
			return Peer{}, st, fmt.Errorf("resolve %q: %w", host, ErrNotFound)
		}
		return Peer{}, st, fmt.Errorf("resolve %q: %w", host, err)
	}
	// The Get may have answered from the local store, which a revocation
	// or expiry can have overtaken: verify again.
	rec, err := n.verifyRecord(r.Value, n.now())
	if err != nil {
		n.countReject(err)
		return Peer{}, st, fmt.Errorf("resolve %q: %w (the only record found was refused: %v)", host, ErrNotFound, err)
	}
	// Kept for the short cache only: the local store holds what this
	// node is responsible for (and republishes it), not what it asked for.
	n.mu.Lock()
	if len(n.fetched) > 4096 {
		clear(n.fetched)
	}
	n.fetched[key] = fetchedRecord{raw: r.Value, at: now}
	n.mu.Unlock()
	return peerFromRecord(rec), st, nil
}

// fetchedRecord is a record found in the DHT, and when.
type fetchedRecord struct {
	raw []byte
	at  time.Time
}

// keyFor maps a host string to the record key that finds it.
func (n *Node) keyFor(host string) (dht.Key, error) {
	host = trimDot(host)
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		return dht.IPKey(ip), nil
	}
	domain := n.genesis.Domain
	lower := toLower(host)
	if id, err := addr.ParseNodeID(lower); err == nil {
		return dht.NodeKey(id), nil
	}
	if rest, ok := cutSuffix(lower, ".id."+domain); ok {
		id, err := addr.ParseNodeID(rest)
		if err != nil {
			return dht.Key{}, fmt.Errorf("resolve %q: %w", host, err)
		}
		return dht.NodeKey(id), nil
	}
	name := lower
	if rest, ok := cutSuffix(lower, "."+domain); ok {
		name = rest
	}
	if err := addr.CheckName(name); err != nil {
		return dht.Key{}, fmt.Errorf("resolve %q: not an overlay name, node ID or address in %s: %w", host, domain, err)
	}
	return dht.NameKey(name), nil
}

func trimDot(s string) string {
	if len(s) > 0 && s[len(s)-1] == '.' {
		return s[:len(s)-1]
	}
	return s
}

func toLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)], true
	}
	return s, false
}

// advertiseEndpoints lists the addresses to publish for a socket bound to
// local: local itself if it names an IP, else every unicast address of every
// up interface (loopback last), with local's port.
func advertiseEndpoints(local netip.AddrPort) []netip.AddrPort {
	if !local.Addr().IsUnspecified() {
		return []netip.AddrPort{local}
	}
	var out, loop []netip.AddrPort
	err := interfaceAddrs(func(_ net.Interface, ip netip.Addr) {
		if local.Addr().Is4() && !ip.Is4() {
			return
		}
		ap := netip.AddrPortFrom(ip, local.Port())
		if ip.IsLoopback() {
			if ip.Is4() {
				loop = append(loop, ap)
			}
			return
		}
		out = append(out, ap)
	})
	if err != nil {
		return []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), local.Port())}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return append(out, loop...)
}

// interfaceAddrs calls fn with each address (unmapped) of every up
// interface, but for link-local unicast and multicast ones. It fails only
// if the interfaces cannot be listed; an interface whose addresses cannot
// be read is passed over.
func interfaceAddrs(fn func(ifc net.Interface, ip netip.Addr)) error {
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		as, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range as {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			ip := pfx.Addr().Unmap()
			if ip.IsLinkLocalUnicast() || ip.IsMulticast() {
				continue
			}
			fn(ifc, ip)
		}
	}
	return nil
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
