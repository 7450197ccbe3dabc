package weft

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/trust"
)

// transport adapts the node's socket to dht.Transport.
type transport struct{ c *nat.Conn }

func (t transport) Call(ctx context.Context, to dht.Peer, mt dht.MsgType, body []byte) ([]byte, error) {
	return t.c.Call(ctx, nat.Peer{Addr: to.Addr, Key: to.Key}, nat.MsgType(mt), body)
}

func (t transport) Handle(mt dht.MsgType, h dht.Handler) {
	t.c.Handle(nat.MsgType(mt), func(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
		return h(ctx, dht.Peer{Addr: from.Addr, Key: from.Key}, body)
	})
}

var _ dht.Transport = transport{}

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

// verifyRecord decodes and verifies a node record.
func (n *Node) verifyRecord(b []byte, now time.Time) (*trust.NodeRecord, error) {
	rec, err := trust.UnmarshalNodeRecord(b)
	if err != nil {
		return nil, err
	}
	if err := n.view.VerifyRecord(rec, now); err != nil {
		return nil, err
	}
	return rec, nil
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
		Cert:      n.cert,
		Seq:       seq,
		Expires:   expires,
		Endpoints: append([]netip.AddrPort(nil), n.endpoints...),
		WGKey:     n.id.WGPublic(),
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
	// A first publication attempt, bounded, so that a node started with a
	// live bootstrap is findable when Start returns.
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	n.publish(pctx)
	return nil
}

// saveInterval is how often changed peer lists are written to the state
// directory.
const saveInterval = 30 * time.Second

// maintain republishes the record before it ages, retries unreachable
// bootstrap nodes with backoff, and saves the peer list, until the node
// closes.
func (n *Node) maintain() {
	defer n.wg.Done()
	retry := time.Second
	nextRetry := n.now().Add(retry)
	lastPublish := n.now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastSave := n.now()
	var nextRenew time.Time
	lastRotate := n.now()
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
		n.mu.Lock()
		missing := len(n.bootPeers) < len(n.selfExcludedBootstrapLocked())
		n.mu.Unlock()
		due := now.Sub(lastPublish) >= n.cfg.RecordTTL/3
		if !due && !(missing && !now.Before(nextRetry)) {
			continue
		}
		if due {
			n.mu.Lock()
			err := n.signRecordLocked()
			raw := n.recordRaw
			n.mu.Unlock()
			if err != nil {
				n.logger.Warn("re-sign record", "err", err)
				continue
			}
			for _, k := range recordKeys(n.cert) {
				_ = n.store.Put(dht.Peer{}, k, raw)
			}
			lastPublish = now
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		n.publish(ctx)
		cancel()
		if missing {
			retry = min(retry*2, 30*time.Second)
			nextRetry = n.now().Add(retry)
		} else {
			retry = time.Second
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

func containsAddr(list []netip.AddrPort, a netip.AddrPort) bool {
	for _, b := range list {
		if a == b {
			return true
		}
	}
	return false
}

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
			body, from, err := n.conn.CallHello(ctx, a, nil)
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

// publish stores our record on every reachable bootstrap node.
func (n *Node) publish(ctx context.Context) {
	servers := n.resolveBootstrap(ctx)
	if len(servers) == 0 {
		return
	}
	n.syncTrust(ctx, servers)
	raw := n.ownRecord()
	for _, k := range recordKeys(n.cert) {
		if err := n.client.Put(ctx, servers, k, raw); err != nil {
			n.logger.Warn("publish record", "key", k.Short(), "err", err)
		}
	}
}

// Peer describes another node of the overlay.
type Peer struct {
	Name   string
	NodeID addr.NodeID
	IPv4   netip.Addr
	IPv6   netip.Addr
	Tags   []string
	// Endpoints are the UDP addresses the peer advertises.
	Endpoints []netip.AddrPort
	// Expires is when the peer's current record expires.
	Expires time.Time
	// Seq is the record's sequence number.
	Seq uint64

	rec *trust.NodeRecord
}

func peerFromRecord(rec *trust.NodeRecord) Peer {
	c := rec.Cert
	return Peer{Name: c.Name, NodeID: c.NodeID, IPv4: c.IPv4, IPv6: c.IPv6(), Tags: c.Tags,
		Endpoints: rec.Endpoints, Expires: rec.Expires, Seq: rec.Seq, rec: rec}
}

// Resolve finds the node that host names: a bare name ("api"), a name in the
// network's domain ("api.weft.internal"), "<nodeid>.id.<domain>", a node ID
// in hex, or one of the node's overlay IPs. The record comes from the local
// store and the bootstrap nodes, verified, highest sequence first.
func (n *Node) Resolve(ctx context.Context, host string) (Peer, error) {
	if n.isClosed() {
		return Peer{}, ErrClosed
	}
	key, err := n.keyFor(host)
	if err != nil {
		return Peer{}, err
	}
	if host == n.cert.Name || key == dht.NodeKey(n.cert.NodeID) || key == dht.IPKey(n.cert.IPv4) || key == dht.IPKey(n.cert.IPv6()) {
		n.mu.Lock()
		rec := n.record
		n.mu.Unlock()
		return peerFromRecord(rec), nil
	}
	now := n.now()
	var best *trust.NodeRecord
	var bestRaw []byte
	if r, ok := n.store.Get(key); ok {
		if rec, err := n.verifyRecord(r.Value, now); err == nil {
			best, bestRaw = rec, r.Value
			n.mu.Lock()
			fetched, ok := n.fetched[key]
			n.mu.Unlock()
			if ok && now.Sub(fetched) < lookupCache {
				return peerFromRecord(rec), nil
			}
		}
	}
	servers := n.resolveBootstrap(ctx)
	var lookupErr error
	if len(servers) > 0 {
		r, err := n.client.Get(ctx, servers, key)
		if err == nil {
			n.mu.Lock()
			if len(n.fetched) > 4096 {
				clear(n.fetched)
			}
			n.fetched[key] = now
			n.mu.Unlock()
			rec, verr := n.verifyRecord(r.Value, now)
			if verr == nil && (best == nil || rec.Seq > best.Seq) {
				best, bestRaw = rec, r.Value
			}
		} else {
			lookupErr = err
		}
	}
	if best == nil {
		if lookupErr != nil && !errors.Is(lookupErr, dht.ErrNotFound) {
			return Peer{}, fmt.Errorf("resolve %q: %w", host, lookupErr)
		}
		if len(servers) == 0 && len(n.bootAddrs) > 0 {
			return Peer{}, fmt.Errorf("resolve %q: %w (no bootstrap node reachable: is `weft up` running on %v?)", host, ErrNotFound, n.bootAddrs)
		}
		return Peer{}, fmt.Errorf("resolve %q: %w", host, ErrNotFound)
	}
	n.storeRecord(best, bestRaw)
	return peerFromRecord(best), nil
}

// lookupCache is how long a record fetched from the bootstrap nodes is used
// without asking again: long enough that a burst of dials costs one lookup,
// short enough that a restarted peer (new record, new sequence) is noticed.
const lookupCache = 15 * time.Second

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
	ifs, err := net.Interfaces()
	if err != nil {
		return []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), local.Port())}
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
			if ip.IsLinkLocalUnicast() || ip.IsMulticast() || (local.Addr().Is4() && !ip.Is4()) {
				continue
			}
			ap := netip.AddrPortFrom(ip, local.Port())
			if ip.IsLoopback() {
				if ip.Is4() {
					loop = append(loop, ap)
				}
				continue
			}
			out = append(out, ap)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return append(out, loop...)
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
