package weft

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/trust"
	"github.com/weft-net/weft/tunnel"
)

// handleHello answers a plain hello with our signed record: public data that
// lets the caller learn our key and verify it against the genesis.
func (n *Node) handleHello(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	return n.ownRecord(), nil
}

// handleConnect configures the caller as a WireGuard peer. The body is the
// caller's node record; it must verify and its WireGuard key must be the key
// that sealed the message, so nobody can replay another node's record.
func (n *Node) handleConnect(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	rec, err := n.verifyRecord(body, n.now())
	if err != nil {
		n.countReject(err)
		n.logger.Warn("refused connect", "from", from.Addr, "reason", err)
		return nil, fmt.Errorf("connect refused: %w", err)
	}
	if rec.WireGuardKey() != from.Key {
		n.logger.Warn("refused connect: record key differs from sender key", "from", from.Addr, "name", rec.Cert.Name)
		return nil, errors.New("connect refused: the record's WireGuard key is not the sender's key")
	}
	if rec.Cert.NodeID == n.cert.NodeID {
		return nil, errors.New("connect refused: that is this node's own identity")
	}
	n.storeRecord(rec, body)
	// A peer that restarted has no session with us any more. Our stale
	// keys are kept on purpose: packets sent with them are lost (TCP
	// retransmits), but they do not make us start a handshake of our own,
	// which would collide with the one the peer starts right after this
	// exchange (simultaneous initiations invalidate each other and cost
	// WireGuard a 5 s retry).
	if err := n.setPeer(rec, from.Addr, "direct: peer connected from "+from.Addr.String(), false); err != nil {
		return nil, err
	}
	return n.ownRecord(), nil
}

// setPeer configures rec's node as a WireGuard peer reached at ep. The
// initiator of the connect exchange sets a persistent keepalive, whose first
// keepalive starts the handshake at once; the responder does not, so the two
// sides never start handshakes at the same moment (simultaneous initiations
// invalidate each other and cost a 5 s retry in WireGuard).
func (n *Node) setPeer(rec *trust.NodeRecord, ep netip.AddrPort, reason string, initiator bool) error {
	c := rec.Cert
	keepalive := time.Duration(-1)
	if initiator {
		keepalive = 0 // tunnel.DefaultKeepalive
	}
	// Not in the middle of readyPeer's check and removal.
	n.peerCfgMu.Lock()
	defer n.peerCfgMu.Unlock()
	err := n.tun.SetPeer(tunnel.Peer{
		PublicKey:  tunnel.Key(rec.WireGuardKey()),
		Endpoint:   ep,
		Keepalive:  keepalive,
		AllowedIPs: peerPrefixes(rec),
	})
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if old, ok := n.peers[c.NodeID]; ok && old.rec.WireGuardKey() != rec.WireGuardKey() {
		// The peer rotated its key: drop the old WireGuard peer.
		_ = n.tun.RemovePeer(tunnel.Key(old.rec.WireGuardKey()))
	}
	act := &activity{}
	if old, ok := n.peers[c.NodeID]; ok {
		act = old.act
	}
	act.touch(time.Now().Unix())
	n.peers[c.NodeID] = &peerState{rec: rec, endpoint: ep, reason: reason, since: n.now(), act: act}
	n.peersDirty = true
	n.updateKnownLocked()
	n.logger.Info("peer configured", "name", c.Name, "node_id", c.NodeID.Short(), "endpoint", ep)
	return nil
}

// updateKnownLocked hands the demand watcher the current peer addresses.
func (n *Node) updateKnownLocked() {
	known := make(map[netip.Addr]*activity, 2*len(n.peers))
	for _, p := range n.peers {
		known[p.rec.Cert.IPv4] = p.act
		known[p.rec.Cert.IPv6()] = p.act
	}
	n.demand.setKnown(known)
	n.updatePolicyLocked()
}

// reapIdle removes peers that carried no application traffic for the idle
// timeout; traffic to them later sets them up again on demand.
func (n *Node) reapIdle() {
	idle := n.cfg.IdleTimeout
	if idle < 0 {
		return
	}
	cutoff := time.Now().Add(-idle).Unix()
	n.mu.Lock()
	var gone []*peerState
	for id, p := range n.peers {
		if p.act.last.Load() < cutoff {
			gone = append(gone, p)
			delete(n.peers, id)
		}
	}
	if len(gone) > 0 {
		n.peersDirty = true
		n.updateKnownLocked()
	}
	n.mu.Unlock()
	for _, p := range gone {
		_ = n.tun.RemovePeer(tunnel.Key(p.rec.WireGuardKey()))
		n.logger.Info("removed idle peer", "name", p.rec.Cert.Name, "idle_for", idle)
	}
}

// maxResumePeers bounds how many peers are remembered across restarts.
const maxResumePeers = 256

// maxSavedContacts bounds the DHT contacts remembered across restarts.
const maxSavedContacts = 16

// savePeers writes the current peers' records and the closest DHT
// contacts to the state directory if they changed since the last save.
func (n *Node) savePeers() {
	var contacts []netip.AddrPort
	for _, c := range n.dht.Table().Closest(dht.NodeKey(n.cert.NodeID), maxSavedContacts) {
		contacts = append(contacts, c.Peer.Addr)
	}
	n.mu.Lock()
	if !n.peersDirty && slices.Equal(contacts, n.savedContacts) {
		n.mu.Unlock()
		return
	}
	n.peersDirty = false
	n.savedContacts = contacts
	var recs [][]byte
	for _, p := range n.peers {
		if len(recs) == maxResumePeers {
			break
		}
		if b, err := p.rec.Marshal(); err == nil {
			recs = append(recs, b)
		}
	}
	n.mu.Unlock()
	n.stateMu.Lock()
	defer n.stateMu.Unlock()
	st, err := loadNodeState(n.cfg.StateDir)
	if err != nil {
		n.logger.Warn("could not save peers", "err", err)
		return
	}
	st.Peers = recs
	if len(contacts) > 0 {
		st.Contacts = contacts // an empty table keeps the last good list
	}
	if err := saveNodeState(n.cfg.StateDir, st); err != nil {
		n.logger.Warn("could not save peers", "err", err)
	}
}

// resume reconnects to the peers of the previous run, in parallel, so that
// they learn this node's new session and endpoint right away.
func (n *Node) resume(recs [][]byte) {
	var wg sync.WaitGroup
	now := n.now()
	for _, b := range recs {
		rec, err := n.verifyRecord(b, now)
		if err != nil || rec.Cert.NodeID == n.cert.NodeID {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			defer cancel()
			// A newer record from the bootstrap nodes may have moved.
			if p, err := n.Resolve(ctx, rec.Cert.NodeID.String()); err == nil && p.rec.Seq > rec.Seq {
				rec = p.rec
			}
			// Through connectPeer, so that a Dial racing the resume
			// shares its exchange instead of starting a second one.
			if err := n.connectPeer(ctx, rec); err != nil {
				n.logger.Debug("previous peer not reachable", "name", rec.Cert.Name, "err", err)
			}
		}()
	}
	wg.Wait()
}

// connectPeer makes sure rec's node is a configured WireGuard peer, doing
// the connect exchange with it if not. Concurrent callers for one peer share
// one exchange.
func (n *Node) connectPeer(ctx context.Context, rec *trust.NodeRecord) error {
	id := rec.Cert.NodeID
	for {
		n.mu.Lock()
		if p, ok := n.peers[id]; ok && p.rec.Seq >= rec.Seq {
			n.mu.Unlock()
			return nil
		}
		wait, busy := n.dialing[id]
		if !busy {
			done := make(chan struct{})
			n.dialing[id] = done
			n.mu.Unlock()
			err := n.connect(ctx, rec)
			n.mu.Lock()
			delete(n.dialing, id)
			n.mu.Unlock()
			close(done)
			return err
		}
		n.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// connectExchange sends MsgConnect to every endpoint of rec at once; the
// first endpoint to answer with a valid record of the same node wins.
func (n *Node) connectExchange(ctx context.Context, rec *trust.NodeRecord) error {
	if len(rec.Endpoints) == 0 {
		return fmt.Errorf("peer %s advertises no endpoint", rec.Cert.Name)
	}
	ep, best, err := n.connectDirect(ctx, rec)
	if err != nil {
		return err
	}
	return n.setPeer(best, ep, "direct: peer answered on "+ep.String(), true)
}

// connectDirect is connectExchange without setting the peer up: the
// endpoint that answered and the newer of the two records.
func (n *Node) connectDirect(ctx context.Context, rec *trust.NodeRecord) (netip.AddrPort, *trust.NodeRecord, error) {
	own := n.ownRecord()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	type result struct {
		ep  netip.AddrPort
		rec *trust.NodeRecord
		err error
	}
	ch := make(chan result, len(rec.Endpoints))
	for _, ep := range rec.Endpoints {
		go func() {
			body, err := n.conn.Call(ctx, nat.Peer{Addr: ep, Key: rec.WireGuardKey()}, nat.MsgConnect, own)
			if err != nil {
				ch <- result{ep: ep, err: err}
				return
			}
			got, err := n.verifyRecord(body, n.now())
			if err == nil && got.Cert.NodeID != rec.Cert.NodeID {
				err = fmt.Errorf("endpoint %s answered as %s, not %s", ep, got.Cert.Name, rec.Cert.Name)
			}
			ch <- result{ep: ep, rec: got, err: err}
		}()
	}
	var errs []error
	for range rec.Endpoints {
		r := <-ch
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.ep, r.err))
			continue
		}
		cancel() // stop the other attempts
		best := r.rec
		if best.Seq < rec.Seq {
			best = rec
		}
		return r.ep, best, nil
	}
	return netip.AddrPort{}, nil, fmt.Errorf("peer %s unreachable on all %d endpoints (is it up?): %w", rec.Cert.Name, len(rec.Endpoints), errors.Join(errs...))
}

// Status is a snapshot of the node and its peers. Its JSON form is what
// `weft status --json` prints.
type Status struct {
	NodeID    addr.NodeID      `json:"node_id"`
	Name      string           `json:"name"`
	Network   string           `json:"network"`
	NetworkID addr.NetworkID   `json:"network_id"`
	Domain    string           `json:"domain"`
	IPv4      netip.Addr       `json:"ipv4"`
	IPv6      netip.Addr       `json:"ipv6"`
	Listen    netip.AddrPort   `json:"listen"`
	Endpoints []netip.AddrPort `json:"endpoints"`
	Anchor    bool             `json:"anchor"`
	// Mode is "userspace" (gVisor stack) or "tun" (kernel interface).
	Mode string `json:"mode"`
	// Interface is the TUN interface in TUN mode.
	Interface string `json:"interface,omitempty"`
	// DNS is where the overlay DNS server listens, if it runs.
	DNS string `json:"dns,omitempty"`
	// UAPI is the name `wg show` knows the node by, if its socket is up.
	UAPI      string           `json:"uapi,omitempty"`
	Bootstrap []netip.AddrPort `json:"bootstrap"`
	// BootstrapReachable counts the bootstrap nodes that answered.
	BootstrapReachable int `json:"bootstrap_reachable"`
	// DHTRole is the node's DHT role (server or client) and DHTContacts
	// the live entries of its routing table; `weft dht` has the rest.
	DHTRole     DHTRole      `json:"dht_role"`
	DHTContacts int          `json:"dht_contacts"`
	CertExpires time.Time    `json:"cert_expires"`
	Peers       []PeerStatus `json:"peers"`
	// SpoofedDrops counts packets dropped because a peer sent them with a
	// source address that is not its own.
	SpoofedDrops uint64 `json:"spoofed_drops"`
	// Policy is the network policy in force ("allow all" without one).
	Policy string `json:"policy"`
	// PolicyDrops counts packets from peers the policy refused.
	PolicyDrops uint64 `json:"policy_drops"`
	// Rejections counts refused records, connects and joins by reason
	// (expired, wrong network, too few endorsements, bad signature, ...).
	Rejections map[string]uint64 `json:"rejections,omitempty"`
	// Relay is the TURN relay this node runs (`weft up --relay`), if any.
	Relay *RelayStatus `json:"relay,omitempty"`
}

// PeerStatus is one configured peer.
type PeerStatus struct {
	Name     string         `json:"name"`
	NodeID   addr.NodeID    `json:"node_id"`
	IPv4     netip.Addr     `json:"ipv4"`
	IPv6     netip.Addr     `json:"ipv6"`
	Endpoint netip.AddrPort `json:"endpoint"`
	// Path is "direct" or "relay" (through a TURN relay).
	Path string `json:"path"`
	// Reason says why the path is what it is.
	Reason        string    `json:"reason"`
	LastHandshake time.Time `json:"last_handshake"`
	RxBytes       uint64    `json:"rx_bytes"`
	TxBytes       uint64    `json:"tx_bytes"`
}

// Status reports the node and its peers.
func (n *Node) Status() (Status, error) {
	if n.isClosed() {
		return Status{}, ErrClosed
	}
	stats, err := n.tun.Peers()
	if err != nil {
		return Status{}, err
	}
	byKey := make(map[[32]byte]tunnel.PeerStats, len(stats))
	for _, s := range stats {
		byKey[s.PublicKey] = s
	}
	role, _, _ := n.role()
	contacts := n.dht.Table().Len()
	n.mu.Lock()
	defer n.mu.Unlock()
	st := Status{
		DHTRole: role, DHTContacts: contacts,
		NodeID: n.cert.NodeID, Name: n.cert.Name, Network: n.genesis.Name, NetworkID: n.netID,
		Domain: n.genesis.Domain, IPv4: n.cert.IPv4, IPv6: n.cert.IPv6(), Listen: n.conn.LocalAddr(),
		Endpoints: n.endpoints, Anchor: n.anchorState() != nil, Bootstrap: n.bootAddrs,
		BootstrapReachable: len(n.bootPeers), CertExpires: n.cert.NotAfter,
		SpoofedDrops: n.tun.Stats().SpoofedDrops,
		Mode:         "userspace", Interface: n.cfg.TUN, UAPI: n.uapiName,
		Peers: []PeerStatus{},
	}
	if n.cfg.TUN != "" {
		st.Mode = "tun"
	}
	st.Relay = n.relayStatus()
	st.Policy, st.PolicyDrops = "allow all (no policy)", n.filter.dropped.Load()
	if p := n.view.Policy(); p != nil {
		st.Policy = p.String()
	}
	if len(n.rejects) > 0 {
		st.Rejections = make(map[string]uint64, len(n.rejects))
		for k, v := range n.rejects {
			st.Rejections[k] = v
		}
	}
	if n.dns != nil {
		st.DNS = n.dnsAddr.String()
	}
	for _, p := range n.peers {
		c := p.rec.Cert
		ps := PeerStatus{Name: c.Name, NodeID: c.NodeID, IPv4: c.IPv4, IPv6: c.IPv6(),
			Endpoint: p.endpoint, Path: pathKind(p.reason), Reason: p.reason}
		if s, ok := byKey[p.rec.WireGuardKey()]; ok {
			if s.Endpoint.IsValid() {
				ps.Endpoint = s.Endpoint
			}
			ps.LastHandshake, ps.RxBytes, ps.TxBytes = s.LastHandshake, s.RxBytes, s.TxBytes
		}
		st.Peers = append(st.Peers, ps)
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Name < st.Peers[j].Name })
	return st, nil
}
