package weft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/nat"
	"github.com/weft-net/weft/trust"
)

// JoinOptions configures Join.
type JoinOptions struct {
	StateDir string // DefaultStateDir()
	// Token is an invite endorsed by the network's threshold of anchors.
	// Without one, Genesis must be given and the request waits in every
	// anchor's queue until t operators approve it (`weft trust approve`).
	Token string
	// Genesis is the network's genesis token (weft-genesis1-...), for a
	// join without invite.
	Genesis string
	// Name is the node name to ask for; empty means the invite's bound name,
	// else the host name.
	Name string
	// Anchors are extra addresses of anchors to ask, beyond those in the
	// genesis, the anchor-set chain and the invite.
	Anchors []netip.AddrPort
	// Wait is how long to keep asking while approvals are pending; zero
	// means not at all.
	Wait time.Duration
	// Validity is the certificate lifetime to ask for; zero means the
	// anchors' default (one year). The node renews it automatically in the
	// last third.
	Validity time.Duration
	// Progress, if set, receives one line per step ("2 of 3 endorsements").
	Progress func(string)
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// anchorContact is where to reach one anchor.
type anchorContact struct {
	name  string
	key   [32]byte
	addrs []netip.AddrPort
}

// Join asks the network's anchors to endorse this node's certificate and
// stores it, with the genesis and bootstrap addresses, once t distinct
// anchors have. Each anchor checks the invite (or its operator's approval)
// on its own; the joiner proposes the certificate body, moving to the next
// address candidate when an anchor reports the address taken.
func Join(ctx context.Context, opts JoinOptions) (Membership, error) {
	dir := opts.StateDir
	if dir == "" {
		dir = DefaultStateDir()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string) {}
	}
	now := time.Now()
	var g *trust.Genesis
	var inv *trust.Invite
	view := (*trust.View)(nil)
	switch {
	case opts.Token != "":
		var err error
		if inv, err = trust.ParseInvite(opts.Token); err != nil {
			return Membership{}, err
		}
		g = inv.Genesis
		view = trust.NewView(g)
		if _, err := view.ApplyChain(inv.Chain); err != nil {
			return Membership{}, fmt.Errorf("the invite's anchor-set chain does not verify: %w", err)
		}
		if err := view.VerifyInvite(inv, now); err != nil {
			return Membership{}, err
		}
	case opts.Genesis != "":
		var err error
		if g, err = trust.ParseGenesisToken(opts.Genesis); err != nil {
			return Membership{}, err
		}
		view = trust.NewView(g)
	default:
		return Membership{}, errors.New("join needs an invite token (`weft invite` on an anchor) or, to wait for approval, the network's genesis (--genesis)")
	}
	if old, err := trust.LoadGenesis(dir); err == nil {
		if old.ID() != g.ID() {
			return Membership{}, fmt.Errorf("%s already belongs to network %q (%s); this invite is for %q (%s): use another --state directory",
				dir, old.Name, old.ID().Short(), g.Name, g.ID().Short())
		}
		if HasMembership(dir) {
			return Membership{}, fmt.Errorf("%s is already a member of %q; run `weft up`", dir, old.Name)
		}
	}
	name := opts.Name
	if name == "" && inv != nil {
		name = inv.Name
	}
	if name == "" {
		name = defaultName("node")
	}
	if err := addr.CheckName(name); err != nil {
		return Membership{}, fmt.Errorf("--name: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Membership{}, fmt.Errorf("create state directory: %w", err)
	}
	id, err := loadOrCreateIdentity(dir)
	if err != nil {
		return Membership{}, err
	}
	c, err := nat.Listen(nat.Config{PrivateKey: id.WG, Logger: opts.Logger})
	if err != nil {
		return Membership{}, fmt.Errorf("open UDP socket: %w", err)
	}
	defer c.Close()

	contacts := joinContacts(ctx, c, view, inv, opts.Anchors)
	if len(contacts) == 0 {
		return Membership{}, errors.New("no anchor address known: the genesis and invite name none; pass --anchor ADDR:PORT of an anchor")
	}
	var tags []string
	if inv != nil {
		tags = inv.Tags
	}
	deadline := time.Now().Add(opts.Wait)
	t := view.Set().Threshold
	for attempt := 0; ; {
		req, err := trust.NewJoinRequestSpec(id, trust.JoinSpec{Invite: opts.Token, Genesis: g, Name: name, Tags: tags, Attempt: attempt, Validity: opts.Validity}, time.Now())
		if err != nil {
			return Membership{}, err
		}
		body, err := req.Marshal()
		if err != nil {
			return Membership{}, err
		}
		cert := req.Certificate()
		res := askAnchors(ctx, c, contacts, body)
		var pending, taken int
		var errs []error
		for _, r := range res {
			switch {
			case r.err == nil:
				for _, e := range r.cert.Endorsements {
					if err := cert.AddEndorsement(e); err != nil {
						errs = append(errs, fmt.Errorf("anchor %s: %w", r.name, err))
					}
				}
			case errors.Is(r.err, trust.ErrAddressTaken):
				taken++
			case errors.Is(r.err, trust.ErrPendingApproval):
				pending++
			default:
				errs = append(errs, fmt.Errorf("anchor %s: %w", r.name, r.err))
			}
		}
		if err := view.VerifyCertificate(cert, time.Now()); err == nil {
			progress(fmt.Sprintf("%d of %d endorsements: admitted", len(cert.Endorsements), t))
			return saveJoined(dir, g, view, cert, inv, contacts)
		}
		if len(cert.Endorsements)+pending+taken < t {
			// Too many anchors refused (or are out of reach) for this
			// request ever to reach t: say why rather than wait.
			if len(errs) == 0 {
				errs = append(errs, errors.New("no anchor answered"))
			}
			return Membership{}, fmt.Errorf("%d of %d endorsements possible: %w", len(cert.Endorsements)+pending+taken, t, errors.Join(errs...))
		}
		switch {
		case taken > 0 && attempt < 256:
			attempt++
			progress(fmt.Sprintf("address %s is taken; trying the next one", cert.IPv4))
			continue
		case pending > 0 && time.Now().Before(deadline):
			progress(fmt.Sprintf("%d of %d endorsements; %d anchor(s) waiting for an operator to run `weft trust approve %s`",
				len(cert.Endorsements), t, pending, id.NodeID().Short()))
			select {
			case <-ctx.Done():
				return Membership{}, ctx.Err()
			case <-time.After(2 * time.Second):
			}
			continue
		case pending > 0:
			return Membership{}, fmt.Errorf("%d of %d endorsements; the request waits for approval on %d anchor(s): ask their operators to run `weft trust approve %s`, then run this join again (or pass --wait)",
				len(cert.Endorsements), t, pending, id.NodeID().Short())
		}
		if len(errs) > 0 {
			return Membership{}, errors.Join(errs...)
		}
		return Membership{}, fmt.Errorf("only %d of the %d endorsements this network needs; reach more anchors", len(cert.Endorsements), t)
	}
}

// joinContacts lists the anchors to ask: those of the current set with
// addresses in the genesis or chain, the invite's issuing anchor at its
// bootstrap addresses, and any extra addresses (whose keys a hello learns).
func joinContacts(ctx context.Context, c *nat.Conn, view *trust.View, inv *trust.Invite, extra []netip.AddrPort) []anchorContact {
	byKey := map[[32]byte]*anchorContact{}
	var order [][32]byte
	add := func(name string, key [32]byte, addrs ...netip.AddrPort) {
		ac, ok := byKey[key]
		if !ok {
			ac = &anchorContact{name: name, key: key}
			byKey[key] = ac
			order = append(order, key)
		}
		ac.addrs = mergeAddrPorts(ac.addrs, addrs...)
	}
	set := view.Set()
	for _, a := range set.Anchors {
		if len(a.Endpoints) > 0 {
			add(a.Name, a.WGKey, a.Endpoints...)
		}
	}
	if inv != nil {
		if a, ok := set.Anchor(inv.AnchorNode); ok {
			add(a.Name, inv.AnchorWGKey, inv.Bootstrap...)
		}
	}
	for _, ap := range extra {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		body, from, err := c.CallHello(cctx, ap, nil)
		cancel()
		if err != nil {
			continue
		}
		rec, err := trust.UnmarshalNodeRecord(body)
		if err != nil || view.VerifyRecord(rec, time.Now()) != nil || rec.WireGuardKey() != from.Key {
			continue
		}
		if _, ok := set.Anchor(rec.Cert.NodeID); ok {
			add(rec.Cert.Name, rec.WireGuardKey(), ap)
		}
	}
	out := make([]anchorContact, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out
}

type anchorAnswer struct {
	name string
	cert *trust.Certificate
	err  error
}

// askAnchors sends the join request to every anchor at once, each at its
// addresses in turn.
func askAnchors(ctx context.Context, c *nat.Conn, contacts []anchorContact, body []byte) []anchorAnswer {
	out := make([]anchorAnswer, len(contacts))
	var wg sync.WaitGroup
	for i, ac := range contacts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = anchorAnswer{name: ac.name, err: errors.New("unreachable")}
			for _, ap := range ac.addrs {
				cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				b, err := c.Call(cctx, nat.Peer{Addr: ap, Key: ac.key}, nat.MsgJoin, body)
				cancel()
				if err != nil {
					out[i].err = fmt.Errorf("at %s: %w (is `weft up` running there?)", ap, err)
					continue
				}
				resp, err := trust.UnmarshalJoinResponse(b)
				if err != nil {
					out[i].err = fmt.Errorf("bad answer: %w", err)
					return
				}
				if err := resp.Err(); err != nil {
					out[i].err = err
					return
				}
				cert, err := resp.Certificate()
				out[i] = anchorAnswer{name: ac.name, cert: cert, err: err}
				return
			}
		}()
	}
	wg.Wait()
	return out
}

// saveJoined stores the membership a join earned.
func saveJoined(dir string, g *trust.Genesis, view *trust.View, cert *trust.Certificate, inv *trust.Invite, contacts []anchorContact) (Membership, error) {
	if err := trust.SaveGenesis(dir, g); err != nil {
		return Membership{}, err
	}
	if err := trust.SaveView(dir, view); err != nil {
		return Membership{}, err
	}
	if err := trust.SaveCertificate(dir, cert); err != nil {
		return Membership{}, err
	}
	st, err := loadNodeState(dir)
	if err != nil {
		return Membership{}, err
	}
	if inv != nil {
		st.Bootstrap = mergeAddrPorts(st.Bootstrap, inv.Bootstrap...)
	}
	for _, ac := range contacts {
		st.Bootstrap = mergeAddrPorts(st.Bootstrap, ac.addrs...)
	}
	if err := saveNodeState(dir, st); err != nil {
		return Membership{}, err
	}
	return membership(dir, g, cert, false), nil
}
