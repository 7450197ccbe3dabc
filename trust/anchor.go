package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/weft-net/weft/addr"
)

// Anchor defaults.
const (
	// DefaultCertValidity is how long certificates issued by an anchor are
	// valid when Anchor.CertValidity is zero.
	DefaultCertValidity = 365 * 24 * time.Hour
	// DefaultInviteTTL is the lifetime of an invite when NewInvite is given
	// ttl <= 0.
	DefaultInviteTTL = 24 * time.Hour
	// CertBackdate is how far before the admission time a certificate's
	// NotBefore is set, to tolerate clock skew between nodes.
	CertBackdate = 5 * time.Minute
	// ipv4HashProbes is how many hashed candidates (addr.IPv4 attempts) are
	// tried before falling back to a linear scan of the prefix.
	ipv4HashProbes = 64
)

// Anchor is the admission authority run by an anchor node. It checks join
// requests, allocates names and IPv4 addresses, and endorses
// certificates. Its state (invite use ledger, members with their names,
// addresses and certificates, next serial) lives in Dir/anchor/state.json,
// rewritten atomically before any result is returned, so a crash never
// loses an admission that a node was told about.
//
// Set the exported fields, then use the Anchor; they must not change
// afterwards. An Anchor is safe for concurrent use. OpenAnchor is the
// checked constructor; a literal &Anchor{...} works too and loads its state
// on first use. Close is idempotent; an Anchor holds no goroutines or open
// files, so Close only makes later calls fail with ErrClosed.
type Anchor struct {
	// Genesis is the network served. Required.
	Genesis *Genesis
	// Identity is this anchor's key; its public key must be in
	// Genesis.Anchors. Required.
	Identity *Identity
	// Dir is the node's state directory; anchor state is kept in
	// Dir/anchor. Required.
	Dir string
	// CertValidity is the lifetime of issued certificates; zero means
	// DefaultCertValidity.
	CertValidity time.Duration
	// Logger receives admission decisions; nil discards them.
	Logger *slog.Logger
	// Now is the clock used by NewInvite; nil means time.Now.
	Now func() time.Time

	mu sync.Mutex // guards the fields below and the state file
	// st is the persisted state; nil until loaded.
	st *anchorState
	// names and ips index st.Members.
	names map[string]addr.NodeID
	ips   map[netip.Addr]addr.NodeID
	log   *slog.Logger
	// closed is set by Close.
	closed bool
}

// Close marks the anchor closed: later NewInvite, Admit, AdmitSelf and
// Enroll calls fail with an error wrapping ErrClosed. State is written on
// every change, so there is nothing to flush. Close is idempotent and
// always returns nil.
func (a *Anchor) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	return nil
}

// AdmitSelf enrolls the anchor's own identity (see Enroll) under name; it
// is how the first node of a new network gets its certificate.
func (a *Anchor) AdmitSelf(name string, now time.Time) (*Certificate, error) {
	if a.Identity == nil {
		return nil, errors.New("trust anchor: Identity is required")
	}
	return a.Enroll(a.Identity.SignPublic(), a.Identity.WGPublic(), name, nil, now)
}

// anchorState is the JSON document in Dir/anchor/state.json.
type anchorState struct {
	Version    int                     `json:"version"`
	Network    addr.NetworkID          `json:"network"`
	NextSerial uint64                  `json:"next_serial"`
	Invites    map[string]*inviteEntry `json:"invites"` // by hex invite ID
	Members    map[addr.NodeID]*member `json:"members"`
}

const anchorStateVersion = 1

// inviteEntry is the use ledger of one invite.
type inviteEntry struct {
	// Issued is when this anchor issued the invite; zero if another anchor
	// did and this one first saw it in a join request.
	Issued   time.Time     `json:"issued,omitzero"`
	NotAfter time.Time     `json:"not_after"`
	MaxUses  int           `json:"max_uses"`
	Name     string        `json:"name,omitempty"`
	Used     []addr.NodeID `json:"used,omitempty"`
}

// member is one admitted node.
type member struct {
	Name     string     `json:"name"`
	IPv4     netip.Addr `json:"ipv4"`
	Admitted time.Time  `json:"admitted"`
	Cert     []byte     `json:"cert"` // Certificate.Marshal of the latest issued certificate
}

// OpenAnchor checks its arguments, loads (or initialises) the anchor state
// in dir/anchor and returns a ready Anchor with default options.
func OpenAnchor(dir string, g *Genesis, id *Identity) (*Anchor, error) {
	a := &Anchor{Genesis: g, Identity: id, Dir: dir}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Anchor) statePath() string { return filepath.Join(a.Dir, AnchorDir, anchorStateFile) }

func (a *Anchor) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// loadLocked checks the configuration and loads the state once.
func (a *Anchor) loadLocked() error {
	if a.closed {
		return ErrClosed
	}
	if a.st != nil {
		return nil
	}
	if a.Genesis == nil || a.Identity == nil || a.Dir == "" {
		return errors.New("trust anchor: Genesis, Identity and Dir are required")
	}
	if err := a.Genesis.Check(); err != nil {
		return fmt.Errorf("trust anchor: %w", err)
	}
	if len(a.Identity.Sign) != ed25519.PrivateKeySize {
		return errors.New("trust anchor: identity has no valid Ed25519 key")
	}
	if _, ok := a.Genesis.IsAnchor(a.Identity.SignPublic()); !ok {
		return fmt.Errorf("trust anchor: this node (%s) is not an anchor of network %s; only anchors can admit nodes",
			a.Identity.NodeID().Short(), a.Genesis.describe())
	}
	lg := a.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	a.log = lg.With("component", "trust/anchor")

	netID := a.Genesis.ID()
	path := a.statePath()
	b, err := readFileLimited(path)
	var st *anchorState
	switch {
	case errors.Is(err, fs.ErrNotExist):
		st = &anchorState{Version: anchorStateVersion, Network: netID, NextSerial: 1}
	case err != nil:
		return fmt.Errorf("trust anchor: load state: %w", err)
	default:
		st, err = decodeAnchorState(b)
		if err != nil {
			return fmt.Errorf("trust anchor: load state %s: %w", path, err)
		}
		if st.Network != netID {
			return fmt.Errorf("trust anchor: state %s belongs to network %s, not %s; use a separate --state directory per network",
				path, st.Network.Short(), a.Genesis.describe())
		}
	}
	if st.Invites == nil {
		st.Invites = map[string]*inviteEntry{}
	}
	if st.Members == nil {
		st.Members = map[addr.NodeID]*member{}
	}
	names := make(map[string]addr.NodeID, len(st.Members))
	ips := make(map[netip.Addr]addr.NodeID, len(st.Members))
	for id, m := range st.Members {
		if other, dup := names[m.Name]; dup {
			return fmt.Errorf("trust anchor: state %s is corrupt: name %q held by %s and %s", path, m.Name, id.Short(), other.Short())
		}
		if other, dup := ips[m.IPv4]; dup {
			return fmt.Errorf("trust anchor: state %s is corrupt: %v held by %s and %s", path, m.IPv4, id.Short(), other.Short())
		}
		names[m.Name] = id
		ips[m.IPv4] = id
	}
	a.st, a.names, a.ips = st, names, ips
	return nil
}

// decodeAnchorState parses and sanity-checks the state file.
func decodeAnchorState(b []byte) (*anchorState, error) {
	var st anchorState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	if st.Version != anchorStateVersion {
		return nil, fmt.Errorf("%w: state version %d not supported (want %d)", ErrMalformed, st.Version, anchorStateVersion)
	}
	for k, inv := range st.Invites {
		if inv == nil {
			return nil, fmt.Errorf("%w: invite %q has no entry", ErrMalformed, k)
		}
		if id, err := hex.DecodeString(k); err != nil || len(id) != 16 {
			return nil, fmt.Errorf("%w: bad invite ID %q", ErrMalformed, k)
		}
	}
	for id, m := range st.Members {
		if m == nil {
			return nil, fmt.Errorf("%w: member %s has no entry", ErrMalformed, id.Short())
		}
		if addr.CheckName(m.Name) != nil || !m.IPv4.Is4() {
			return nil, fmt.Errorf("%w: member %s has bad name %q or address %v", ErrMalformed, id.Short(), m.Name, m.IPv4)
		}
		c, err := UnmarshalCertificate(m.Cert)
		if err != nil {
			return nil, fmt.Errorf("member %s: %w", id.Short(), err)
		}
		if c.NodeID != id || c.Name != m.Name || c.IPv4 != m.IPv4 {
			return nil, fmt.Errorf("%w: member %s does not match its certificate", ErrMalformed, id.Short())
		}
	}
	return &st, nil
}

// saveLocked writes the state atomically.
func (a *Anchor) saveLocked() error {
	b, err := json.MarshalIndent(a.st, "", "\t")
	if err != nil {
		return err
	}
	return writeFileAtomic(a.statePath(), append(b, '\n'), 0o600)
}

// NewInvite issues an invite endorsed by this anchor and records it in the
// ledger. name, if not empty, binds the invite to that node name; ttl <= 0
// means DefaultInviteTTL; uses <= 0 means 1. In a network with Threshold >
// 1, other anchors must Endorse the invite before it verifies.
func (a *Anchor) NewInvite(name string, ttl time.Duration, uses int, bootstrap []netip.AddrPort) (*Invite, error) {
	if name != "" {
		if err := addr.CheckName(name); err != nil {
			return nil, fmt.Errorf("new invite: %w", err)
		}
	}
	if len(bootstrap) > MaxBootstrap {
		return nil, fmt.Errorf("new invite: %d bootstrap addresses, at most %d allowed", len(bootstrap), MaxBootstrap)
	}
	if ttl <= 0 {
		ttl = DefaultInviteTTL
	}
	if uses <= 0 {
		uses = 1
	}
	now := a.now().UTC()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return nil, err
	}
	inv := &Invite{
		Genesis:     a.Genesis,
		Name:        name,
		NotAfter:    now.Add(ttl).Truncate(time.Second),
		MaxUses:     uses,
		Bootstrap:   append([]netip.AddrPort(nil), bootstrap...),
		AnchorNode:  a.Identity.NodeID(),
		AnchorWGKey: a.Identity.WGPublic(),
	}
	if _, err := rand.Read(inv.ID[:]); err != nil {
		return nil, fmt.Errorf("new invite: %w", err)
	}
	if err := inv.Endorse(a.Identity.Sign); err != nil {
		return nil, fmt.Errorf("new invite: %w", err)
	}
	key := inv.IDString()
	a.st.Invites[key] = &inviteEntry{Issued: now, NotAfter: inv.NotAfter, MaxUses: uses, Name: name}
	if err := a.saveLocked(); err != nil {
		delete(a.st.Invites, key)
		return nil, fmt.Errorf("new invite: save state: %w", err)
	}
	a.log.Info("invite issued", "invite", key, "name", name, "uses", uses, "not_after", inv.NotAfter)
	return inv, nil
}

// Admit checks a join request at time now and returns a certificate
// endorsed by this anchor. It checks the request signature and time, the
// invite's endorsements, expiry and network, the invite's use limit in the
// persisted ledger, the name (the invite's bound name, the requested name,
// or "node-<short id>"), and allocates an IPv4 address. A node that already
// used this invite is not charged another use: if its certificate is still
// valid and its keys unchanged it gets the same certificate back, otherwise
// a reissued one with the same name and address. Rejections are
// *RejectError whose message tells the joining user what to do.
func (a *Anchor) Admit(req *JoinRequest, now time.Time) (*Certificate, error) {
	c, err := a.admit(req, now)
	if err != nil {
		r, _ := ReasonOf(err)
		a.logger().Info("join rejected", "node", req.NodeID().Short(), "reason", r, "err", err)
		return nil, err
	}
	return c, nil
}

func (a *Anchor) logger() *slog.Logger {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.log
}

func (a *Anchor) admit(req *JoinRequest, now time.Time) (*Certificate, error) {
	if err := req.Verify(); err != nil {
		return nil, err
	}
	if d := req.Time.Sub(now); d > JoinRequestSkew {
		return nil, reject(ReasonNotYetValid, "join request is dated %s, %v ahead of the anchor's clock (%s); fix this machine's clock and retry",
			fmtTime(req.Time), d.Round(time.Second), fmtTime(now))
	} else if -d > JoinRequestSkew {
		return nil, reject(ReasonExpired, "join request is dated %s, %v behind the anchor's clock (%s); fix this machine's clock and retry",
			fmtTime(req.Time), (-d).Round(time.Second), fmtTime(now))
	}
	inv, err := ParseInvite(req.Invite)
	if err != nil {
		return nil, err
	}
	if got, want := inv.Genesis.ID(), a.Genesis.ID(); got != want {
		return nil, reject(ReasonWrongNetwork, "invite is for network %q (id %s), but this anchor serves network %s; use an invite from an anchor of that network",
			inv.Genesis.Name, got.Short(), a.Genesis.describe())
	}
	if err := inv.Verify(now); err != nil {
		return nil, err
	}
	name := req.Name
	if inv.Name != "" {
		if name != "" && name != inv.Name {
			return nil, reject(ReasonInvalid, "invite is bound to the name %q, but the request asks for %q; join with --name %s or ask for an invite without a name",
				inv.Name, name, inv.Name)
		}
		name = inv.Name
	}
	return a.issue(req.SignKey, req.WGKey, name, nil, now, inv)
}

// Enroll admits a node on this anchor's own authority, without an invite:
// the anchor uses it for its own certificate, and operators for nodes they
// vouch for directly. An empty name means the existing name or
// "node-<short id>". Tags are written into the certificate.
func (a *Anchor) Enroll(signKey ed25519.PublicKey, wgKey [32]byte, name string, tags []string, now time.Time) (*Certificate, error) {
	if len(signKey) != ed25519.PublicKeySize {
		return nil, reject(ReasonMalformed, "enroll: signing key has %d bytes, want %d", len(signKey), ed25519.PublicKeySize)
	}
	if len(tags) > MaxTags {
		return nil, reject(ReasonInvalid, "enroll: %d tags, at most %d allowed", len(tags), MaxTags)
	}
	for _, t := range tags {
		if err := addr.CheckName(t); err != nil {
			return nil, reject(ReasonInvalid, "enroll: tag: %v", err)
		}
	}
	return a.issue(signKey, wgKey, name, tags, now, nil)
}

// issue allocates and records a membership and returns its certificate.
// inv is nil for Enroll.
func (a *Anchor) issue(signKey ed25519.PublicKey, wgKey [32]byte, name string, tags []string, now time.Time, inv *Invite) (*Certificate, error) {
	id := addr.NodeIDFromKey(signKey)
	if name != "" {
		if err := addr.CheckName(name); err != nil {
			return nil, reject(ReasonInvalid, "%v; choose another with `weft join --name`", err)
		}
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return nil, err
	}
	st := a.st
	old := st.Members[id]

	// Invite use ledger.
	var invKey string
	var oldEntry, newEntry *inviteEntry
	if inv != nil {
		invKey = inv.IDString()
		oldEntry = st.Invites[invKey]
		e := inviteEntry{NotAfter: inv.NotAfter, MaxUses: inv.MaxUses, Name: inv.Name}
		if oldEntry != nil {
			e = *oldEntry
		}
		used := false
		for _, u := range e.Used {
			if u == id {
				used = true
				break
			}
		}
		if !used {
			if len(e.Used) >= inv.MaxUses {
				return nil, reject(ReasonUseLimit, "invite %s has already been used by %d node(s), its limit; ask an anchor for a new one with `weft invite` (use --uses N for several nodes)",
					invKey, len(e.Used))
			}
			e.Used = append(append([]addr.NodeID(nil), e.Used...), id)
			newEntry = &e
		}
	}

	// Name.
	if old != nil {
		if name != "" && name != old.Name {
			return nil, reject(ReasonNameTaken, "this node is already a member named %q; rejoin without --name (or with --name %s), or ask an anchor to rename it",
				old.Name, old.Name)
		}
		name = old.Name
	} else {
		if name == "" {
			name = "node-" + id.Short()
		}
		if holder, taken := a.names[name]; taken && holder != id {
			return nil, reject(ReasonNameTaken, "the name %q already belongs to node %s in network %q; choose another with `weft join --name`",
				name, holder.Short(), a.Genesis.Name)
		}
	}

	// Same keys, same tags and a still-valid certificate, without a new
	// invite use: idempotent, hand back the certificate already issued.
	if old != nil && newEntry == nil {
		if c, err := UnmarshalCertificate(old.Cert); err == nil && c.WGKey == wgKey &&
			(tags == nil || slices.Equal(tags, c.Tags)) && c.Verify(a.Genesis, now) == nil {
			return c, nil
		}
	}

	// IPv4.
	var ip netip.Addr
	if old != nil {
		ip = old.IPv4
	} else {
		var err error
		if ip, err = a.allocIPv4Locked(id); err != nil {
			return nil, err
		}
	}

	validity := a.CertValidity
	if validity <= 0 {
		validity = DefaultCertValidity
	}
	if old != nil && tags == nil {
		if c, err := UnmarshalCertificate(old.Cert); err == nil {
			tags = c.Tags
		}
	}
	now = now.UTC()
	c := &Certificate{
		Network:   st.Network,
		NodeID:    id,
		SignKey:   append(ed25519.PublicKey(nil), signKey...),
		WGKey:     wgKey,
		Name:      name,
		IPv4:      ip,
		Tags:      append([]string(nil), tags...),
		NotBefore: now.Add(-CertBackdate).Truncate(time.Second),
		NotAfter:  now.Add(validity).Truncate(time.Second),
		Serial:    st.NextSerial,
	}
	if len(c.Tags) == 0 {
		c.Tags = nil
	}
	if err := c.Endorse(a.Identity.Sign); err != nil {
		return nil, err
	}
	cb, err := c.Marshal()
	if err != nil {
		return nil, err
	}
	m := &member{Name: name, IPv4: ip, Admitted: now, Cert: cb}
	if old != nil {
		m.Admitted = old.Admitted
	}

	// Commit, persist, or roll back.
	st.Members[id] = m
	st.NextSerial++
	if newEntry != nil {
		st.Invites[invKey] = newEntry
	}
	if err := a.saveLocked(); err != nil {
		st.NextSerial--
		if old != nil {
			st.Members[id] = old
		} else {
			delete(st.Members, id)
		}
		if newEntry != nil {
			if oldEntry != nil {
				st.Invites[invKey] = oldEntry
			} else {
				delete(st.Invites, invKey)
			}
		}
		return nil, fmt.Errorf("admit %s: save anchor state: %w", id.Short(), err)
	}
	a.names[name] = id
	a.ips[ip] = id
	a.log.Info("node admitted", "node", id.Short(), "name", name, "ipv4", ip, "serial", c.Serial, "invite", invKey, "rejoin", old != nil)
	return c, nil
}

// allocIPv4Locked picks a free IPv4 address for id: the first free
// addr.IPv4 candidate among ipv4HashProbes attempts, then the next free
// address after candidate 0 in a linear scan.
func (a *Anchor) allocIPv4Locked(id addr.NodeID) (netip.Addr, error) {
	p := a.Genesis.IPv4Prefix
	hosts := addr.IPv4Hosts(p)
	if len(a.ips) >= hosts {
		return netip.Addr{}, reject(ReasonPoolExhausted, "all %d IPv4 addresses of %v in network %q are taken; the network's anchors must remove nodes before admitting more",
			hosts, p, a.Genesis.Name)
	}
	first := netip.Addr{}
	for attempt := 0; attempt < ipv4HashProbes; attempt++ {
		ip, err := addr.IPv4(p, id, attempt)
		if err != nil {
			return netip.Addr{}, err
		}
		if attempt == 0 {
			first = ip
		}
		if _, taken := a.ips[ip]; !taken {
			return ip, nil
		}
	}
	base := p.Addr().As4()
	network := binary.BigEndian.Uint32(base[:])
	f := first.As4()
	off := binary.BigEndian.Uint32(f[:]) - network // 1..hosts
	for i := 0; i < hosts; i++ {
		off = off%uint32(hosts) + 1
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], network+off)
		ip := netip.AddrFrom4(b)
		if _, taken := a.ips[ip]; !taken {
			return ip, nil
		}
	}
	return netip.Addr{}, reject(ReasonPoolExhausted, "no free IPv4 address left in %v in network %q", p, a.Genesis.Name)
}

// Member returns the latest certificate issued to node id.
func (a *Anchor) Member(id addr.NodeID) (*Certificate, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.loadLocked() != nil {
		return nil, false
	}
	m := a.st.Members[id]
	if m == nil {
		return nil, false
	}
	c, err := UnmarshalCertificate(m.Cert)
	return c, err == nil
}

// Members returns the latest certificates of all admitted nodes, sorted by
// name.
func (a *Anchor) Members() ([]*Certificate, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return nil, err
	}
	out := make([]*Certificate, 0, len(a.st.Members))
	for _, m := range a.st.Members {
		c, err := UnmarshalCertificate(m.Cert)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// InviteUses returns how many distinct nodes have used the invite with the
// given ID according to this anchor's ledger.
func (a *Anchor) InviteUses(inviteID [16]byte) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.loadLocked() != nil {
		return 0
	}
	if e := a.st.Invites[hex.EncodeToString(inviteID[:])]; e != nil {
		return len(e.Used)
	}
	return 0
}
