package weft

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/trust"
)

// InitOptions configures a new network. Zero fields take the defaults shown.
type InitOptions struct {
	StateDir   string // DefaultStateDir()
	Network    string // "weft"
	Name       string // the host name, made a valid label, else "anchor"
	Domain     string // addr.DefaultDomain
	IPv4Prefix string // addr.DefaultIPv4Prefix
	// Anchors, if set, are the anchor descriptors (`weft keygen` output,
	// one per anchor, each made on its anchor's own machine) of a
	// multi-anchor network; the genesis lists exactly them, and Name is
	// ignored. If this state directory's identity is one of them, the
	// directory becomes that anchor's; otherwise only the genesis token is
	// produced, to hand to the anchors (`weft init --genesis TOKEN`).
	Anchors []string
	// Threshold is t for a multi-anchor network; zero means floor(2n/3)+1.
	Threshold int
	// Endpoints are this anchor's advertised addresses, written into the
	// genesis so that joining nodes can reach it.
	Endpoints []netip.AddrPort
}

// Membership describes the membership a state directory holds.
type Membership struct {
	StateDir  string         `json:"state_dir"`
	Network   string         `json:"network"`
	NetworkID addr.NetworkID `json:"network_id"`
	Domain    string         `json:"domain"`
	Name      string         `json:"name"`
	NodeID    addr.NodeID    `json:"node_id"`
	IPv4      netip.Addr     `json:"ipv4"`
	IPv6      netip.Addr     `json:"ipv6"`
	Anchor    bool           `json:"anchor"`
	// Genesis is the genesis token, for the other anchors of a new
	// multi-anchor network and for joins that wait for approval.
	Genesis string `json:"genesis,omitempty"`
}

// Init creates a one-anchor network whose anchor is this node, in a state
// directory that must not hold a membership yet.
func Init(opts InitOptions) (Membership, error) {
	dir := opts.StateDir
	if dir == "" {
		dir = DefaultStateDir()
	}
	if HasMembership(dir) {
		return Membership{}, fmt.Errorf("%s already holds a network membership; use another --state directory or remove it first", dir)
	}
	if opts.Network == "" {
		opts.Network = "weft"
	}
	if opts.Domain == "" {
		opts.Domain = addr.DefaultDomain
	}
	if opts.IPv4Prefix == "" {
		opts.IPv4Prefix = addr.DefaultIPv4Prefix
	}
	if opts.Name == "" {
		opts.Name = defaultName("anchor")
	}
	if err := addr.CheckName(opts.Name); err != nil {
		return Membership{}, fmt.Errorf("--name: %w", err)
	}
	if err := addr.CheckDomain(opts.Domain); err != nil {
		return Membership{}, fmt.Errorf("--domain: %w", err)
	}
	prefix, err := addr.ParseIPv4Prefix(opts.IPv4Prefix)
	if err != nil {
		return Membership{}, fmt.Errorf("--ipv4-prefix: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Membership{}, fmt.Errorf("create state directory: %w", err)
	}
	id, err := loadOrCreateIdentity(dir)
	if err != nil {
		return Membership{}, err
	}
	var g *trust.Genesis
	if len(opts.Anchors) > 0 {
		descs := make([]*trust.AnchorDescriptor, 0, len(opts.Anchors))
		for _, tok := range opts.Anchors {
			d, err := trust.ParseAnchorDescriptor(strings.TrimSpace(tok))
			if err != nil {
				return Membership{}, fmt.Errorf("--anchors: %w", err)
			}
			descs = append(descs, d)
		}
		g, err = trust.NewGenesisFromDescriptors(opts.Network, opts.Domain, prefix, descs, opts.Threshold, time.Now())
		if err != nil {
			return Membership{}, fmt.Errorf("create genesis: %w", err)
		}
		if _, ok := g.IsAnchor(id.SignPublic()); !ok {
			// Assembled for others: nothing to keep here but the token.
			return Membership{Network: g.Name, NetworkID: g.ID(), Domain: g.Domain, Genesis: g.Encode()}, nil
		}
		return installAnchor(dir, g, id)
	}
	g, err = trust.NewGenesis(opts.Network, opts.Domain, prefix,
		[]trust.AnchorInfo{{SignKey: id.SignPublic(), WGKey: id.WGPublic(), Name: opts.Name, Endpoints: opts.Endpoints}}, 1)
	if err != nil {
		return Membership{}, fmt.Errorf("create genesis: %w", err)
	}
	return installAnchor(dir, g, id)
}

// InitFromGenesis makes the state directory one of the anchors of the
// network a genesis token describes (the other anchors of a multi-anchor
// network run this with the token `weft init --anchors ...` printed). An
// anchor added later by anchor-set changes passes those change tokens too,
// in order; its identity must be an anchor of the resulting set.
func InitFromGenesis(dir, token string, changes ...string) (Membership, error) {
	if dir == "" {
		dir = DefaultStateDir()
	}
	if HasMembership(dir) {
		return Membership{}, fmt.Errorf("%s already holds a network membership; use another --state directory or remove it first", dir)
	}
	g, err := trust.ParseGenesisToken(strings.TrimSpace(token))
	if err != nil {
		return Membership{}, err
	}
	id, err := trust.LoadIdentity(dir)
	if err != nil {
		return Membership{}, fmt.Errorf("no identity in %s: run `weft keygen --state %s` first, on this machine: %w", dir, dir, err)
	}
	view := trust.NewView(g)
	for i, tok := range changes {
		ch, err := trust.ParseAnchorChange(strings.TrimSpace(tok))
		if err != nil {
			return Membership{}, fmt.Errorf("change %d: %w", i+1, err)
		}
		if err := view.ApplyChange(ch); err != nil {
			return Membership{}, fmt.Errorf("change %d: %w", i+1, err)
		}
	}
	if !view.IsAnchor(id.SignPublic()) {
		return Membership{}, fmt.Errorf("this node (%s) is not an anchor of network %q: members join with an invite (`weft join TOKEN`)", id.NodeID().Short(), g.Name)
	}
	if len(changes) > 0 {
		if err := trust.SaveView(dir, view); err != nil {
			return Membership{}, err
		}
	}
	return installAnchor(dir, g, id)
}

// Keygen creates (or reuses) the identity in dir and returns its anchor
// descriptor token, for assembling a multi-anchor genesis. The private keys
// never leave dir.
func Keygen(dir, name string, endpoints []netip.AddrPort) (string, error) {
	if dir == "" {
		dir = DefaultStateDir()
	}
	if name == "" {
		name = defaultName("anchor")
	}
	if err := addr.CheckName(name); err != nil {
		return "", fmt.Errorf("--name: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create state directory: %w", err)
	}
	id, err := loadOrCreateIdentity(dir)
	if err != nil {
		return "", err
	}
	d, err := trust.NewAnchorDescriptor(id, name, endpoints)
	if err != nil {
		return "", err
	}
	return d.Encode(), nil
}

// installAnchor writes an anchor's genesis, view and derived certificate.
func installAnchor(dir string, g *trust.Genesis, id *trust.Identity) (Membership, error) {
	if err := trust.SaveGenesis(dir, g); err != nil {
		return Membership{}, err
	}
	v, err := trust.LoadView(dir) // the anchor set after any changes
	if err != nil {
		return Membership{}, err
	}
	a, err := trust.OpenAnchorView(dir, v, id)
	if err != nil {
		return Membership{}, err
	}
	defer a.Close()
	cert, err := a.AdmitSelf("", time.Now())
	if err != nil {
		return Membership{}, fmt.Errorf("issue anchor certificate: %w", err)
	}
	if err := trust.SaveCertificate(dir, cert); err != nil {
		return Membership{}, err
	}
	m := membership(dir, g, cert, true)
	m.Genesis = g.Encode()
	return m, nil
}

func membership(dir string, g *trust.Genesis, c *trust.Certificate, anchor bool) Membership {
	return Membership{StateDir: dir, Network: g.Name, NetworkID: g.ID(), Domain: g.Domain, Name: c.Name,
		NodeID: c.NodeID, IPv4: c.IPv4, IPv6: c.IPv6(), Anchor: anchor}
}

// IsEmptyState reports whether dir holds no weft state at all (no identity,
// no genesis): the case where `weft up` creates a network by itself.
func IsEmptyState(dir string) bool {
	for _, f := range []string{trust.IdentityFile, trust.GenesisFile, trust.CertificateFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return false
		}
	}
	return true
}

// HasMembership reports whether dir holds a genesis and a certificate.
func HasMembership(dir string) bool {
	if _, err := trust.LoadGenesis(dir); err != nil {
		return false
	}
	_, err := trust.LoadCertificate(dir)
	return err == nil
}

// LoadMembership describes the membership in dir.
func LoadMembership(dir string) (Membership, error) {
	g, err := trust.LoadGenesis(dir)
	if err != nil {
		if isNotExist(err) {
			return Membership{}, ErrNotJoined
		}
		return Membership{}, err
	}
	c, err := trust.LoadCertificate(dir)
	if err != nil {
		if isNotExist(err) {
			return Membership{}, ErrNotJoined
		}
		return Membership{}, err
	}
	id, err := trust.LoadIdentity(dir)
	if err != nil {
		return Membership{}, err
	}
	_, anchor := g.IsAnchor(id.SignPublic())
	return membership(dir, g, c, anchor), nil
}

func loadOrCreateIdentity(dir string) (*trust.Identity, error) {
	id, err := trust.LoadIdentity(dir)
	if err == nil {
		return id, nil
	}
	if !isNotExist(err) {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	id, err = trust.NewIdentity()
	if err != nil {
		return nil, err
	}
	if err := trust.SaveIdentity(dir, id); err != nil {
		return nil, fmt.Errorf("save identity: %w", err)
	}
	return id, nil
}

// defaultName turns the host name into a valid node name.
func defaultName(fallback string) string {
	h, err := os.Hostname()
	if err != nil {
		return fallback
	}
	b := []byte(toLower(h))
	out := b[:0]
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			out = append(out, c)
		case c == '.':
			goto done
		}
	}
done:
	s := string(out)
	for len(s) > 0 && s[0] == '-' {
		s = s[1:]
	}
	for len(s) > 0 && s[len(s)-1] == '-' {
		s = s[:len(s)-1]
	}
	if len(s) > 63 {
		s = s[:63]
	}
	if addr.CheckName(s) != nil {
		return fallback
	}
	return s
}

// InviteOptions configures an invite token.
type InviteOptions struct {
	// Name binds the invite to one node name; empty lets the joiner pick.
	Name string
	// TTL is how long the invite is valid; zero means 24h.
	TTL time.Duration
	// Uses is how many nodes may join with it; zero means 1.
	Uses int
	// Tags go into the certificates of nodes joining with it (policy
	// rules match on them).
	Tags []string
}

// Invite creates an invite token on an anchor node, naming this node's
// advertised endpoints as bootstrap addresses.
func (n *Node) Invite(opts InviteOptions) (string, error) {
	a := n.anchorState()
	if a == nil {
		return "", ErrNotAnchor
	}
	n.mu.Lock()
	eps := append([]netip.AddrPort(nil), n.endpoints...)
	n.mu.Unlock()
	return makeInvite(a, opts, eps)
}

// InviteOffline creates an invite token from an anchor's state directory
// while its node is not running, naming the endpoints it last advertised
// (or bootstrap if given).
func InviteOffline(dir string, opts InviteOptions, bootstrap []netip.AddrPort) (string, error) {
	g, err := trust.LoadGenesis(dir)
	if err != nil {
		if isNotExist(err) {
			return "", ErrNotJoined
		}
		return "", err
	}
	id, err := trust.LoadIdentity(dir)
	if err != nil {
		return "", err
	}
	if _, ok := g.IsAnchor(id.SignPublic()); !ok {
		return "", ErrNotAnchor
	}
	if len(bootstrap) == 0 {
		st, err := loadNodeState(dir)
		if err != nil {
			return "", err
		}
		bootstrap = st.Endpoints
		if len(bootstrap) == 0 {
			return "", errors.New("this anchor has never run, so it does not know its address: start it with `weft up` (or pass --endpoint ADDR:PORT) and invite again")
		}
	}
	a, err := trust.OpenAnchor(dir, g, id)
	if err != nil {
		return "", err
	}
	defer a.Close()
	return makeInvite(a, opts, bootstrap)
}

func makeInvite(a *trust.Anchor, opts InviteOptions, bootstrap []netip.AddrPort) (string, error) {
	if opts.TTL == 0 {
		opts.TTL = 24 * time.Hour
	}
	if opts.Uses == 0 {
		opts.Uses = 1
	}
	if opts.TTL < 0 || opts.Uses < 0 {
		return "", errors.New("invite --ttl and --uses must be positive")
	}
	if opts.Name != "" {
		if err := addr.CheckName(opts.Name); err != nil {
			return "", fmt.Errorf("--name: %w", err)
		}
	}
	inv, err := a.IssueInvite(trust.InviteSpec{Name: opts.Name, Tags: opts.Tags, TTL: opts.TTL, Uses: opts.Uses, Bootstrap: bootstrap})
	if err != nil {
		return "", err
	}
	return inv.Encode(), nil
}

// handleJoin answers a join request (anchors only): this anchor's
// endorsement of exactly the certificate body the joiner proposed, or the
// typed reason it refuses (address taken: try the next candidate; pending
// approval: an operator must run `weft trust approve`).
func (n *Node) handleJoin(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	req, err := trust.UnmarshalJoinRequest(body)
	if err == nil && req.WGKey != from.Key {
		err = errors.New("join request key differs from the key that sealed it")
	}
	var resp *trust.JoinResponse
	if err == nil {
		var e *trust.Endorsement
		if a := n.anchorState(); a == nil {
			err = ErrNotAnchor
		} else {
			e, err = a.Endorse(req, n.now())
		}
		if err == nil {
			resp = endorsed(req.Certificate(), e)
		}
	}
	if err != nil {
		if !errors.Is(err, trust.ErrPendingApproval) {
			n.countReject(err)
		}
		n.logger.Warn("join not endorsed", "from", from.Addr, "reason", err)
		resp = trust.NewJoinResponse(nil, err)
	} else {
		n.logger.Info("endorsed joining node", "name", req.Name, "node_id", req.NodeID().Short(), "from", from.Addr)
	}
	return resp.Marshal()
}
