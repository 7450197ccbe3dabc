package weft_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/trust"
)

// TestBFTAdmission: in networks of 1, 4 and 7 anchors, an invite with
// exactly t endorsements admits a member that then reaches an anchor by
// name; one with t−1 is refused by Join and by every anchor; and a join
// while fewer than t anchors are up fails, naming the anchors it could not
// reach, then succeeds with the same invite once they are back.
func TestBFTAdmission(t *testing.T) {
	for _, n := range []int{1, 4, 7} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			bn := newBFTNet(t, n)
			thr := bn.thr

			// Exactly t endorsements, issued by the last anchor so that the
			// member must find the others from the genesis.
			tok := bn.invite(t, n-1, thr, weft.InviteOptions{Name: "m1"})
			m1 := bn.join(t, "m1", tok)
			target := bn.names[n-1]
			serveName(t, bn.nodes[target])
			expectName(t, m1, target)

			// t−1 endorsements: Join refuses locally, and every anchor
			// refuses the request when asked directly.
			short := bn.invite(t, 0, thr-1, weft.InviteOptions{Name: "m2"})
			_, err := weft.Join(ctxT(t), weft.JoinOptions{StateDir: filepath.Join(bn.base, "m2"), Token: short, Logger: testLogger(t)})
			if !errors.Is(err, trust.ErrTooFewEndorsements) {
				t.Fatalf("join with %d of %d endorsements: %v, want ErrTooFewEndorsements", thr-1, thr, err)
			}
			r := newRogue(t)
			for _, a := range bn.anchorNodes() {
				if err := askJoin(t, r, a, short, "m2"); !errors.Is(err, trust.ErrTooFewEndorsements) {
					t.Fatalf("anchor %s answered a join with %d of %d endorsements with %v, want ErrTooFewEndorsements", a.Name(), thr-1, thr, err)
				}
			}

			// Fewer than t anchors up: t−1 stay, the rest stop.
			tok3 := bn.invite(t, 0, thr, weft.InviteOptions{Name: "m3"})
			down := bn.names[thr-1:]
			for _, name := range down {
				bn.stop(t, name)
			}
			dir3 := filepath.Join(bn.base, "m3")
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			_, err = weft.Join(ctx, weft.JoinOptions{StateDir: dir3, Token: tok3, Logger: testLogger(t)})
			cancel()
			if err == nil {
				t.Fatalf("join succeeded with only %d of %d anchors up", thr-1, thr)
			}
			for _, name := range down {
				if !strings.Contains(err.Error(), name) {
					t.Fatalf("join with anchors %v down failed with %q, which does not name %s", down, err, name)
				}
			}
			t.Logf("join with %d of %d anchors up: %v", thr-1, thr, err)
			if weft.HasMembership(dir3) {
				t.Fatal("a failed join left a membership behind")
			}
			for _, name := range down {
				bn.startAnchor(t, name)
			}
			serveName(t, bn.nodes[target]) // it was restarted
			bn.join(t, "m3", tok3)
			expectName(t, bn.nodes["m3"], target)
		})
	}
}

// TestBFTByzantineMinority: in a network of 4 anchors (t = 3), each anchor
// in turn plays Byzantine and signs whatever it likes — an invite, a
// certificate, a revocation of an honest member, an anchor-set change —
// and achieves nothing: every honest node refuses each, and the member it
// tried to revoke stays reachable.
func TestBFTByzantineMinority(t *testing.T) {
	bn := newBFTNet(t, 4)
	victim := bn.join(t, "victim", bn.invite(t, 0, bn.thr, weft.InviteOptions{Name: "victim"}))
	client := bn.join(t, "client", bn.invite(t, 1, bn.thr, weft.InviteOptions{Name: "client"}))
	serveName(t, victim)
	expectName(t, client, "victim")
	setBefore := bn.nodes["a0"].Trust()

	for b, byz := range bn.names {
		t.Run("byzantine="+byz, func(t *testing.T) {
			bad := bn.nodes[byz]
			var honest []*weft.Node
			for _, name := range bn.names {
				if name != byz {
					honest = append(honest, bn.nodes[name])
				}
			}
			byzID, err := trust.LoadIdentity(bn.dirs[byz])
			if err != nil {
				t.Fatal(err)
			}
			junk := func() *trust.Identity {
				id, err := trust.NewIdentity()
				if err != nil {
					t.Fatal(err)
				}
				return id
			}

			// A rogue invite signed only by the Byzantine anchor.
			rogueName := fmt.Sprintf("rogue%d", b)
			tok, err := bad.Invite(weft.InviteOptions{Name: rogueName, Tags: []string{"admin"}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = weft.Join(ctxT(t), weft.JoinOptions{StateDir: filepath.Join(t.TempDir(), rogueName), Token: tok, Logger: testLogger(t)})
			if !errors.Is(err, trust.ErrTooFewEndorsements) {
				t.Fatalf("join with an invite signed by %s alone: %v, want ErrTooFewEndorsements", byz, err)
			}
			r := newRogue(t)
			for _, a := range honest {
				if err := askJoin(t, r, a, tok, rogueName); !errors.Is(err, trust.ErrTooFewEndorsements) {
					t.Fatalf("honest anchor %s answered a join with %s's rogue invite with %v, want ErrTooFewEndorsements", a.Name(), byz, err)
				}
			}

			// A certificate the Byzantine key endorses directly, padded with
			// a repeat of its endorsement and two by non-anchor keys.
			g := mustGenesis(t, bn.dirs[byz])
			now := time.Now()
			ip, err := trust.ProposeIPv4(g.IPv4Prefix, r.id.NodeID(), 0)
			if err != nil {
				t.Fatal(err)
			}
			cert := &trust.Certificate{Network: g.ID(), NodeID: r.id.NodeID(), SignKey: r.id.SignPublic(), WGKey: r.id.WGPublic(),
				Name: rogueName, IPv4: ip, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), Serial: 1, Tags: []string{"admin"}}
			for _, k := range []*trust.Identity{byzID, junk(), junk()} {
				if err := cert.Endorse(k.Sign); err != nil {
					t.Fatal(err)
				}
			}
			cert.Endorsements = append(cert.Endorsements, cert.Endorsements[0])
			rec := r.record(t, cert, now.Add(30*time.Minute))
			for _, n := range append(slices.Clone(honest), victim, client) {
				if err := r.connect(t, n, rec); err == nil {
					t.Fatalf("%s accepted a connect with a certificate endorsed by %s alone", n.Name(), byz)
				}
			}
			for _, a := range honest {
				if err := r.store(t, a, dht.NameKey(rogueName), rec); err == nil {
					t.Fatalf("%s stored a record whose certificate %s alone endorsed", a.Name(), byz)
				}
			}
			if _, err := client.Resolve(ctxT(t), rogueName); err == nil {
				t.Fatalf("the rogue certificate's name %s resolves", rogueName)
			}

			// A revocation of an honest member signed only by it.
			res, err := bad.Revoke(ctxT(t), "victim", "byzantine "+byz)
			if err != nil {
				t.Fatalf("revoke on %s: %v", byz, err)
			}
			if res.Published || res.Endorsements != 1 || res.Threshold != 3 {
				t.Fatalf("a revocation by one anchor of four: %+v, want 1 of 3 endorsements, not published", res)
			}
			padded, err := trust.ParseRevocation(res.Token)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []*trust.Identity{junk(), junk()} {
				if err := padded.Endorse(k.Sign); err != nil {
					t.Fatal(err)
				}
			}
			padded.Endorsements = append(padded.Endorsements, padded.Endorsements[0])
			for _, tok := range []string{res.Token, padded.Encode()} {
				bn.each(func(name string, n *weft.Node) {
					if _, err := n.Publish(tok); err == nil {
						t.Fatalf("%s applied a revocation that only %s signed", name, byz)
					} else if !errors.Is(err, trust.ErrTooFewEndorsements) && !errors.Is(err, trust.ErrNotAnchor) && !errors.Is(err, trust.ErrMalformed) {
						t.Fatalf("%s refused %s's revocation with %v, want too few endorsements", name, byz, err)
					}
				})
			}

			// An anchor-set change signed by it alone: a key of its own in,
			// an honest anchor out.
			rogueDesc, err := weft.Keygen(filepath.Join(t.TempDir(), "sock"), "sock", nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err = bad.ProposeAnchorChange([]string{rogueDesc}, []string{honest[0].Name()}, 0)
			if err != nil {
				t.Fatalf("propose anchor change on %s: %v", byz, err)
			}
			if res.Published || res.Endorsements != 1 {
				t.Fatalf("an anchor-set change by one anchor of four: %+v, want 1 endorsement, not published", res)
			}
			ch, err := trust.ParseAnchorChange(res.Token)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []*trust.Identity{junk(), junk()} {
				if err := ch.Endorse(k.Sign); err != nil {
					t.Fatal(err)
				}
			}
			ch.Endorsements = append(ch.Endorsements, ch.Endorsements[0])
			for _, tok := range []string{res.Token, ch.Encode()} {
				bn.each(func(name string, n *weft.Node) {
					if _, err := n.Publish(tok); err == nil {
						t.Fatalf("%s applied an anchor-set change that only %s signed", name, byz)
					} else if !errors.Is(err, trust.ErrTooFewEndorsements) && !errors.Is(err, trust.ErrNotAnchor) && !errors.Is(err, trust.ErrMalformed) {
						t.Fatalf("%s refused %s's anchor-set change with %v, want too few endorsements", name, byz, err)
					}
				})
			}

			// Nothing changed anywhere: same anchor set, no revocation, and
			// the victim is reachable and resolvable by everyone.
			bn.each(func(name string, n *weft.Node) {
				ts := n.Trust()
				if ts.SetSeq != setBefore.SetSeq || ts.Threshold != setBefore.Threshold || len(ts.Anchors) != len(setBefore.Anchors) {
					t.Fatalf("%s follows anchor set %d (t=%d, %d anchors), want %d (t=%d, %d anchors)", name,
						ts.SetSeq, ts.Threshold, len(ts.Anchors), setBefore.SetSeq, setBefore.Threshold, len(setBefore.Anchors))
				}
				if len(ts.Revocations) != 0 {
					t.Fatalf("%s holds revocations %+v", name, ts.Revocations)
				}
				if name == "victim" {
					return
				}
				if _, err := n.Resolve(ctxT(t), "victim"); err != nil {
					t.Fatalf("%s cannot resolve victim: %v", name, err)
				}
			})
			expectName(t, client, "victim")
			expectName(t, honest[len(honest)-1], "victim")
		})
	}
}

// TestRevokeDuringTransfer: a member streaming to another is revoked by a
// quorum (revoke on a0, cosign on a1 and a2); the stream stops within
// seconds, every other node refuses the revoked node, and it cannot come
// back: not with its old state, not with a replayed record, not by joining
// again.
func TestRevokeDuringTransfer(t *testing.T) {
	bn := newBFTNet(t, 4)
	src := bn.join(t, "src", bn.invite(t, 0, bn.thr, weft.InviteOptions{Name: "src"}))
	dst := bn.join(t, "dst", bn.invite(t, 1, bn.thr, weft.InviteOptions{Name: "dst"}))
	srcID := src.NodeID()

	// src streams forever to whoever connects.
	ln, err := src.Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	c, err := dst.Dial(ctxT(t), "tcp", "src:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got atomic.Int64
	stopped := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(buf)
			got.Add(int64(n))
			if err != nil {
				stopped <- err
				return
			}
		}
	}()
	poll(t, 10*time.Second, "stream of 8 MiB before revoking", func() error {
		select {
		case err := <-stopped:
			t.Fatalf("stream stopped before the revocation after %d bytes: %v", got.Load(), err)
		default:
		}
		if got.Load() < 8<<20 {
			return fmt.Errorf("%d bytes so far", got.Load())
		}
		return nil
	})

	// Keep what src could use to come back: its record and its state.
	r := newRogue(t)
	oldRec := mustHello(t, r, src)
	oldDir := filepath.Join(t.TempDir(), "src-old")
	copyDir(t, bn.dirs["src"], oldDir)

	res, err := bn.nodes["a0"].Revoke(ctxT(t), "src", "laptop stolen")
	if err != nil || res.Published {
		t.Fatalf("revoke on a0: %+v, %v", res, err)
	}
	for _, a := range []string{"a1", "a2"} {
		if res, err = bn.nodes[a].Cosign(res.Token); err != nil {
			t.Fatalf("cosign revocation on %s: %v", a, err)
		}
	}
	if !res.Published || res.Endorsements != 3 {
		t.Fatalf("revocation after 3 of 4 anchors: %+v, want published", res)
	}
	revoked := time.Now()
	at := got.Load()
	select {
	case err := <-stopped:
		t.Logf("stream stopped %v after the revocation, %d MiB after it: %v", time.Since(revoked).Round(time.Millisecond), (got.Load()-at)>>20, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("stream from the revoked node still flows 10s after the revocation (%d MiB since)", (got.Load()-at)>>20)
	}

	// Every other node refuses it.
	bn.each(func(name string, n *weft.Node) {
		if name == "src" {
			return
		}
		poll(t, 5*time.Second, name+" learns the revocation", func() error {
			for _, rv := range n.Trust().Revocations {
				if rv.NodeID == srcID {
					return nil
				}
			}
			return errors.New("src not in its revocations")
		})
		if p, err := n.Resolve(ctxT(t), "src"); err == nil {
			t.Fatalf("%s still resolves the revoked node: %+v", name, p)
		}
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if p.NodeID == srcID {
				t.Fatalf("%s still has the revoked node as a peer: %+v", name, p)
			}
		}
	})

	// Its connect is refused with the reason, and counted.
	srcKey, err := trust.LoadIdentity(oldDir)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := dst.Status()
	impostor := newRogueWith(t, srcKey)
	if err := impostor.connect(t, dst, oldRec); err == nil || !strings.Contains(err.Error(), trust.ErrRevoked.Error()) {
		t.Fatalf("connect of the revoked node to dst: %v, want refused as revoked", err)
	}
	after, _ := dst.Status()
	if after.Rejections[trust.ErrRevoked.Error()] <= before.Rejections[trust.ErrRevoked.Error()] {
		t.Fatalf("dst did not count the revoked connect: rejections %v", after.Rejections)
	}

	// Its old record replayed to every anchor's store is refused.
	for _, a := range bn.anchorNodes() {
		for _, key := range []dht.Key{dht.NodeKey(srcID), dht.NameKey("src")} {
			if err := r.store(t, a, key, oldRec); err == nil || !strings.Contains(err.Error(), trust.ErrRevoked.Error()) {
				t.Fatalf("%s answered a replay of the revoked node's record with %v, want refused as revoked", a.Name(), err)
			}
		}
	}

	// Restarted with its old state (old certificate, a view without the
	// revocation), it reaches no one.
	bn.stop(t, "src")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	old, err := weft.Start(ctx, weft.Config{StateDir: oldDir, Listen: loopback, Logger: testLogger(t)})
	if err == nil {
		defer old.Close()
		for _, host := range []string{"dst", "a0", "a3"} {
			dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
			conn, err := old.Dial(dctx, "tcp", host+":9000")
			dcancel()
			if err == nil {
				conn.Close()
				t.Fatalf("the revoked node, restarted with its old state, reached %s", host)
			}
		}
	} else if !errors.Is(err, trust.ErrRevoked) {
		t.Fatalf("restart of the revoked node: %v, want it to run unreachable or refuse as revoked", err)
	}

	// Nor can its key join again, even with a complete invite, under its
	// old name or a new one.
	for _, name := range []string{"src", "src2"} {
		tok := bn.invite(t, 2, bn.thr, weft.InviteOptions{Name: name})
		again := filepath.Join(t.TempDir(), "again")
		if err := trust.SaveIdentity(again, srcKey); err != nil {
			t.Fatal(err)
		}
		_, err = weft.Join(ctxT(t), weft.JoinOptions{StateDir: again, Token: tok, Logger: testLogger(t)})
		if !errors.Is(err, trust.ErrRevoked) {
			t.Errorf("join of the revoked key as %s with a fresh invite: %v, want ErrRevoked", name, err)
		}
	}
}

// TestPendingApproval: a join without invite waits in every anchor's
// queue; once t operators approve it, Join returns a valid membership.
// Rejected by enough operators that t can no longer be reached, Join fails
// with the operators' reason.
func TestPendingApproval(t *testing.T) {
	bn := newBFTNet(t, 4)
	serveName(t, bn.nodes["a3"])
	genesis := bn.nodes["a1"].GenesisToken()
	if genesis != bn.genesis {
		t.Fatal("GenesisToken differs from the genesis Init made")
	}
	type result struct {
		m   weft.Membership
		err error
	}
	startJoin := func(name string) (string, <-chan result) {
		dir := filepath.Join(bn.base, name)
		ch := make(chan result, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		go func() {
			defer cancel()
			m, err := weft.Join(ctx, weft.JoinOptions{StateDir: dir, Genesis: genesis, Name: name, Wait: 20 * time.Second, Logger: testLogger(t)})
			ch <- result{m, err}
		}()
		// Join must return before the test ends, or goleak complains.
		t.Cleanup(func() {
			cancel()
		})
		return dir, ch
	}
	waitPending := func(a *weft.Node, name string) {
		poll(t, 10*time.Second, name+" queued on "+a.Name(), func() error {
			ps, err := a.Pending()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ps {
				if p.Name == name && p.State == trust.PendingWaiting {
					return nil
				}
			}
			return fmt.Errorf("queue %+v", ps)
		})
	}
	wait := func(ch <-chan result) result {
		select {
		case r := <-ch:
			return r
		case <-time.After(25 * time.Second):
			t.Fatal("Join did not return")
		}
		return result{}
	}

	t.Run("approved", func(t *testing.T) {
		dir, ch := startJoin("newbie")
		for _, a := range bn.names[:bn.thr] {
			waitPending(bn.nodes[a], "newbie")
			if err := bn.nodes[a].Approve("newbie"); err != nil {
				t.Fatalf("approve on %s: %v", a, err)
			}
		}
		start := time.Now()
		r := wait(ch)
		if r.err != nil {
			t.Fatalf("join approved by %d anchors: %v", bn.thr, r.err)
		}
		t.Logf("joined %v after the last approval", time.Since(start).Round(time.Millisecond))
		if r.m.Name != "newbie" || !r.m.IPv4.IsValid() || r.m.Anchor {
			t.Fatalf("membership %+v", r.m)
		}
		n := startAt(t, dir, loopback)
		expectName(t, n, "a3")
	})

	t.Run("rejected", func(t *testing.T) {
		_, ch := startJoin("stranger")
		// n−t+1 rejections leave fewer than t anchors that could approve.
		for _, a := range bn.names[:len(bn.names)-bn.thr+1] {
			waitPending(bn.nodes[a], "stranger")
			if err := bn.nodes[a].Reject("stranger", "unknown device"); err != nil {
				t.Fatalf("reject on %s: %v", a, err)
			}
		}
		start := time.Now()
		r := wait(ch)
		if !errors.Is(r.err, trust.ErrDenied) || !strings.Contains(r.err.Error(), "unknown device") {
			t.Fatalf("join rejected by %d of 4 anchors: %v, want ErrDenied with the operators' reason", len(bn.names)-bn.thr+1, r.err)
		}
		if waited := time.Since(start); waited > 10*time.Second {
			t.Fatalf("Join kept waiting %v after admission became impossible", waited)
		}
	})
}
