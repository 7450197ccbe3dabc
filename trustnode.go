package weft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/trust"
	"github.com/weft-net/weft/tunnel"
)

// Control message types of the trust layer, in nat's message-type space
// (nat reserves 1-7).
const (
	// msgStatement pushes one complete trust statement (revocation,
	// anchor-set change, policy); receivers verify, apply and forward it.
	msgStatement nat.MsgType = 8
	// msgTrustSync asks for every statement the peer holds.
	msgTrustSync nat.MsgType = 9
	// msgRenew asks an anchor to endorse a renewed certificate.
	msgRenew nat.MsgType = 10
)

// Statement kinds on the wire.
const (
	kindRevocation byte = 1
	kindChange     byte = 2
	kindPolicy     byte = 3
)

// statement is one encoded trust statement.
type statement struct {
	kind byte
	body []byte
}

// encodeStatements packs statements as kind(1) len(2) body, stopping
// before max bytes.
func encodeStatements(ss []statement, max int) []byte {
	var b []byte
	for _, s := range ss {
		if len(s.body) > 0xffff || len(b)+3+len(s.body) > max {
			break
		}
		b = append(b, s.kind)
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.body)))
		b = append(b, s.body...)
	}
	return b
}

// decodeStatements is the inverse of encodeStatements.
func decodeStatements(b []byte) ([]statement, error) {
	var out []statement
	for len(b) > 0 {
		if len(b) < 3 {
			return nil, errors.New("truncated statement list")
		}
		kind, n := b[0], int(binary.BigEndian.Uint16(b[1:3]))
		if kind < kindRevocation || kind > kindPolicy {
			return nil, fmt.Errorf("unknown statement kind %d", kind)
		}
		if len(b) < 3+n {
			return nil, errors.New("truncated statement")
		}
		out = append(out, statement{kind, b[3 : 3+n]})
		b = b[3+n:]
	}
	return out, nil
}

// statements lists what this node holds: the anchor-set chain in order,
// the policy, then revocations, newest first.
func (n *Node) statements() []statement {
	var ss []statement
	for _, ch := range n.view.Chain() {
		ss = append(ss, statement{kindChange, ch.Marshal()})
	}
	if p := n.view.Policy(); p != nil {
		ss = append(ss, statement{kindPolicy, p.Marshal()})
	}
	revs := n.view.Revocations()
	for i := len(revs) - 1; i >= 0; i-- {
		ss = append(ss, statement{kindRevocation, revs[i].Marshal()})
	}
	return ss
}

// applyStatement verifies and applies one statement to the view. It
// reports whether the statement was new (and so worth forwarding).
func (n *Node) applyStatement(s statement) (bool, error) {
	switch s.kind {
	case kindRevocation:
		r, err := trust.UnmarshalRevocation(s.body)
		if err != nil {
			return false, err
		}
		fresh, err := n.view.AddRevocation(r)
		if err != nil || !fresh {
			return false, err
		}
		n.saveView()
		n.onRevoked(r)
		return true, nil
	case kindChange:
		ch, err := trust.UnmarshalAnchorChange(s.body)
		if err != nil {
			return false, err
		}
		// ApplyChain skips a change already applied and refuses a fork.
		added, err := n.view.ApplyChain([]*trust.AnchorChange{ch})
		if err != nil || added == 0 {
			return false, err
		}
		n.saveView()
		set := n.view.Set()
		n.logger.Info("anchor set changed", "seq", set.Seq, "anchors", len(set.Anchors), "threshold", set.Threshold)
		n.followAnchorRole()
		return true, nil
	case kindPolicy:
		p, err := trust.UnmarshalPolicy(s.body)
		if err != nil {
			return false, err
		}
		if cur := n.view.Policy(); cur != nil && p.Seq <= cur.Seq {
			return false, nil
		}
		if err := n.view.SetPolicy(p); err != nil {
			return false, err
		}
		n.saveView()
		n.mu.Lock()
		n.updatePolicyLocked()
		n.mu.Unlock()
		n.logger.Info("policy in force", "seq", p.Seq, "rules", len(p.Rules))
		return true, nil
	}
	return false, fmt.Errorf("unknown statement kind %d", s.kind)
}

func (n *Node) saveView() {
	n.stateMu.Lock()
	defer n.stateMu.Unlock()
	if err := trust.SaveView(n.cfg.StateDir, n.view); err != nil {
		n.logger.Warn("could not save trust state", "err", err)
	}
}

// openAnchor opens this node's anchor state against the current view.
func (n *Node) openAnchor() error {
	a, err := trust.OpenAnchorView(n.cfg.StateDir, n.view, n.id)
	if err != nil {
		return fmt.Errorf("open anchor state: %w", err)
	}
	a.Logger = n.cfg.Logger
	n.anchorMu.Lock()
	n.anchor = a
	n.anchorMu.Unlock()
	return nil
}

// followAnchorRole gives up or takes on the anchor role after an anchor-set
// change: a removed anchor loses its powers at once (its endorsements no
// longer count anywhere anyway); an added one gains them.
func (n *Node) followAnchorRole() {
	is := n.view.IsAnchor(n.id.SignPublic())
	n.anchorMu.Lock()
	a := n.anchor
	n.anchorMu.Unlock()
	switch {
	case a != nil && !is:
		n.anchorMu.Lock()
		n.anchor = nil
		n.anchorMu.Unlock()
		a.Close()
		n.logger.Warn("this node is no longer an anchor of the network")
	case a == nil && is:
		if err := n.openAnchor(); err != nil {
			n.logger.Warn("this node became an anchor but cannot open its anchor state", "err", err)
			return
		}
		n.conn.Handle(nat.MsgJoin, n.handleJoin)
		n.conn.Handle(msgRenew, n.handleRenew)
		n.logger.Info("this node is now an anchor of the network")
	}
}

// onRevoked tears down everything of a revoked node: its tunnel, its
// records here, its routing-table entry, cached DNS answers.
func (n *Node) onRevoked(r *trust.Revocation) {
	id := r.NodeID
	if id == n.cert.NodeID {
		n.logger.Error("this node has been revoked by the network's anchors; it can no longer reach any member", "reason", r.Reason)
		n.mu.Lock()
		all := n.peers
		n.peers = make(map[addr.NodeID]*peerState)
		n.updateKnownLocked()
		n.mu.Unlock()
		for _, p := range all {
			_ = n.tun.RemovePeer(tunnel.Key(p.rec.WireGuardKey()))
		}
		return
	}
	n.mu.Lock()
	p, ok := n.peers[id]
	if ok {
		delete(n.peers, id)
		n.peersDirty = true
		n.updateKnownLocked()
	}
	n.mu.Unlock()
	var rec *trust.NodeRecord
	if ok {
		rec = p.rec
		_ = n.tun.RemovePeer(tunnel.Key(rec.WireGuardKey()))
		// Tell the revoked node itself, so that it stops trying (and says
		// why) instead of timing out.
		body := encodeStatements([]statement{{kindRevocation, r.Marshal()}}, nat.MaxBodySize)
		to := nat.Peer{Addr: p.endpoint, Key: rec.WireGuardKey()}
		n.goBackground(func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			n.conn.Call(ctx, to, msgStatement, body)
		})
	} else if r, found := n.store.Get(dht.NodeKey(id)); found {
		rec, _ = trust.UnmarshalNodeRecord(r.Value)
	}
	n.store.Delete(dht.NodeKey(id))
	// Out of the DHT: evicted from the table, its keys refused both ways
	// (Admit and the validator refuse it from now on, by the view).
	n.banRevoked(id, rec)
	if rec != nil {
		c := rec.Cert
		for _, k := range recordKeys(c) {
			n.store.Delete(k)
		}
		if n.dns != nil {
			n.dns.Invalidate(c.Name)
			n.dns.Invalidate(c.IPv4.String())
			n.dns.Invalidate(c.IPv6().String())
		}
	}
	n.logger.Warn("node revoked: tunnel removed and its records refused", "node_id", id.Short(), "reason", r.Reason)
}

// handleStatement receives a pushed statement, applies it and, if new,
// forwards it to this node's peers and bootstrap nodes (flooding with
// dedupe: a node forwards a statement only the first time it sees it).
func (n *Node) handleStatement(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	ss, err := decodeStatements(body)
	if err != nil || len(ss) != 1 {
		return nil, fmt.Errorf("bad statement: %v", err)
	}
	fresh, err := n.applyStatement(ss[0])
	if err != nil {
		n.countReject(err)
		n.logger.Warn("refused trust statement", "from", from.Addr, "reason", err)
		return nil, err
	}
	if fresh {
		n.spread(ss[0], from.Key)
	}
	return nil, nil
}

// handleTrustSync answers with every statement this node holds.
func (n *Node) handleTrustSync(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	return encodeStatements(n.statements(), nat.MaxBodySize-64), nil
}

// maxSpreadTargets bounds the nodes one node pushes a statement to; the
// flood carries it further.
const maxSpreadTargets = 1024

// spread pushes a statement to every peer and bootstrap node except the
// one it came from, in the background.
func (n *Node) spread(s statement, except [32]byte) {
	body := encodeStatements([]statement{s}, nat.MaxBodySize)
	targets := map[[32]byte]nat.Peer{}
	n.mu.Lock()
	for _, p := range n.peers {
		if ep := p.endpoint; ep.IsValid() {
			targets[p.rec.WireGuardKey()] = nat.Peer{Addr: ep, Key: p.rec.WireGuardKey()}
		}
	}
	for _, b := range n.bootPeers {
		targets[b.Key] = nat.Peer{Addr: b.Addr, Key: b.Key}
	}
	n.mu.Unlock()
	for _, e := range n.dht.Table().Entries() {
		targets[e.Contact.Peer.Key] = nat.Peer{Addr: e.Contact.Peer.Addr, Key: e.Contact.Peer.Key}
	}
	// Every node whose record this node holds hears it too: a bootstrap
	// node reaches everyone who publishes to it, tunnel or not.
	now := n.now()
	n.store.Range(func(r dht.Record) bool {
		if len(targets) >= maxSpreadTargets {
			return false
		}
		rec, err := trust.UnmarshalNodeRecord(r.Value)
		if err != nil || rec.Cert.NodeID == n.cert.NodeID || n.view.VerifyRecord(rec, now) != nil {
			return true
		}
		if _, ok := targets[rec.WireGuardKey()]; !ok && len(rec.Endpoints) > 0 {
			targets[rec.WireGuardKey()] = nat.Peer{Addr: rec.Endpoints[0], Key: rec.WireGuardKey()}
		}
		return true
	})
	delete(targets, except)
	for _, t := range targets {
		n.goBackground(func(ctx context.Context) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := n.callFresh(ctx, t, msgStatement, body); err != nil {
				n.logger.Debug("could not pass on trust statement", "to", t.Addr, "err", err)
			}
		})
	}
}

// verifyRecordQuiet verifies a record without counting a refusal.
func (n *Node) verifyRecordQuiet(b []byte) error {
	_, err := n.verifyRecord(b, n.now())
	return err
}

// callFresh is Call that, when the peer does not answer, asks its address
// for its current record with a hello and tries once more with the key
// found there: the peer may have rotated its key since we learned it.
func (n *Node) callFresh(ctx context.Context, to nat.Peer, t nat.MsgType, body []byte) error {
	first, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := n.conn.Call(first, to, t, body)
	cancel()
	if err == nil || ctx.Err() != nil {
		return err
	}
	var remote *nat.RemoteError
	if errors.As(err, &remote) {
		return err // it answered: no key problem
	}
	hb, from, herr := n.conn.CallHello(ctx, to.Addr, nil)
	if herr != nil {
		return err
	}
	// Statements are public, so the record need not be valid for us to
	// learn where to send one: a removed anchor's record no longer verifies,
	// yet it should still hear of the change that removed it.
	rec, derr := trust.UnmarshalNodeRecord(hb)
	if derr != nil || rec.WireGuardKey() != from.Key || from.Key == to.Key {
		return err
	}
	if n.verifyRecordQuiet(hb) == nil {
		n.storeRecord(rec, hb)
	}
	n.mu.Lock()
	if _, ok := n.bootPeers[to.Addr]; ok {
		n.bootPeers[to.Addr] = dht.Peer{Addr: to.Addr, Key: from.Key}
	}
	n.mu.Unlock()
	_, err = n.conn.Call(ctx, nat.Peer{Addr: to.Addr, Key: from.Key}, t, body)
	return err
}

// syncTrust pulls the statements of the given servers and applies them.
func (n *Node) syncTrust(ctx context.Context, servers []dht.Peer) {
	for _, s := range servers {
		cctx, cancel := context.WithTimeout(ctx, helloTimeout)
		out, err := n.conn.Call(cctx, nat.Peer{Addr: s.Addr, Key: s.Key}, msgTrustSync, nil)
		cancel()
		if err != nil {
			continue
		}
		ss, err := decodeStatements(out)
		if err != nil {
			n.logger.Warn("bad trust sync answer", "from", s.Addr, "err", err)
			continue
		}
		for _, st := range ss {
			if fresh, err := n.applyStatement(st); err != nil {
				n.countReject(err)
				n.logger.Debug("refused synced statement", "from", s.Addr, "err", err)
			} else if fresh {
				n.spread(st, s.Key)
			}
		}
	}
}

// Publish verifies a complete statement token (weft-revoke1-,
// weft-change1-, weft-policy1-), applies it and spreads it to the network.
// It reports whether the statement was new here.
func (n *Node) Publish(token string) (bool, error) {
	if n.isClosed() {
		return false, ErrClosed
	}
	s, err := parseStatementToken(token)
	if err != nil {
		return false, err
	}
	fresh, err := n.applyStatement(s)
	if err != nil {
		return false, err
	}
	if fresh {
		n.spread(s, [32]byte{})
	}
	return fresh, nil
}

func parseStatementToken(token string) (statement, error) {
	token = strings.TrimSpace(token)
	switch {
	case strings.HasPrefix(token, "weft-revoke1-"):
		r, err := trust.ParseRevocation(token)
		if err != nil {
			return statement{}, err
		}
		return statement{kindRevocation, r.Marshal()}, nil
	case strings.HasPrefix(token, "weft-change1-"):
		ch, err := trust.ParseAnchorChange(token)
		if err != nil {
			return statement{}, err
		}
		return statement{kindChange, ch.Marshal()}, nil
	case strings.HasPrefix(token, "weft-policy1-"):
		p, err := trust.ParsePolicy(token)
		if err != nil {
			return statement{}, err
		}
		return statement{kindPolicy, p.Marshal()}, nil
	}
	return statement{}, errors.New("not a weft trust statement: expected a token starting with weft-revoke1-, weft-change1- or weft-policy1-")
}

// TrustStatus describes the trust state the node follows.
type TrustStatus struct {
	NetworkID   addr.NetworkID    `json:"network_id"`
	SetSeq      uint64            `json:"anchor_set_seq"`
	Threshold   int               `json:"threshold"`
	Tolerance   int               `json:"tolerates_byzantine"`
	Anchors     []AnchorStatus    `json:"anchors"`
	Revocations []RevocationEntry `json:"revocations"`
	Policy      string            `json:"policy"`
	PolicySeq   uint64            `json:"policy_seq,omitempty"`
}

// AnchorStatus is one anchor of the current set.
type AnchorStatus struct {
	Name   string      `json:"name"`
	NodeID addr.NodeID `json:"node_id"`
	IPv4   string      `json:"ipv4"`
}

// RevocationEntry is one revoked node.
type RevocationEntry struct {
	NodeID  addr.NodeID `json:"node_id"`
	Reason  string      `json:"reason"`
	Created time.Time   `json:"created"`
}

// Trust reports the anchor set, revocations and policy in force.
func (n *Node) Trust() TrustStatus {
	set := n.view.Set()
	ts := TrustStatus{NetworkID: n.netID, SetSeq: set.Seq, Threshold: set.Threshold, Tolerance: set.Tolerance(),
		Anchors: []AnchorStatus{}, Revocations: []RevocationEntry{}, Policy: "allow all (no policy)"}
	for _, a := range set.Anchors {
		ts.Anchors = append(ts.Anchors, AnchorStatus{Name: a.Name, NodeID: a.NodeID(), IPv4: a.IPv4.String()})
	}
	for _, r := range n.view.Revocations() {
		ts.Revocations = append(ts.Revocations, RevocationEntry{NodeID: r.NodeID, Reason: r.Reason, Created: r.Created})
	}
	if p := n.view.Policy(); p != nil {
		ts.Policy, ts.PolicySeq = p.Describe(), p.Seq
	}
	return ts
}
