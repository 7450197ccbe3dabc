package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
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
	// DefaultCertValidity is how long certificates are valid when
	// Anchor.CertValidity (or JoinSpec.Validity) is zero; anchors refuse
	// longer proposals than their CertValidity.
	DefaultCertValidity = 365 * 24 * time.Hour
	// DefaultInviteTTL is the lifetime of an invite when NewInvite is given
	// ttl <= 0.
	DefaultInviteTTL = 24 * time.Hour
	// CertBackdate is how far before the admission time a certificate's
	// NotBefore is set, to tolerate clock skew between nodes.
	CertBackdate = 5 * time.Minute
)

// Anchor is the admission authority run by an anchor node. Each anchor
// decides on its own: it checks join requests (invite or operator
// approval, use ledger, name and IPv4 not held by another node in its
// ledger) and endorses exactly the certificate body the joiner proposed;
// the joiner collects endorsements until it holds the threshold. It also
// co-signs invites, revocations, anchor-set changes and policies, never
// two different changes or policies with the same Seq.
//
// Its state (invite use ledger, members with their names, addresses and
// latest endorsed certificates, the pending-join queue, the Seqs it
// signed) lives in Dir/anchor/state.json, rewritten atomically before any
// result is returned, so a crash never loses a decision a node was told
// about.
//
// Set the exported fields, then use the Anchor; they must not change
// afterwards. An Anchor is safe for concurrent use. OpenAnchor is the
// checked constructor; a literal &Anchor{...} works too and loads its state
// on first use. Close is idempotent; an Anchor holds no goroutines or open
// files, so Close only makes later calls fail with ErrClosed.
type Anchor struct {
	// Genesis is the network served. Required unless View is set.
	Genesis *Genesis
	// View is what the anchor verifies against (current anchor set,
	// revocations); nil means NewView(Genesis). Share the node's View so
	// that anchor-set changes and revocations apply to both.
	View *View
	// Identity is this anchor's key; its public key must be an anchor of
	// the current set. Required.
	Identity *Identity
	// Dir is the node's state directory; anchor state is kept in
	// Dir/anchor. Required.
	Dir string
	// CertValidity is the longest certificate lifetime this anchor
	// endorses; zero means DefaultCertValidity.
	CertValidity time.Duration
	// Logger receives admission decisions; nil discards them.
	Logger *slog.Logger
	// Now is the clock used by NewInvite; nil means time.Now.
	Now func() time.Time

	mu sync.Mutex // guards the fields below and the state file
	// v is View or NewView(Genesis), set on load.
	v *View
	// st is the persisted state; nil until loaded.
	st *anchorState
	// names and ips index st.Members.
	names map[string]addr.NodeID
	ips   map[netip.Addr]addr.NodeID
	log   *slog.Logger
	// closed is set by Close.
	closed bool
}

// Close marks the anchor closed: later calls fail with an error wrapping
// ErrClosed. State is written on every change, so there is nothing to
// flush. Close is idempotent and always returns nil.
func (a *Anchor) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	return nil
}

// anchorState is the JSON document in Dir/anchor/state.json.
type anchorState struct {
	Version    int                     `json:"version"`
	Network    addr.NetworkID          `json:"network"`
	NextSerial uint64                  `json:"next_serial"`
	Invites    map[string]*inviteEntry `json:"invites"` // by hex invite ID
	Members    map[addr.NodeID]*member `json:"members"`
	// Pending are joins without invite, by node.
	Pending map[addr.NodeID]*PendingJoin `json:"pending,omitempty"`
	// Votes maps "change/SEQ" and "policy/SEQ" to the hex SHA-256 of the
	// body this anchor signed for that Seq: it never signs another.
	Votes map[string]string `json:"votes,omitempty"`
}

const anchorStateVersion = 1

// inviteEntry is the use ledger of one invite.
type inviteEntry struct {
	// Issued is when this anchor issued the invite; zero if another anchor
	// did and this one co-signed it or first saw it in a join request.
	Issued   time.Time     `json:"issued,omitzero"`
	NotAfter time.Time     `json:"not_after"`
	MaxUses  int           `json:"max_uses"`
	Name     string        `json:"name,omitempty"`
	Used     []addr.NodeID `json:"used,omitempty"`
}

// member is one node this anchor endorsed.
type member struct {
	Name     string     `json:"name"`
	IPv4     netip.Addr `json:"ipv4"`
	Admitted time.Time  `json:"admitted"`
	Cert     []byte     `json:"cert"` // Certificate.Marshal of the latest body endorsed, with this anchor's endorsement
}

// PendingState is the state of a join without invite.
type PendingState string

// Pending-join states.
const (
	PendingWaiting  PendingState = "pending"
	PendingApproved PendingState = "approved"
	PendingRejected PendingState = "rejected"
)

// PendingJoin is a join request without invite in this anchor's queue.
// Approval covers the node (its key), with the name and tags it asked for;
// the node may retry with other IPv4 candidates.
type PendingJoin struct {
	NodeID   addr.NodeID  `json:"node"`
	Name     string       `json:"name"`
	Tags     []string     `json:"tags,omitempty"`
	IPv4     netip.Addr   `json:"ipv4"`
	WGKey    [32]byte     `json:"wg_key"`
	Received time.Time    `json:"received"`
	State    PendingState `json:"state"`
	// Why is the operator's reason for a rejection.
	Why string `json:"why,omitempty"`
}

// OpenAnchor checks its arguments, loads (or initialises) the anchor state
// in dir/anchor and returns a ready Anchor with default options, verifying
// against NewView(g).
func OpenAnchor(dir string, g *Genesis, id *Identity) (*Anchor, error) {
	a := &Anchor{Genesis: g, Identity: id, Dir: dir}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return nil, err
	}
	return a, nil
}

// OpenAnchorView is OpenAnchor verifying against v, the node's view (with
// the anchor-set chain): an anchor added by a change is an anchor of v but
// not of the genesis.
func OpenAnchorView(dir string, v *View, id *Identity) (*Anchor, error) {
	a := &Anchor{Genesis: v.Genesis(), Identity: id, Dir: dir, View: v}
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

func (a *Anchor) validity() time.Duration {
	if a.CertValidity > 0 {
		return a.CertValidity
	}
	return DefaultCertValidity
}

// loadLocked checks the configuration and loads the state once.
func (a *Anchor) loadLocked() error {
	if a.closed {
		return ErrClosed
	}
	if a.st != nil {
		return nil
	}
	g := a.Genesis
	if a.View != nil {
		if g != nil && g.ID() != a.View.Network() {
			return errors.New("trust anchor: Genesis and View are of different networks")
		}
		g = a.View.Genesis()
	}
	if g == nil || a.Identity == nil || a.Dir == "" {
		return errors.New("trust anchor: Genesis (or View), Identity and Dir are required")
	}
	if err := g.Check(); err != nil {
		return fmt.Errorf("trust anchor: %w", err)
	}
	if len(a.Identity.Sign) != ed25519.PrivateKeySize {
		return errors.New("trust anchor: identity has no valid Ed25519 key")
	}
	v := a.View
	if v == nil {
		v = NewView(g)
	}
	if !v.IsAnchor(a.Identity.SignPublic()) {
		return fmt.Errorf("trust anchor: this node (%s) is not a current anchor of network %s; only anchors can admit nodes",
			a.Identity.NodeID().Short(), v.Set().describe())
	}
	lg := a.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	a.log = lg.With("component", "trust/anchor")

	netID := v.Network()
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
				path, st.Network.Short(), g.describe())
		}
	}
	if st.Invites == nil {
		st.Invites = map[string]*inviteEntry{}
	}
	if st.Members == nil {
		st.Members = map[addr.NodeID]*member{}
	}
	if st.Pending == nil {
		st.Pending = map[addr.NodeID]*PendingJoin{}
	}
	if st.Votes == nil {
		st.Votes = map[string]string{}
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
	a.v, a.st, a.names, a.ips = v, st, names, ips
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
	for id, p := range st.Pending {
		if p == nil || p.NodeID != id || addr.CheckName(p.Name) != nil || checkTags(p.Tags) != nil {
			return nil, fmt.Errorf("%w: pending join of %s is inconsistent", ErrMalformed, id.Short())
		}
		switch p.State {
		case PendingWaiting, PendingApproved, PendingRejected:
		default:
			return nil, fmt.Errorf("%w: pending join of %s has state %q", ErrMalformed, id.Short(), p.State)
		}
	}
	for k, h := range st.Votes {
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%w: vote %q has a bad hash", ErrMalformed, k)
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

// snapshot returns a deep copy of the state, to roll back to when a save
// fails.
func (a *Anchor) snapshotLocked() []byte {
	b, err := json.Marshal(a.st)
	if err != nil {
		panic("trust anchor: state does not marshal: " + err.Error())
	}
	return b
}

func (a *Anchor) restoreLocked(snap []byte) {
	var st anchorState
	if err := json.Unmarshal(snap, &st); err != nil {
		panic("trust anchor: snapshot does not unmarshal: " + err.Error())
	}
	if st.Invites == nil {
		st.Invites = map[string]*inviteEntry{}
	}
	if st.Members == nil {
		st.Members = map[addr.NodeID]*member{}
	}
	if st.Pending == nil {
		st.Pending = map[addr.NodeID]*PendingJoin{}
	}
	if st.Votes == nil {
		st.Votes = map[string]string{}
	}
	a.st = &st
	a.names = map[string]addr.NodeID{}
	a.ips = map[netip.Addr]addr.NodeID{}
	for id, m := range st.Members {
		a.names[m.Name] = id
		a.ips[m.IPv4] = id
	}
}

// commitLocked saves the state, rolling back to snap on failure.
func (a *Anchor) commitLocked(snap []byte, what string) error {
	if err := a.saveLocked(); err != nil {
		a.restoreLocked(snap)
		return fmt.Errorf("%s: save anchor state: %w", what, err)
	}
	return nil
}

// checkAnchorLocked refuses work when this anchor is no longer a current,
// unrevoked anchor.
func (a *Anchor) checkAnchorLocked() error {
	if !a.v.IsAnchor(a.Identity.SignPublic()) {
		return reject(ReasonNotAnchor, "this node (%s) is no longer a current anchor of network %s; ask another anchor",
			a.Identity.NodeID().Short(), a.v.Set().describe())
	}
	return nil
}

// InviteSpec describes an invite to issue.
type InviteSpec struct {
	// Name, if not empty, binds the invite to that node name.
	Name string
	// Tags are written into the certificates of nodes joining with it.
	Tags []string
	// TTL is the invite's lifetime; <= 0 means DefaultInviteTTL.
	TTL time.Duration
	// Uses is how many distinct nodes may join with it; <= 0 means 1.
	Uses int
	// Bootstrap are addresses to contact (typically this anchor).
	Bootstrap []netip.AddrPort
}

// NewInvite issues an invite endorsed by this anchor (see IssueInvite).
func (a *Anchor) NewInvite(name string, ttl time.Duration, uses int, bootstrap []netip.AddrPort) (*Invite, error) {
	return a.IssueInvite(InviteSpec{Name: name, TTL: ttl, Uses: uses, Bootstrap: bootstrap})
}

// IssueInvite issues an invite endorsed by this anchor, names this anchor
// as the one to contact, embeds the anchor-set chain, and records it in
// the ledger. With a threshold above 1, other anchors must co-sign it
// (CosignInvite) before it verifies.
func (a *Anchor) IssueInvite(spec InviteSpec) (*Invite, error) {
	if spec.Name != "" {
		if err := addr.CheckName(spec.Name); err != nil {
			return nil, fmt.Errorf("new invite: %w", err)
		}
	}
	if err := checkTags(spec.Tags); err != nil {
		return nil, fmt.Errorf("new invite: %w", err)
	}
	if len(spec.Bootstrap) > MaxBootstrap {
		return nil, fmt.Errorf("new invite: %d bootstrap addresses, at most %d allowed", len(spec.Bootstrap), MaxBootstrap)
	}
	if spec.TTL <= 0 {
		spec.TTL = DefaultInviteTTL
	}
	if spec.Uses <= 0 {
		spec.Uses = 1
	}
	now := a.now().UTC()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return nil, err
	}
	if err := a.checkAnchorLocked(); err != nil {
		return nil, err
	}
	chain := a.v.Chain()
	if len(chain) > MaxInviteChain {
		return nil, fmt.Errorf("new invite: the anchor-set chain has %d changes, more than an invite can carry (%d)", len(chain), MaxInviteChain)
	}
	inv := &Invite{
		Genesis:     a.v.Genesis(),
		Name:        spec.Name,
		Tags:        slices.Clone(spec.Tags),
		NotAfter:    now.Add(spec.TTL).Truncate(time.Second),
		MaxUses:     spec.Uses,
		Bootstrap:   slices.Clone(spec.Bootstrap),
		AnchorNode:  a.Identity.NodeID(),
		AnchorWGKey: a.Identity.WGPublic(),
		Chain:       chain,
	}
	if len(inv.Tags) == 0 {
		inv.Tags = nil
	}
	if _, err := rand.Read(inv.ID[:]); err != nil {
		return nil, fmt.Errorf("new invite: %w", err)
	}
	if err := inv.Endorse(a.Identity.Sign); err != nil {
		return nil, fmt.Errorf("new invite: %w", err)
	}
	key := inv.IDString()
	snap := a.snapshotLocked()
	a.st.Invites[key] = &inviteEntry{Issued: now, NotAfter: inv.NotAfter, MaxUses: spec.Uses, Name: spec.Name}
	if err := a.commitLocked(snap, "new invite"); err != nil {
		return nil, err
	}
	a.log.Info("invite issued", "invite", key, "name", spec.Name, "tags", spec.Tags, "uses", spec.Uses, "not_after", inv.NotAfter)
	return inv, nil
}

// CosignInvite adds this anchor's endorsement to inv, an invite issued by
// another anchor of the current set. It checks the network, expiry, name,
// tags and that AnchorNode is a current anchor, then records the invite in
// its ledger so its uses are counted here too.
func (a *Anchor) CosignInvite(inv *Invite) error {
	now := a.now().UTC()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return err
	}
	if err := a.checkAnchorLocked(); err != nil {
		return err
	}
	if inv.Genesis == nil || inv.Genesis.ID() != a.v.Network() {
		return reject(ReasonWrongNetwork, "invite is not for network %s; co-sign only invites of this network", a.v.Genesis().describe())
	}
	set := a.v.Set()
	if err := inv.verifyAt(set, nil, now); err != nil {
		if r, _ := ReasonOf(err); r != ReasonTooFewEndorsements && r != ReasonNotAnchor && r != ReasonBadSignature {
			return err
		}
	}
	if err := inv.Endorse(a.Identity.Sign); err != nil {
		return err
	}
	if chain := a.v.Chain(); len(chain) > len(inv.Chain) && len(chain) <= MaxInviteChain {
		inv.Chain = chain // the issuer's view was behind; carry the newer chain
	}
	key := inv.IDString()
	if _, ok := a.st.Invites[key]; !ok {
		snap := a.snapshotLocked()
		a.st.Invites[key] = &inviteEntry{NotAfter: inv.NotAfter, MaxUses: inv.MaxUses, Name: inv.Name}
		if err := a.commitLocked(snap, "co-sign invite"); err != nil {
			return err
		}
	}
	a.log.Info("invite co-signed", "invite", key, "issuer", inv.AnchorNode.Short())
	return nil
}

// Endorse checks a join request at time now and returns this anchor's
// endorsement of exactly the certificate body it proposes
// (req.Certificate()). It checks the request's signature and time, the
// network, the body (name, tags, IPv4 inside the prefix, validity window
// at most CertValidity), that the node is not revoked and not an anchor;
// then either the invite (threshold endorsements of the current set,
// expiry, bound name, tags, this anchor's use ledger) or, without invite,
// that this anchor's operator approved the node (otherwise the request is
// queued and refused with ReasonPendingApproval); then that no other node
// holds the name (ReasonNameTaken) or the address (ReasonAddressTaken:
// retry with the next candidate) in this anchor's ledger. A node that is
// already a member must propose its name and address again; it costs no
// invite use. Rejections are *RejectError.
func (a *Anchor) Endorse(req *JoinRequest, now time.Time) (*Endorsement, error) {
	e, err := a.endorseJoin(req, now)
	if err != nil {
		r, _ := ReasonOf(err)
		a.logger().Info("join refused", "node", req.NodeID().Short(), "reason", r, "err", err)
		return nil, err
	}
	return e, nil
}

// Admit is Endorse plus assembly: it returns req's certificate carrying
// this anchor's endorsement. In a one-anchor network (threshold 1) that
// is a valid certificate; otherwise the joiner merges the endorsements of
// threshold anchors (Certificate.AddEndorsement).
func (a *Anchor) Admit(req *JoinRequest, now time.Time) (*Certificate, error) {
	e, err := a.Endorse(req, now)
	if err != nil {
		return nil, err
	}
	c := req.Certificate()
	c.Endorsements = []Endorsement{*e}
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

func checkSkew(t, now time.Time, what string) error {
	if d := t.Sub(now); d > JoinRequestSkew {
		return reject(ReasonNotYetValid, "%s is dated %s, %v ahead of the anchor's clock (%s); fix this machine's clock and retry",
			what, fmtTime(t), d.Round(time.Second), fmtTime(now))
	} else if -d > JoinRequestSkew {
		return reject(ReasonExpired, "%s is dated %s, %v behind the anchor's clock (%s); fix this machine's clock and retry",
			what, fmtTime(t), (-d).Round(time.Second), fmtTime(now))
	}
	return nil
}

// checkWindow checks a proposed validity window at now.
func (a *Anchor) checkWindow(c *Certificate, now time.Time) error {
	switch {
	case !c.NotBefore.Before(c.NotAfter):
		return reject(ReasonInvalid, "proposed certificate of %s has an empty validity window", c.Name)
	case c.NotBefore.After(now.Add(JoinRequestSkew)):
		return reject(ReasonNotYetValid, "proposed certificate of %s starts at %s, in the future; fix this machine's clock and retry", c.Name, fmtTime(c.NotBefore))
	case c.NotBefore.Before(now.Add(-CertBackdate - JoinRequestSkew)):
		return reject(ReasonInvalid, "proposed certificate of %s starts at %s, too far in the past; propose a window starting now", c.Name, fmtTime(c.NotBefore))
	case c.NotAfter.Sub(c.NotBefore) > a.validity()+CertBackdate:
		return reject(ReasonInvalid, "proposed certificate of %s is valid for %v, longer than this anchor endorses (%v); propose a shorter validity",
			c.Name, c.NotAfter.Sub(c.NotBefore).Round(time.Hour), a.validity())
	case c.Serial == 0:
		return reject(ReasonInvalid, "proposed certificate of %s has serial 0, which is reserved for anchors", c.Name)
	}
	return nil
}

func (a *Anchor) endorseJoin(req *JoinRequest, now time.Time) (*Endorsement, error) {
	if err := req.Verify(); err != nil {
		return nil, err
	}
	if err := checkSkew(req.Time, now, "join request"); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return nil, err
	}
	if err := a.checkAnchorLocked(); err != nil {
		return nil, err
	}
	v := a.v
	if req.Network != v.Network() {
		return nil, reject(ReasonWrongNetwork, "join request is for network %s, but this anchor serves network %s; use an invite from an anchor of that network",
			req.Network.Short(), v.Genesis().describe())
	}
	if err := addr.CheckName(req.Name); err != nil {
		return nil, reject(ReasonInvalid, "%v; choose another with `weft join --name`", err)
	}
	body := req.Certificate()
	if err := body.checkContent(v.Genesis()); err != nil {
		return nil, err
	}
	if err := a.checkWindow(body, now); err != nil {
		return nil, err
	}
	var inv *Invite
	if req.Invite != "" {
		var err error
		if inv, err = ParseInvite(req.Invite); err != nil {
			return nil, err
		}
		if err := v.VerifyInvite(inv, now); err != nil {
			return nil, err
		}
		if inv.Name != "" && body.Name != inv.Name {
			return nil, reject(ReasonInvalid, "invite is bound to the name %q, but the request asks for %q; join with --name %s or ask for an invite without a name",
				inv.Name, body.Name, inv.Name)
		}
		if !slices.Equal(body.Tags, inv.Tags) {
			return nil, reject(ReasonInvalid, "join request proposes tags %v, but the invite grants %v; propose exactly the invite's tags", body.Tags, inv.Tags)
		}
	} else if err := a.checkApprovedLocked(req, now); err != nil {
		return nil, err
	}
	return a.endorseBodyLocked(body, inv, now)
}

// checkApprovedLocked decides a join without invite from the pending
// queue, queueing it if it is new.
func (a *Anchor) checkApprovedLocked(req *JoinRequest, now time.Time) error {
	id := req.NodeID()
	p := a.st.Pending[id]
	if p != nil && p.State == PendingRejected {
		return reject(ReasonDenied, "the operator of anchor %s rejected the join of %s (%s)%s; ask the network's operators",
			a.Identity.NodeID().Short(), req.Name, id.Short(), because(p.Why))
	}
	if p != nil && p.State == PendingApproved && p.Name == req.Name && slices.Equal(p.Tags, req.Tags) {
		return nil
	}
	if p == nil || p.State == PendingApproved || p.Name != req.Name || !slices.Equal(p.Tags, req.Tags) || p.WGKey != req.WGKey {
		snap := a.snapshotLocked()
		a.st.Pending[id] = &PendingJoin{NodeID: id, Name: req.Name, Tags: slices.Clone(req.Tags), IPv4: req.IPv4,
			WGKey: req.WGKey, Received: now.UTC(), State: PendingWaiting}
		if err := a.commitLocked(snap, "queue join"); err != nil {
			return err
		}
		a.log.Info("join queued for approval", "node", id.Short(), "name", req.Name, "tags", req.Tags)
	}
	return reject(ReasonPendingApproval, "join of %s (%s) waits for approval by the operator of anchor %s (`weft trust approve %s` there); retry later",
		req.Name, id.Short(), a.Identity.NodeID().Short(), id.Short())
}

func because(why string) string {
	if why == "" {
		return ""
	}
	return ": " + why
}

// holderLocked returns the node other than id holding name or ip among
// this anchor's unrevoked members and the current anchors.
func (a *Anchor) nameHolderLocked(name string, id addr.NodeID) (addr.NodeID, bool) {
	for _, an := range a.v.Set().Anchors {
		if an.Name == name && an.NodeID() != id {
			return an.NodeID(), true
		}
	}
	if h, ok := a.names[name]; ok && h != id {
		if _, revoked := a.v.Revoked(h); !revoked {
			return h, true
		}
	}
	return addr.NodeID{}, false
}

func (a *Anchor) ipHolderLocked(ip netip.Addr, id addr.NodeID) (addr.NodeID, bool) {
	for _, an := range a.v.Set().Anchors {
		if an.IPv4 == ip && an.NodeID() != id {
			return an.NodeID(), true
		}
	}
	if h, ok := a.ips[ip]; ok && h != id {
		if _, revoked := a.v.Revoked(h); !revoked {
			return h, true
		}
	}
	return addr.NodeID{}, false
}

// endorseBodyLocked checks body against the ledger (invite uses, name and
// address holders, revocation), records it and returns this anchor's
// endorsement. inv is nil for approved joins, Enroll and Renew.
func (a *Anchor) endorseBodyLocked(body *Certificate, inv *Invite, now time.Time) (*Endorsement, error) {
	id := body.NodeID
	g := a.v.Genesis()
	if r, ok := a.v.Revoked(id); ok {
		return nil, reject(ReasonRevoked, "node %s was revoked by the network's anchors (%s)%s; it cannot rejoin with this key — generate a new identity and ask for a new invite",
			id.Short(), fmtTime(r.Created), because(r.Reason))
	}
	if _, ok := a.v.Set().Anchor(id); ok {
		return nil, reject(ReasonInvalid, "node %s is an anchor; anchors are members through the anchor set and need no endorsed certificate", id.Short())
	}
	st := a.st
	old := st.Members[id]
	snap := a.snapshotLocked()

	// Invite use ledger.
	var invKey string
	if inv != nil {
		invKey = inv.IDString()
		e := st.Invites[invKey]
		if e == nil {
			e = &inviteEntry{NotAfter: inv.NotAfter, MaxUses: inv.MaxUses, Name: inv.Name}
			st.Invites[invKey] = e
		}
		if !slices.Contains(e.Used, id) {
			if len(e.Used) >= inv.MaxUses {
				a.restoreLocked(snap)
				return nil, reject(ReasonUseLimit, "invite %s has already been used by %d node(s), its limit; ask an anchor for a new one with `weft invite` (use --uses N for several nodes)",
					invKey, len(e.Used))
			}
			e.Used = append(e.Used, id)
		}
	}

	fail := func(err error) (*Endorsement, error) {
		a.restoreLocked(snap)
		return nil, err
	}
	if old != nil {
		if body.Name != old.Name {
			return fail(reject(ReasonNameTaken, "this node is already a member named %q; rejoin with --name %s, or ask the anchors to revoke it first",
				old.Name, old.Name))
		}
		if body.IPv4 != old.IPv4 {
			return fail(reject(ReasonAddressTaken, "this node already holds %v in network %q, not the proposed %v; propose the next candidate until you reach it",
				old.IPv4, g.Name, body.IPv4))
		}
	} else {
		if h, taken := a.nameHolderLocked(body.Name, id); taken {
			return fail(reject(ReasonNameTaken, "the name %q already belongs to node %s in network %q; choose another with `weft join --name`",
				body.Name, h.Short(), g.Name))
		}
		if h, taken := a.ipHolderLocked(body.IPv4, id); taken {
			if len(a.ips)+len(a.v.Set().Anchors) >= addr.IPv4Hosts(g.IPv4Prefix) {
				return fail(reject(ReasonPoolExhausted, "all %d IPv4 addresses of %v in network %q are taken; the network's anchors must remove nodes before admitting more",
					addr.IPv4Hosts(g.IPv4Prefix), g.IPv4Prefix, g.Name))
			}
			return fail(reject(ReasonAddressTaken, "address %v already belongs to node %s in network %q; propose the next candidate (attempt+1)",
				body.IPv4, h.Short(), g.Name))
		}
	}

	c := *body
	c.Endorsements = nil
	if err := c.Endorse(a.Identity.Sign); err != nil {
		return fail(err)
	}
	cb, err := c.Marshal()
	if err != nil {
		return fail(err)
	}
	m := &member{Name: c.Name, IPv4: c.IPv4, Admitted: now.UTC(), Cert: cb}
	if old != nil {
		m.Admitted = old.Admitted
	}
	st.Members[id] = m
	a.names[c.Name] = id
	a.ips[c.IPv4] = id
	if p := st.Pending[id]; p != nil && p.State == PendingApproved {
		delete(st.Pending, id)
	}
	if err := a.commitLocked(snap, "endorse "+id.Short()); err != nil {
		return nil, err
	}
	a.log.Info("node endorsed", "node", id.Short(), "name", c.Name, "ipv4", c.IPv4, "serial", c.Serial,
		"not_after", c.NotAfter, "invite", invKey, "rejoin", old != nil)
	e := cloneEndorsement(c.Endorsements[0])
	return &e, nil
}

// Enroll endorses a node on this anchor's own authority, without invite or
// queue: operators use it for nodes they vouch for directly. The anchor
// picks the address and serial. An empty name means the existing name or
// "node-<short id>". Tags are written into the certificate. In a
// one-anchor network the result is a valid certificate; otherwise other
// anchors must endorse the same body. An existing member whose latest
// certificate from this anchor is still valid, with the same keys and
// tags (or tags nil), gets that certificate back.
func (a *Anchor) Enroll(signKey ed25519.PublicKey, wgKey [32]byte, name string, tags []string, now time.Time) (*Certificate, error) {
	if len(signKey) != ed25519.PublicKeySize {
		return nil, reject(ReasonMalformed, "enroll: signing key has %d bytes, want %d", len(signKey), ed25519.PublicKeySize)
	}
	if err := checkTags(tags); err != nil {
		return nil, reject(ReasonInvalid, "enroll: %v", err)
	}
	if name != "" {
		if err := addr.CheckName(name); err != nil {
			return nil, reject(ReasonInvalid, "enroll: %v", err)
		}
	}
	id := addr.NodeIDFromKey(signKey)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return nil, err
	}
	if err := a.checkAnchorLocked(); err != nil {
		return nil, err
	}
	now = now.UTC()
	var ip netip.Addr
	if old := a.st.Members[id]; old != nil {
		if c, err := UnmarshalCertificate(old.Cert); err == nil && c.WGKey == wgKey && (name == "" || name == c.Name) &&
			(tags == nil || slices.Equal(tags, c.Tags)) && !now.Before(c.NotBefore) && !now.After(c.NotAfter) {
			return c, nil
		}
		if name == "" {
			name = old.Name
		}
		if tags == nil {
			if c, err := UnmarshalCertificate(old.Cert); err == nil {
				tags = c.Tags
			}
		}
		ip = old.IPv4
	} else {
		if name == "" {
			name = "node-" + id.Short()
		}
		var err error
		if ip, err = a.allocIPv4Locked(id); err != nil {
			return nil, err
		}
	}
	body := &Certificate{
		Network:   a.v.Network(),
		NodeID:    id,
		SignKey:   append(ed25519.PublicKey(nil), signKey...),
		WGKey:     wgKey,
		Name:      name,
		IPv4:      ip,
		Tags:      slices.Clone(tags),
		NotBefore: now.Add(-CertBackdate).Truncate(time.Second),
		NotAfter:  now.Add(a.validity()).Truncate(time.Second),
		Serial:    a.st.NextSerial,
	}
	if len(body.Tags) == 0 {
		body.Tags = nil
	}
	a.st.NextSerial++
	e, err := a.endorseBodyLocked(body, nil, now)
	if err != nil {
		return nil, err
	}
	body.Endorsements = []Endorsement{*e}
	return body, nil
}

// AdmitSelf returns this anchor's own certificate: AnchorCertificate of
// the current set. name is ignored (an anchor's name is in the anchor
// set); it is kept for callers of the one-anchor path.
func (a *Anchor) AdmitSelf(name string, now time.Time) (*Certificate, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return nil, err
	}
	return AnchorCertificate(a.v.Set(), a.Identity.SignPublic())
}

// allocIPv4Locked picks a free IPv4 address for id: the first
// ProposeIPv4 candidate no other node holds.
func (a *Anchor) allocIPv4Locked(id addr.NodeID) (netip.Addr, error) {
	g := a.v.Genesis()
	p := g.IPv4Prefix
	hosts := addr.IPv4Hosts(p)
	if len(a.ips)+len(a.v.Set().Anchors) >= hosts {
		return netip.Addr{}, reject(ReasonPoolExhausted, "all %d IPv4 addresses of %v in network %q are taken; the network's anchors must remove nodes before admitting more",
			hosts, p, g.Name)
	}
	for attempt := 0; ; attempt++ {
		ip, err := ProposeIPv4(p, id, attempt)
		if err != nil {
			return netip.Addr{}, err
		}
		if _, taken := a.ipHolderLocked(ip, id); !taken {
			return ip, nil
		}
	}
}

// Pending returns this anchor's queue of joins without invite — waiting,
// approved (until the node collects its endorsement) and rejected — oldest
// first.
func (a *Anchor) Pending() []PendingJoin {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.loadLocked() != nil {
		return nil
	}
	out := make([]PendingJoin, 0, len(a.st.Pending))
	for _, p := range a.st.Pending {
		c := *p
		c.Tags = slices.Clone(p.Tags)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Received.Equal(out[j].Received) {
			return out[i].Received.Before(out[j].Received)
		}
		return bytes.Compare(out[i].NodeID[:], out[j].NodeID[:]) < 0
	})
	return out
}

// Approve lets the queued node id join with the name and tags it asked
// for: its next join request is endorsed by this anchor.
func (a *Anchor) Approve(id addr.NodeID) error { return a.decide(id, PendingApproved, "") }

// Reject refuses the queued node id; its join requests are answered with
// ReasonDenied and why.
func (a *Anchor) Reject(id addr.NodeID, why string) error {
	if err := checkText(why); err != nil {
		return fmt.Errorf("reject: reason %v", err)
	}
	return a.decide(id, PendingRejected, why)
}

func (a *Anchor) decide(id addr.NodeID, state PendingState, why string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return err
	}
	p := a.st.Pending[id]
	if p == nil {
		return fmt.Errorf("no join of node %s is queued at this anchor; list the queue with `weft trust pending`", id.Short())
	}
	snap := a.snapshotLocked()
	p.State, p.Why = state, why
	if err := a.commitLocked(snap, string(state)+" "+id.Short()); err != nil {
		return err
	}
	a.log.Info("pending join decided", "node", id.Short(), "name", p.Name, "state", state, "why", why)
	return nil
}

// Renew checks a renew request at now and returns this anchor's
// endorsement of the renewed body (req.Certificate()): the request is
// signed by the certificate's key and current, the certificate verifies
// against the current anchor set (so the node is not revoked), it is not
// an anchor certificate, the new window ends after the old one and is no
// longer than CertValidity, and the node's name and address are not held
// by another node in this anchor's ledger.
func (a *Anchor) Renew(req *RenewRequest, now time.Time) (*Endorsement, error) {
	e, err := a.renew(req, now)
	if err != nil {
		r, _ := ReasonOf(err)
		node := "?"
		if req.Cert != nil {
			node = req.Cert.NodeID.Short()
		}
		a.logger().Info("renewal refused", "node", node, "reason", r, "err", err)
	}
	return e, err
}

func (a *Anchor) renew(req *RenewRequest, now time.Time) (*Endorsement, error) {
	if err := req.Verify(); err != nil {
		return nil, err
	}
	if err := checkSkew(req.Time, now, "renew request"); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return nil, err
	}
	if err := a.checkAnchorLocked(); err != nil {
		return nil, err
	}
	if err := a.v.VerifyCertificate(req.Cert, now); err != nil {
		return nil, err
	}
	if len(req.Cert.Endorsements) == 0 {
		return nil, reject(ReasonInvalid, "anchor certificates are derived from the anchor set and never need renewal")
	}
	body := req.Certificate()
	if !body.NotAfter.After(req.Cert.NotAfter) {
		return nil, reject(ReasonInvalid, "renewal of %s would end at %s, not after the current certificate (%s); propose a later NotAfter",
			body.Name, fmtTime(body.NotAfter), fmtTime(req.Cert.NotAfter))
	}
	if err := a.checkWindow(body, now); err != nil {
		return nil, err
	}
	return a.endorseBodyLocked(body, nil, now)
}

// voteLocked records that this anchor signs hash for kind/seq, refusing a
// different hash for the same kind and seq. It returns a restore snapshot
// or nil if the vote was already recorded.
func (a *Anchor) voteLocked(kind string, seq uint64, hash [32]byte) ([]byte, error) {
	key := fmt.Sprintf("%s/%d", kind, seq)
	h := hex.EncodeToString(hash[:])
	if old, ok := a.st.Votes[key]; ok {
		if old != h {
			return nil, reject(ReasonFork, "this anchor already endorsed a different %s with seq %d (%s…); it signs at most one %s per seq — propose seq %d instead or endorse the same one",
				kind, seq, old[:12], kind, seq+1)
		}
		return nil, nil
	}
	snap := a.snapshotLocked()
	a.st.Votes[key] = h
	if err := a.commitLocked(snap, "record "+key); err != nil {
		return nil, err
	}
	return snap, nil
}

// EndorseChange adds this anchor's endorsement to ch after checking that
// it follows the current anchor set (network, Seq, Prev, a valid new set)
// and that no new anchor takes the name or address of another node in
// this anchor's ledger. It refuses (ReasonFork) to endorse a change with a
// Seq for which it already endorsed a different change, and records its
// choice before signing, so a crash cannot make it equivocate.
func (a *Anchor) EndorseChange(ch *AnchorChange) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.loadLocked(); err != nil {
		return err
	}
	if err := a.checkAnchorLocked(); err != nil {
		return err
	}
	if err := a.v.Set().checkChange(ch); err != nil {
		return err
	}
	for _, an := range ch.Anchors {
		if h, taken := a.names[an.Name]; taken && h != an.NodeID() {
			if _, revoked := a.v.Revoked(h); !revoked {
				return reject(ReasonNameTaken, "anchor-set change %d names anchor %q, but that name belongs to node %s; choose another name", ch.Seq, an.Name, h.Short())
			}
		}
		if h, taken := a.ips[an.IPv4]; taken && h != an.NodeID() {
			if _, revoked := a.v.Revoked(h); !revoked {
				return reject(ReasonAddressTaken, "anchor-set change %d gives anchor %s address %v, which belongs to node %s; choose another address", ch.Seq, an.Name, an.IPv4, h.Short())
			}
		}
	}
	if _, err := a.voteLocked("change", ch.Seq, ch.Hash()); err != nil {
		return err
	}
	if err := ch.Endorse(a.Identity.Sign); err != nil {
		return err
	}
	a.log.Info("anchor-set change endorsed", "seq", ch.Seq, "anchors", len(ch.Anchors), "threshold", ch.Threshold)
	return nil
}

// beginStatementLocked checks that this anchor can endorse a statement of
// network: its state loads, it is still an anchor, the network is its own.
func (a *Anchor) beginStatementLocked(kind string, network addr.NetworkID) error {
	if err := a.loadLocked(); err != nil {
		return err
	}
	if err := a.checkAnchorLocked(); err != nil {
		return err
	}
	if network != a.v.Network() {
		return reject(ReasonWrongNetwork, "%s is for network %s, not %s", kind, network.Short(), a.v.Genesis().describe())
	}
	return nil
}

// EndorseRevocation adds this anchor's endorsement to r after checking
// that it is for this network and well-formed.
func (a *Anchor) EndorseRevocation(r *Revocation) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.beginStatementLocked("revocation", r.Network); err != nil {
		return err
	}
	if err := r.checkContent(); err != nil {
		return err
	}
	if err := r.Endorse(a.Identity.Sign); err != nil {
		return err
	}
	a.log.Info("revocation endorsed", "node", r.NodeID.Short(), "reason", r.Reason)
	return nil
}

// EndorsePolicy adds this anchor's endorsement to p after checking that it
// is for this network, well-formed and newer than the policy in force. It
// refuses (ReasonFork) to endorse a different policy with a Seq it already
// endorsed.
func (a *Anchor) EndorsePolicy(p *Policy) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.beginStatementLocked("policy", p.Network); err != nil {
		return err
	}
	if err := p.checkContent(); err != nil {
		return err
	}
	if cur := a.v.Policy(); cur != nil && p.Seq <= cur.Seq {
		return reject(ReasonReplayed, "policy %d is not newer than the policy in force (%d); propose seq %d", p.Seq, cur.Seq, cur.Seq+1)
	}
	if _, err := a.voteLocked("policy", p.Seq, sha256.Sum256(bodyOf(p))); err != nil {
		return err
	}
	if err := p.Endorse(a.Identity.Sign); err != nil {
		return err
	}
	a.log.Info("policy endorsed", "seq", p.Seq, "rules", len(p.Rules))
	return nil
}

// Member returns the latest certificate this anchor endorsed for node id
// (carrying only this anchor's endorsement).
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

// Members returns the latest certificates this anchor endorsed, sorted by
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
