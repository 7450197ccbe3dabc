package weft

import (
	"bytes"
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
	// anchor-set change, policy) to one node; receivers verify, apply and
	// gossip it (dht.MsgGossip=11 carries statements between nodes).
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

// handleStatement receives a statement pushed directly (an anchor telling
// a node of its own revocation, or a node of an older version), applies it
// and, if new, gossips it on.
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
		n.announce(ss[0])
	}
	return nil, nil
}

// handleTrustSync answers with every statement this node holds.
func (n *Node) handleTrustSync(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	return encodeStatements(n.statements(), nat.MaxBodySize-64), nil
}

// Trust statements that every node must learn fast — revocations,
// anchor-set changes, policy — spread by push-pull gossip (dht.Gossip)
// over the DHT's routing table: a node that learns a new one pushes it to
// dht.DefaultFanout peers at once and in the next rounds, and every round
// pulls what its peers hold that it lacks (rounds every 750 ms while
// statements are moving, every 4 s when all is quiet). Clients, in nobody's table,
// learn by those pulls from their servers. Nodes that were away longer
// than the gossip retains a statement catch up with msgTrustSync when they
// (re)join and on every publication (publish).
const (
	// gossipInterval is how often a gossip round runs, and gossipTimeout
	// bounds each of its requests (at most the interval, so rounds do
	// not pile up).
	gossipInterval = 750 * time.Millisecond
	gossipTimeout  = gossipInterval
	// gossipIdleInterval is the round interval while nothing new has been
	// published or delivered here for gossipQuiet: idle nodes still pull
	// (a client or a node that missed a push learns a statement within
	// it), but at a fraction of the cost of fast rounds.
	gossipIdleInterval = 4 * time.Second
	gossipQuiet        = 15 * time.Second
	// gossipMaxPayload caps one encoded statement in gossip: with the
	// largest pull digest it still fits one sealed control message.
	// Larger statements (anchor sets of many anchors) spread by sync only.
	gossipMaxPayload = 3 << 10
	// gossipForget is how long the gossip remembers a statement it has
	// seen. A statement older than that which a node already holds is
	// not spread again (gossipValidate ignores it), so a replay of an old
	// statement dies at the first node that has it.
	gossipForget = dht.DefaultGossipForget
)

// startGossip creates the statement gossip over the DHT's table and
// starts its rounds, which run until Close.
func (n *Node) startGossip() error {
	g, err := dht.NewGossip(dht.GossipOptions{
		Transport:  dhtTransport{n},
		Table:      n.dht.Table(),
		Validate:   n.gossipValidate,
		Deliver:    n.gossipDeliver,
		MaxPayload: gossipMaxPayload,
		Forget:     gossipForget,
		Timeout:    gossipTimeout,
		Now:        n.now,
		Logger:     n.cfg.Logger,
	})
	if err != nil {
		return err
	}
	n.gossip = g
	n.goBackground(func(ctx context.Context) {
		var (
			lastActivity time.Time
			lastCount    uint64
			lastRound    time.Time
		)
		tick := time.NewTicker(gossipInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			now := time.Now()
			st := g.Stats()
			if c := st.Published + st.Delivered; c != lastCount {
				lastCount, lastActivity = c, now
			}
			if now.Sub(lastActivity) > gossipQuiet && now.Sub(lastRound) < gossipIdleInterval {
				continue // quiet: pull at the idle pace
			}
			lastRound = now
			g.Round(ctx)
		}
	})
	return nil
}

// gossipValidate is the gossip's Validate: the payload must be one
// statement that verifies against the view, without applying it. A
// statement already held is valid (an honest peer may send what we have),
// unless it is older than gossipForget: then it is ignored, not spread
// again. An anchor-set change beyond the successor of the current set
// cannot be judged yet and is ignored until its predecessors arrive.
func (n *Node) gossipValidate(payload []byte) error {
	ss, err := decodeStatements(payload)
	if err != nil {
		return err
	}
	if len(ss) != 1 {
		return fmt.Errorf("gossip payload holds %d statements, want 1", len(ss))
	}
	s := ss[0]
	held, created, err := n.statementHeld(s)
	if err != nil {
		return err
	}
	if held {
		if n.now().Sub(created) > gossipForget {
			return fmt.Errorf("statement of %s already held: %w", created.UTC().Format(time.RFC3339), dht.ErrGossipIgnored)
		}
		return nil
	}
	if s.kind == kindChange {
		ch, _ := trust.UnmarshalAnchorChange(s.body) // statementHeld decoded it
		if cur := n.view.Set().Seq; ch.Seq > cur+1 {
			return fmt.Errorf("anchor-set change %d follows %d, not yet held: %w", ch.Seq, ch.Seq-1, dht.ErrGossipIgnored)
		}
	}
	return n.verifyStatement(s)
}

// statementHeld decodes s and reports whether the view holds it already
// (the same revocation, an applied change, a policy no newer than the one
// in force), and when it was created. A change that contradicts an
// applied one (a fork) is an error.
func (n *Node) statementHeld(s statement) (bool, time.Time, error) {
	switch s.kind {
	case kindRevocation:
		r, err := trust.UnmarshalRevocation(s.body)
		if err != nil {
			return false, time.Time{}, err
		}
		h, ok := n.view.Revoked(r.NodeID)
		return ok && bytes.Equal(h.Marshal(), s.body), r.Created, nil
	case kindChange:
		ch, err := trust.UnmarshalAnchorChange(s.body)
		if err != nil {
			return false, time.Time{}, err
		}
		if ch.Seq < 1 || ch.Seq > n.view.Set().Seq {
			return false, ch.Created, nil
		}
		chain := n.view.Chain()
		if int(ch.Seq) > len(chain) || chain[ch.Seq-1].Hash() != ch.Hash() {
			return false, ch.Created, fmt.Errorf("anchor-set change %d differs from the change %d applied: it forks the anchor chain", ch.Seq, ch.Seq)
		}
		return true, ch.Created, nil
	case kindPolicy:
		p, err := trust.UnmarshalPolicy(s.body)
		if err != nil {
			return false, time.Time{}, err
		}
		cur := n.view.Policy()
		return cur != nil && p.Seq <= cur.Seq, p.Created, nil
	}
	return false, time.Time{}, fmt.Errorf("unknown statement kind %d", s.kind)
}

// gossipDeliver is the gossip's Deliver: it applies a new statement.
func (n *Node) gossipDeliver(payload []byte) {
	ss, err := decodeStatements(payload)
	if err != nil || len(ss) != 1 {
		return // validated before delivery
	}
	if _, err := n.applyStatement(ss[0]); err != nil {
		n.countReject(err)
		n.logger.Warn("refused gossiped trust statement", "reason", err)
	}
}

// announce gossips a statement this node has just applied: published here,
// pushed to it directly, or pulled by sync. (Statements received by gossip
// are passed on by the gossip itself.)
func (n *Node) announce(s statement) {
	payload := encodeStatements([]statement{s}, gossipMaxPayload)
	if len(payload) == 0 {
		n.logger.Warn("trust statement too large to gossip; nodes learn it by sync", "kind", s.kind, "bytes", len(s.body))
		return
	}
	n.goBackground(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, gossipTimeout)
		defer cancel()
		if _, err := n.gossip.Publish(ctx, payload); err != nil {
			// Without contacts it is held and spreads by pull; an old
			// statement (ignored) is not worth spreading.
			n.logger.Debug("trust statement gossip", "err", err)
		}
	})
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
				n.announce(st)
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
		n.announce(s)
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
