package dht_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/dht/dhttest"
)

var errNotOK = errors.New("payload does not start with ok")

func validPayload(p []byte) error {
	if !bytes.HasPrefix(p, []byte("ok")) {
		return errNotOK
	}
	return nil
}

// gossipPair is a gossip node b whose table holds a, plus a's raw
// transport for hand-made requests.
type gossipPair struct {
	a         *dhttest.Transport
	aContact  dht.Contact
	b         *dht.Gossip
	bTable    *dht.Table
	bPeer     dht.Peer
	delivered [][]byte
	mu        sync.Mutex
}

func newGossipPair(t *testing.T, tweak func(*dht.GossipOptions)) *gossipPair {
	t.Helper()
	nw := dhttest.NewNetwork()
	gp := &gossipPair{aContact: dht.Contact{ID: nodeID(1), Peer: peer(1)}, bPeer: peer(2)}
	gp.a = nw.Add(gp.aContact.Peer)
	gp.bTable = dht.NewTable(dht.TableOptions{Self: dht.NodeKey(nodeID(2))})
	gp.bTable.Seen(gp.aContact, 0)
	opts := dht.GossipOptions{
		Transport: nw.Add(gp.bPeer),
		Table:     gp.bTable,
		Validate:  validPayload,
		Deliver: func(p []byte) {
			gp.mu.Lock()
			gp.delivered = append(gp.delivered, p)
			gp.mu.Unlock()
		},
		Timeout: 20 * time.Millisecond,
	}
	if tweak != nil {
		tweak(&opts)
	}
	g, err := dht.NewGossip(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	gp.b = g
	return gp
}

// push sends payloads from a to b as one GOSSIP request.
func (gp *gossipPair) push(t *testing.T, payloads ...[]byte) dht.GossipResponse {
	t.Helper()
	body, err := dht.GossipRequest{Payloads: payloads, Digest: [][8]byte{}}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b, err := gp.a.Call(context.Background(), gp.bPeer, dht.MsgGossip, body)
	if err != nil {
		t.Fatal(err)
	}
	var resp dht.GossipResponse
	if err := resp.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	return resp
}

func (gp *gossipPair) deliveries() int {
	gp.mu.Lock()
	defer gp.mu.Unlock()
	return len(gp.delivered)
}

func TestGossipDedupe(t *testing.T) {
	gp := newGossipPair(t, nil)
	p := []byte("ok revoke 1")
	gp.push(t, p)
	gp.push(t, p, p)
	if n := gp.deliveries(); n != 1 {
		t.Fatalf("delivered %d times, want once", n)
	}
	st := gp.b.Stats()
	if st.Delivered != 1 || st.Duplicates != 2 || st.Held != 1 {
		t.Fatalf("stats %+v", st)
	}
	if !gp.b.Has(dht.GossipIDOf(p)) {
		t.Fatal("Has = false")
	}
	// A pull with a digest naming p gets nothing; an empty digest gets p.
	if resp := gp.push(t); len(resp.Payloads) != 1 || !bytes.Equal(resp.Payloads[0], p) {
		t.Fatalf("pull with empty digest = %q", resp.Payloads)
	}
	id := dht.GossipIDOf(p)
	body, _ := dht.GossipRequest{Digest: [][8]byte{[8]byte(id[:8])}}.MarshalBinary()
	b, err := gp.a.Call(context.Background(), gp.bPeer, dht.MsgGossip, body)
	var resp dht.GossipResponse
	if err != nil || resp.UnmarshalBinary(b) != nil || len(resp.Payloads) != 0 {
		t.Fatalf("pull with p in digest = %q, %v", resp.Payloads, err)
	}
}

func TestGossipRateLimit(t *testing.T) {
	gp := newGossipPair(t, func(o *dht.GossipOptions) { o.Rate, o.Burst = 0.001, 2 })
	var ps [][]byte
	for i := range 5 {
		ps = append(ps, fmt.Appendf(nil, "ok %d", i))
	}
	gp.push(t, ps...)
	if n := gp.deliveries(); n != 2 {
		t.Fatalf("delivered %d of 5 with burst 2", n)
	}
	gp.push(t, ps[0]) // duplicates cost nothing and are not limited
	if st := gp.b.Stats(); st.RateLimited != 3 || st.Duplicates != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestGossipInvalidPayloads(t *testing.T) {
	tests := []struct {
		name    string
		payload func(i int) []byte
	}{
		{"invalid", func(i int) []byte { return fmt.Appendf(nil, "bad %d", i) }},
		{"too large", func(i int) []byte { return append(fmt.Appendf(nil, "ok %d", i), make([]byte, 300)...) }},
		{"invalid again", func(int) []byte { return []byte("bad, same") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gp := newGossipPair(t, func(o *dht.GossipOptions) { o.MaxPayload = 256 })
			ka := dht.NodeKey(gp.aContact.ID)
			for i := range dht.DefaultMaxOffences {
				if gp.bTable.Banned(ka) {
					t.Fatalf("banned after %d offences", i)
				}
				gp.push(t, tt.payload(i))
			}
			if gp.deliveries() != 0 {
				t.Fatal("invalid payload delivered")
			}
			if !gp.bTable.Banned(ka) || gp.bTable.Contains(ka) {
				t.Fatalf("sender not banned after %d invalid payloads", dht.DefaultMaxOffences)
			}
			if st := gp.b.Stats(); st.Invalid != dht.DefaultMaxOffences {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestGossipIgnored: a payload Validate ignores for now (ErrGossipIgnored)
// costs its sender nothing and is not remembered, so the same payload is
// accepted once it validates.
func TestGossipIgnored(t *testing.T) {
	var ready atomic.Bool
	gp := newGossipPair(t, func(o *dht.GossipOptions) {
		o.Validate = func(p []byte) error {
			if !ready.Load() {
				return fmt.Errorf("its predecessor is not held yet: %w", dht.ErrGossipIgnored)
			}
			return validPayload(p)
		}
	})
	p := []byte("ok change 2")
	for range dht.DefaultMaxOffences + 1 {
		gp.push(t, p)
	}
	ka := dht.NodeKey(gp.aContact.ID)
	if gp.deliveries() != 0 || gp.bTable.Banned(ka) || gp.b.Has(dht.GossipIDOf(p)) {
		t.Fatalf("ignored payload: %d deliveries, sender banned %v", gp.deliveries(), gp.bTable.Banned(ka))
	}
	if st := gp.b.Stats(); st.Ignored != dht.DefaultMaxOffences+1 || st.Invalid != 0 {
		t.Fatalf("stats %+v", st)
	}
	ready.Store(true)
	gp.push(t, p)
	if gp.deliveries() != 1 {
		t.Fatalf("payload not delivered once it validates")
	}
}

func TestGossipOptions(t *testing.T) {
	tr := dhttest.NewNetwork().Add(peer(1))
	tab := dht.NewTable(dht.TableOptions{Self: key("self")})
	for _, tt := range []struct {
		name string
		opts dht.GossipOptions
	}{
		{"no transport", dht.GossipOptions{Table: tab, Validate: validPayload}},
		{"no table", dht.GossipOptions{Transport: tr, Validate: validPayload}},
		{"no validate", dht.GossipOptions{Transport: tr, Table: tab}},
		{"fanout 2", dht.GossipOptions{Transport: tr, Table: tab, Validate: validPayload, Fanout: 2}},
		{"fanout 6", dht.GossipOptions{Transport: tr, Table: tab, Validate: validPayload, Fanout: 6}},
		{"payload too large", dht.GossipOptions{Transport: tr, Table: tab, Validate: validPayload, MaxPayload: dht.MaxValueSize + 1}},
	} {
		if _, err := dht.NewGossip(tt.opts); err == nil {
			t.Errorf("%s: NewGossip succeeded", tt.name)
		}
	}
	g, err := dht.NewGossip(dht.GossipOptions{Transport: tr, Table: tab, Validate: validPayload})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Publish(context.Background(), []byte("bad")); !errors.Is(err, dht.ErrInvalid) {
		t.Errorf("Publish of an invalid payload: %v", err)
	}
	if _, err := g.Publish(context.Background(), []byte("ok")); !errors.Is(err, dht.ErrNoContacts) {
		t.Errorf("Publish with an empty table: %v", err)
	}
	g.Close()
	g.Close()
	if err := g.Round(context.Background()); !errors.Is(err, dht.ErrGossipClosed) {
		t.Errorf("Round after Close: %v", err)
	}
}

// gossipNet attaches a Gossip to every node of a simNet but those skip
// names (black holes: in tables, answering no GOSSIP).
func gossipNet(t *testing.T, sn *simNet, tweak func(*dht.GossipOptions), skip ...func(int) bool) ([]*dht.Gossip, []atomic.Int32) {
	t.Helper()
	gs := make([]*dht.Gossip, len(sn.nodes))
	got := make([]atomic.Int32, len(sn.nodes))
	for i, nd := range sn.nodes {
		if len(skip) > 0 && skip[0](i) {
			continue
		}
		opts := dht.GossipOptions{
			Transport: nd.tr,
			Table:     nd.d.Table(),
			Validate:  validPayload,
			Deliver:   func([]byte) { got[i].Add(1) },
			Identify:  sn.identify,
			Timeout:   simTimeout,
		}
		if tweak != nil {
			tweak(&opts)
		}
		g, err := dht.NewGossip(opts)
		if err != nil {
			t.Fatal(err)
		}
		gs[i] = g
		t.Cleanup(func() { g.Close() })
	}
	return gs, got
}

// TestGossipCoverage checks that a payload published on a 200-node DHT
// reaches every live gossiping node within a few rounds, each exactly
// once, also when 30% of the nodes in the tables are black holes (so the
// immediate forward-once push misses some and pull must find them).
func TestGossipCoverage(t *testing.T) {
	for _, tt := range []struct {
		name       string
		pushRounds int
		blackHoles int // every blackHoles-th node answers no GOSSIP; 0 = none
		maxRounds  int
	}{
		{"push and pull", 0, 0, 4},
		{"immediate push then pull only", -1, 0, 5},
		{"30% black holes", 0, 3, 6},
		{"30% black holes pull only", -1, 3, 6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sn := newSimNet(t, simN, nil)
			hole := func(i int) bool { return tt.blackHoles > 0 && i%tt.blackHoles == 1 }
			gs, got := gossipNet(t, sn, func(o *dht.GossipOptions) { o.PushRounds = tt.pushRounds }, hole)
			live := 0
			for i := range gs {
				if !hole(i) {
					live++
				}
			}
			reach := func() int {
				n := 0
				for i := range got {
					if got[i].Load() > 0 {
						n++
					}
				}
				return n
			}
			got[0].Add(1) // the publisher
			if _, err := gs[0].Publish(context.Background(), []byte("ok revoke")); err != nil {
				t.Fatal(err)
			}
			t.Logf("after the immediate push: %d of %d", reach(), live)
			rounds := 0
			for reached := reach(); reached < live; rounds++ {
				if rounds == tt.maxRounds {
					t.Fatalf("%d of %d nodes reached after %d rounds", reached, live, rounds)
				}
				parallel(len(gs), func(i int) {
					if gs[i] != nil {
						gs[i].Round(context.Background())
					}
				})
				reached = reach()
			}
			for _, g := range gs {
				if g != nil {
					g.Close() // wait for forwards in flight
				}
			}
			for i := range got {
				if n := got[i].Load(); n != 1 && !hole(i) {
					t.Errorf("node %d delivered %d times", i, n)
				}
			}
			t.Logf("all %d live nodes reached in %d rounds", live, rounds)
		})
	}
}

// TestGossipClientPulls checks that a client, which nobody pushes to,
// catches up by pulling from its servers.
func TestGossipClientPulls(t *testing.T) {
	sn := newSimNet(t, 30, nil)
	gs, _ := gossipNet(t, sn, nil)
	ctx := context.Background()
	p := []byte("ok anchor set v2")
	if _, err := gs[0].Publish(ctx, p); err != nil {
		t.Fatal(err)
	}
	parallel(len(gs), func(i int) { gs[i].Round(ctx) })

	cp := peer(2000)
	tr := sn.net.Add(cp)
	cl, err := dht.New(dht.Options{Self: dht.Contact{ID: nodeID(2000), Peer: cp}, Transport: tr, Validator: testValidator, Timeout: simTimeout, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Bootstrap(ctx, []dht.Peer{sn.nodes[0].c.Peer}); err != nil {
		t.Fatal(err)
	}
	var delivered atomic.Int32
	g, err := dht.NewGossip(dht.GossipOptions{Transport: tr, Table: cl.Table(), Validate: validPayload, Deliver: func([]byte) { delivered.Add(1) }, Timeout: simTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.Round(ctx); err != nil {
		t.Fatal(err)
	}
	if delivered.Load() != 1 || !g.Has(dht.GossipIDOf(p)) {
		t.Fatalf("client did not pull the payload: %+v", g.Stats())
	}
}
