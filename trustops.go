package weft

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/trust"
)

// The anchor operations below run on anchor nodes only (ErrNotAnchor
// otherwise). Statements that need t endorsements travel as tokens between
// anchors: one anchor creates and endorses, the others cosign; the anchor
// whose endorsement completes the quorum publishes the statement, which then
// spreads to every node.

func (n *Node) anchorOrErr() (*trust.Anchor, error) {
	if n.isClosed() {
		return nil, ErrClosed
	}
	a := n.anchorState()
	if a == nil {
		return nil, ErrNotAnchor
	}
	return a, nil
}

// Pending lists join requests waiting for this anchor's operator.
func (n *Node) Pending() ([]trust.PendingJoin, error) {
	a, err := n.anchorOrErr()
	if err != nil {
		return nil, err
	}
	return a.Pending(), nil
}

// Approve lets a pending join request through on this anchor; host is a
// name or node ID (a unique prefix of it is enough).
func (n *Node) Approve(host string) error {
	a, err := n.anchorOrErr()
	if err != nil {
		return err
	}
	id, err := n.pendingID(a, host)
	if err != nil {
		return err
	}
	return a.Approve(id)
}

// Reject refuses a pending join request on this anchor.
func (n *Node) Reject(host, why string) error {
	a, err := n.anchorOrErr()
	if err != nil {
		return err
	}
	id, err := n.pendingID(a, host)
	if err != nil {
		return err
	}
	return a.Reject(id, why)
}

func (n *Node) pendingID(a *trust.Anchor, host string) (addr.NodeID, error) {
	host = strings.ToLower(strings.TrimSpace(host))
	var found []addr.NodeID
	for _, p := range a.Pending() {
		if p.Name == host || strings.HasPrefix(p.NodeID.String(), host) {
			found = append(found, p.NodeID)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return addr.NodeID{}, fmt.Errorf("no pending join request matches %q: see `weft trust pending`", host)
	}
	return addr.NodeID{}, fmt.Errorf("%q matches %d pending requests: give more of the node ID", host, len(found))
}

// CosignInvite adds this anchor's endorsement to an invite and returns the
// new token.
func (n *Node) CosignInvite(token string) (string, error) {
	a, err := n.anchorOrErr()
	if err != nil {
		return "", err
	}
	inv, err := trust.ParseInvite(strings.TrimSpace(token))
	if err != nil {
		return "", err
	}
	if err := a.CosignInvite(inv); err != nil {
		return "", err
	}
	return inv.Encode(), nil
}

// StatementResult is what creating or cosigning a statement produced.
type StatementResult struct {
	// Token is the statement with every endorsement so far; pass it to the
	// next anchor (`weft trust cosign TOKEN`) until it is complete.
	Token string `json:"token"`
	// Endorsements and Threshold say how far it is.
	Endorsements int `json:"endorsements"`
	Threshold    int `json:"threshold"`
	// Published is true when the statement was complete and has been
	// applied here and sent on to the network.
	Published bool `json:"published"`
}

// Revoke creates a revocation of the node host names (name, node ID or
// overlay address), endorsed by this anchor, and publishes it if this
// anchor's endorsement is enough.
func (n *Node) Revoke(ctx context.Context, host, reason string) (StatementResult, error) {
	a, err := n.anchorOrErr()
	if err != nil {
		return StatementResult{}, err
	}
	var id addr.NodeID
	if parsed, perr := addr.ParseNodeID(host); perr == nil {
		id = parsed
	} else {
		p, err := n.Resolve(ctx, host)
		if err != nil {
			return StatementResult{}, fmt.Errorf("revoke %s: %w (give the node ID if it is offline)", host, err)
		}
		id = p.NodeID
	}
	if id == n.cert.NodeID {
		return StatementResult{}, errors.New("an anchor does not revoke itself: ask the other anchors, or change the anchor set")
	}
	r, err := trust.NewRevocation(n.netID, id, reason, n.now())
	if err != nil {
		return StatementResult{}, err
	}
	if err := a.EndorseRevocation(r); err != nil {
		return StatementResult{}, err
	}
	return n.finish(r.Encode(), len(r.Endorsements))
}

// Cosign adds this anchor's endorsement to a statement token (revocation,
// anchor-set change, policy, or an invite) and publishes it once complete.
func (n *Node) Cosign(token string) (StatementResult, error) {
	a, err := n.anchorOrErr()
	if err != nil {
		return StatementResult{}, err
	}
	token = strings.TrimSpace(token)
	switch {
	case strings.HasPrefix(token, trust.InvitePrefix):
		tok, err := n.CosignInvite(token)
		if err != nil {
			return StatementResult{}, err
		}
		inv, _ := trust.ParseInvite(tok)
		return StatementResult{Token: tok, Endorsements: len(inv.Endorsements), Threshold: n.view.Set().Threshold}, nil
	case strings.HasPrefix(token, "weft-revoke1-"):
		r, err := trust.ParseRevocation(token)
		if err != nil {
			return StatementResult{}, err
		}
		if err := a.EndorseRevocation(r); err != nil {
			return StatementResult{}, err
		}
		return n.finish(r.Encode(), len(r.Endorsements))
	case strings.HasPrefix(token, "weft-change1-"):
		ch, err := trust.ParseAnchorChange(token)
		if err != nil {
			return StatementResult{}, err
		}
		if err := a.EndorseChange(ch); err != nil {
			return StatementResult{}, err
		}
		return n.finish(ch.Encode(), len(ch.Endorsements))
	case strings.HasPrefix(token, "weft-policy1-"):
		p, err := trust.ParsePolicy(token)
		if err != nil {
			return StatementResult{}, err
		}
		if err := a.EndorsePolicy(p); err != nil {
			return StatementResult{}, err
		}
		return n.finish(p.Encode(), len(p.Endorsements))
	}
	return StatementResult{}, errors.New("not a token to cosign: expected weft1- (invite), weft-revoke1-, weft-change1- or weft-policy1-")
}

// finish publishes a statement token if it verifies (has its quorum).
func (n *Node) finish(token string, endorsements int) (StatementResult, error) {
	res := StatementResult{Token: token, Endorsements: endorsements, Threshold: n.view.Set().Threshold}
	s, err := parseStatementToken(token)
	if err != nil {
		return res, err
	}
	if err := n.verifyStatement(s); err != nil {
		if errors.Is(err, trust.ErrTooFewEndorsements) {
			return res, nil // not complete yet: pass the token on
		}
		return res, err
	}
	if _, err := n.Publish(token); err != nil {
		return res, err
	}
	res.Published = true
	return res, nil
}

// verifyStatement checks a statement against the view without applying it.
func (n *Node) verifyStatement(s statement) error {
	switch s.kind {
	case kindRevocation:
		r, err := trust.UnmarshalRevocation(s.body)
		if err != nil {
			return err
		}
		return n.view.VerifyRevocation(r)
	case kindPolicy:
		p, err := trust.UnmarshalPolicy(s.body)
		if err != nil {
			return err
		}
		return n.view.VerifyPolicy(p)
	case kindChange:
		ch, err := trust.UnmarshalAnchorChange(s.body)
		if err != nil {
			return err
		}
		return n.view.VerifyChange(ch)
	}
	return fmt.Errorf("unknown statement kind %d", s.kind)
}

// ProposeAnchorChange starts an anchor-set change: the current set plus add,
// minus the anchors named in remove, with threshold t (0: the default for
// the new size). This anchor endorses it; cosign on others.
func (n *Node) ProposeAnchorChange(add []string, remove []string, threshold int) (StatementResult, error) {
	a, err := n.anchorOrErr()
	if err != nil {
		return StatementResult{}, err
	}
	set := n.view.Set()
	drop := map[string]bool{}
	for _, r := range remove {
		drop[strings.ToLower(r)] = true
	}
	var anchors []trust.AnchorInfo
	for _, ai := range set.Anchors {
		if drop[ai.Name] || drop[ai.NodeID().String()] {
			delete(drop, ai.Name)
			delete(drop, ai.NodeID().String())
			continue
		}
		anchors = append(anchors, ai)
	}
	for r := range drop {
		return StatementResult{}, fmt.Errorf("--remove %s: no anchor of that name or node ID in the current set", r)
	}
	for _, tok := range add {
		d, err := trust.ParseAnchorDescriptor(strings.TrimSpace(tok))
		if err != nil {
			return StatementResult{}, err
		}
		if err := d.Verify(); err != nil {
			return StatementResult{}, err
		}
		info := d.Info()
		if info.IPv4, err = freeAnchorIPv4(n.genesis.IPv4Prefix, info.NodeID(), anchors); err != nil {
			return StatementResult{}, err
		}
		anchors = append(anchors, info)
	}
	ch, err := trust.NewAnchorChange(set, anchors, threshold, n.now())
	if err != nil {
		return StatementResult{}, err
	}
	if err := a.EndorseChange(ch); err != nil {
		return StatementResult{}, err
	}
	return n.finish(ch.Encode(), len(ch.Endorsements))
}

// freeAnchorIPv4 picks a new anchor's address, avoiding the others'.
func freeAnchorIPv4(prefix netip.Prefix, id addr.NodeID, others []trust.AnchorInfo) (netip.Addr, error) {
	for attempt := 0; attempt < 1024; attempt++ {
		ip, err := trust.ProposeIPv4(prefix, id, attempt)
		if err != nil {
			return netip.Addr{}, err
		}
		taken := false
		for _, o := range others {
			taken = taken || o.IPv4 == ip
		}
		if !taken {
			return ip, nil
		}
	}
	return netip.Addr{}, errors.New("no free address for the new anchor")
}

// ProposePolicy starts a policy statement replacing the one in force. This
// anchor endorses it; cosign on others.
func (n *Node) ProposePolicy(rules []trust.Rule) (StatementResult, error) {
	a, err := n.anchorOrErr()
	if err != nil {
		return StatementResult{}, err
	}
	seq := uint64(1)
	if p := n.view.Policy(); p != nil {
		seq = p.Seq + 1
	}
	p, err := trust.NewPolicy(n.netID, seq, rules, n.now())
	if err != nil {
		return StatementResult{}, err
	}
	if err := a.EndorsePolicy(p); err != nil {
		return StatementResult{}, err
	}
	return n.finish(p.Encode(), len(p.Endorsements))
}

// GenesisToken returns the network's genesis as a token, for joins that
// wait for approval (`weft join --genesis TOKEN`).
func (n *Node) GenesisToken() string { return n.genesis.Encode() }
