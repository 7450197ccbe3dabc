package weft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
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
	g, err := trust.NewGenesis(opts.Network, opts.Domain, prefix,
		[]trust.AnchorInfo{{SignKey: id.SignPublic(), WGKey: id.WGPublic(), Name: opts.Name}}, 1)
	if err != nil {
		return Membership{}, fmt.Errorf("create genesis: %w", err)
	}
	if err := trust.SaveGenesis(dir, g); err != nil {
		return Membership{}, err
	}
	a, err := trust.OpenAnchor(dir, g, id)
	if err != nil {
		return Membership{}, err
	}
	defer a.Close()
	cert, err := a.AdmitSelf(opts.Name, time.Now())
	if err != nil {
		return Membership{}, fmt.Errorf("issue anchor certificate: %w", err)
	}
	if err := trust.SaveCertificate(dir, cert); err != nil {
		return Membership{}, err
	}
	return membership(dir, g, cert, true), nil
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
}

// Invite creates an invite token on an anchor node, naming this node's
// advertised endpoints as bootstrap addresses.
func (n *Node) Invite(opts InviteOptions) (string, error) {
	if n.anchor == nil {
		return "", ErrNotAnchor
	}
	n.mu.Lock()
	eps := append([]netip.AddrPort(nil), n.endpoints...)
	n.mu.Unlock()
	return makeInvite(n.anchor, opts, eps)
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
	inv, err := a.NewInvite(opts.Name, opts.TTL, opts.Uses, bootstrap)
	if err != nil {
		return "", err
	}
	return inv.Encode(), nil
}

// handleJoin admits a node presenting an invite (anchors only).
func (n *Node) handleJoin(ctx context.Context, from nat.Peer, body []byte) ([]byte, error) {
	req, err := trust.UnmarshalJoinRequest(body)
	var resp trust.JoinResponse
	if err == nil && req.WGKey != from.Key {
		err = errors.New("join request key differs from the key that sealed it")
	}
	if err == nil {
		var cert *trust.Certificate
		cert, err = n.anchor.Admit(req, n.now())
		if err == nil {
			resp.Cert, err = cert.Marshal()
		}
	}
	if err != nil {
		n.countReject(err)
		n.logger.Warn("join refused", "from", from.Addr, "reason", err)
		resp = *trust.NewJoinResponse(nil, err)
	} else {
		n.logger.Info("admitted node", "from", from.Addr)
	}
	return resp.Marshal()
}

// JoinOptions configures Join.
type JoinOptions struct {
	StateDir string // DefaultStateDir()
	Token    string
	// Name is the node name to ask for; empty means the invite's bound name,
	// else the host name.
	Name string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Join presents an invite to the anchor named in it and stores the
// certificate it returns, with the network's genesis and bootstrap nodes.
func Join(ctx context.Context, opts JoinOptions) (Membership, error) {
	dir := opts.StateDir
	if dir == "" {
		dir = DefaultStateDir()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	inv, err := trust.ParseInvite(opts.Token)
	if err != nil {
		return Membership{}, err
	}
	now := time.Now()
	if err := inv.Verify(now); err != nil {
		return Membership{}, err
	}
	if g, err := trust.LoadGenesis(dir); err == nil {
		if g.ID() != inv.Genesis.ID() {
			return Membership{}, fmt.Errorf("%s already belongs to network %q (%s); this invite is for %q (%s): use another --state directory",
				dir, g.Name, g.ID().Short(), inv.Genesis.Name, inv.Genesis.ID().Short())
		}
		if HasMembership(dir) {
			return Membership{}, fmt.Errorf("%s is already a member of %q; run `weft up`", dir, g.Name)
		}
	}
	name := opts.Name
	if name == "" {
		name = inv.Name
	}
	if name == "" {
		name = defaultName("node")
	}
	if err := addr.CheckName(name); err != nil {
		return Membership{}, fmt.Errorf("--name: %w", err)
	}
	if len(inv.Bootstrap) == 0 {
		return Membership{}, errors.New("the invite names no anchor address; ask the anchor for a new one with `weft invite`")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Membership{}, fmt.Errorf("create state directory: %w", err)
	}
	id, err := loadOrCreateIdentity(dir)
	if err != nil {
		return Membership{}, err
	}
	req, err := trust.NewJoinRequest(opts.Token, id, name, now)
	if err != nil {
		return Membership{}, err
	}
	body, err := req.Marshal()
	if err != nil {
		return Membership{}, err
	}
	c, err := nat.Listen(nat.Config{PrivateKey: id.WG, Logger: opts.Logger})
	if err != nil {
		return Membership{}, fmt.Errorf("open UDP socket: %w", err)
	}
	defer c.Close()
	var lastErr error
	for _, ap := range inv.Bootstrap {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := c.Call(cctx, nat.Peer{Addr: ap, Key: inv.AnchorWGKey}, nat.MsgJoin, body)
		cancel()
		if err != nil {
			lastErr = fmt.Errorf("anchor at %s: %w", ap, err)
			continue
		}
		resp, err := trust.UnmarshalJoinResponse(out)
		if err != nil {
			lastErr = fmt.Errorf("anchor at %s sent a bad answer: %w", ap, err)
			continue
		}
		if err := resp.Err(); err != nil {
			return Membership{}, err
		}
		cert, err := trust.UnmarshalCertificate(resp.Cert)
		if err != nil {
			return Membership{}, fmt.Errorf("anchor sent a bad certificate: %w", err)
		}
		if err := cert.Verify(inv.Genesis, time.Now()); err != nil {
			return Membership{}, fmt.Errorf("anchor sent a certificate that does not verify: %w", err)
		}
		if cert.NodeID != id.NodeID() || cert.WGKey != id.WGPublic() {
			return Membership{}, errors.New("anchor sent a certificate for another identity")
		}
		if err := trust.SaveGenesis(dir, inv.Genesis); err != nil {
			return Membership{}, err
		}
		if err := trust.SaveCertificate(dir, cert); err != nil {
			return Membership{}, err
		}
		st, err := loadNodeState(dir)
		if err != nil {
			return Membership{}, err
		}
		st.Bootstrap = mergeAddrPorts(st.Bootstrap, inv.Bootstrap...)
		if err := saveNodeState(dir, st); err != nil {
			return Membership{}, err
		}
		return membership(dir, inv.Genesis, cert, false), nil
	}
	return Membership{}, fmt.Errorf("could not reach the anchor named in the invite (is `weft up` running there?): %w", lastErr)
}
