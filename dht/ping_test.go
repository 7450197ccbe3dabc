package dht_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/dht/dhttest"
)

// pingNode starts a bare Server (which answers PING) at c's address.
func pingNode(t *testing.T, nw *dhttest.Network, c dht.Contact) {
	t.Helper()
	st, err := dht.NewStore(dht.StoreOptions{Validator: testValidator, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := dht.NewServer(dht.ServerOptions{Transport: nw.Add(c.Peer), Store: st}); err != nil {
		t.Fatal(err)
	}
}

func newTestDHT(t *testing.T, nw *dhttest.Network, i int, tweak func(*dht.Options)) *dht.DHT {
	t.Helper()
	st, err := dht.NewStore(dht.StoreOptions{Validator: testValidator, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	opts := dht.Options{
		Self:      dht.Contact{ID: nodeID(i), Peer: peer(i + 1)},
		Transport: nw.Add(peer(i + 1)),
		Store:     st,
		Validator: testValidator,
		Timeout:   20 * time.Millisecond,
	}
	if tweak != nil {
		tweak(&opts)
	}
	d, err := dht.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); st.Close() })
	return d
}

func TestPing(t *testing.T) {
	nw := dhttest.NewNetwork()
	a := newTestDHT(t, nw, 0, nil)
	b := newTestDHT(t, nw, 1, nil)
	rtt, err := a.Ping(context.Background(), b.Self().Peer)
	if err != nil || rtt < 0 {
		t.Fatalf("Ping = %v, %v", rtt, err)
	}
	nw.Remove(b.Self().Peer.Addr)
	if _, err := a.Ping(context.Background(), b.Self().Peer); err == nil {
		t.Fatal("Ping of a removed node succeeded")
	}
	// A client answers nothing, PING included.
	c := newTestDHT(t, nw, 2, func(o *dht.Options) { o.Client = true })
	if _, err := a.Ping(context.Background(), c.Self().Peer); err == nil {
		t.Fatal("a client answered PING")
	}
}

// TestMaintainEviction checks Kademlia's eviction rule: a newcomer to a
// full bucket waits while the least recently seen entry answers PING, and
// replaces it once it does not.
func TestMaintainEviction(t *testing.T) {
	nw := dhttest.NewNetwork()
	a := newTestDHT(t, nw, 0, func(o *dht.Options) { o.K = 2 })
	tab := a.Table()
	cs := contactsInBucket(tab.Self(), 0, 3)
	for _, c := range cs {
		pingNode(t, nw, c)
	}
	ctx := context.Background()

	if st, err := a.Maintain(ctx); err != nil || st != (dht.MaintainStats{}) {
		t.Fatalf("Maintain on an empty table = %+v, %v", st, err)
	}
	tab.Seen(cs[0], 0)
	tab.Seen(cs[1], 0)
	if st, _ := a.Maintain(ctx); st.Pinged != 0 {
		t.Fatalf("Maintain with no newcomer pinged %d", st.Pinged)
	}
	if tab.Seen(cs[2], 0) {
		t.Fatal("newcomer entered a full bucket")
	}

	// The head answers: it moves to the tail, the newcomer keeps waiting.
	st, err := a.Maintain(ctx)
	if err != nil || st != (dht.MaintainStats{Pinged: 1}) {
		t.Fatalf("Maintain = %+v, %v; want one ping, no eviction", st, err)
	}
	live, repl := tab.Bucket(0)
	if got, want := ids(live), ids2(cs[1], cs[0]); !slices.Equal(got, want) {
		t.Fatalf("live after answered ping = %v, want %v", got, want)
	}
	if len(repl) != 1 || repl[0].Contact.ID != cs[2].ID {
		t.Fatalf("replacements = %v", ids(repl))
	}
	if st, _ := a.Maintain(ctx); st.Pinged != 0 {
		t.Fatalf("second Maintain pinged %d with no new arrival", st.Pinged)
	}

	// The new head (cs[1]) dies; the newcomer is heard from again.
	nw.Remove(cs[1].Peer.Addr)
	tab.Seen(cs[2], 0)
	st, err = a.Maintain(ctx)
	if err != nil || st != (dht.MaintainStats{Pinged: 1, Evicted: 1}) {
		t.Fatalf("Maintain = %+v, %v; want one ping, one eviction", st, err)
	}
	live, repl = tab.Bucket(0)
	if got, want := ids(live), ids2(cs[0], cs[2]); !slices.Equal(got, want) {
		t.Fatalf("live after failed ping = %v, want %v", got, want)
	}
	if len(repl) != 0 {
		t.Fatalf("replacements = %v, want none", ids(repl))
	}
}

func ids2(cs ...dht.Contact) []addr.NodeID {
	out := make([]addr.NodeID, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

// TestLookupPrefersLowRTT checks the RTT-aware choice in lookups: among
// candidates equally close to the target (same common-prefix length), the
// one with the lowest measured RTT is asked first, unknown RTTs last.
func TestLookupPrefersLowRTT(t *testing.T) {
	nw := dhttest.NewNetwork()
	a := newTestDHT(t, nw, 0, func(o *dht.Options) { o.Alpha = 1 })
	target := key("rtt-target")
	rtts := []time.Duration{50, 10, 0, 30, 20, 40} // ms; 0 = never measured
	var (
		mu    sync.Mutex
		order []time.Duration
		cs    []dht.Contact
	)
	for i := 0; len(cs) < len(rtts); i++ {
		id := nodeID(5000 + i)
		if target.CommonPrefixLen(dht.NodeKey(id)) != 0 {
			continue
		}
		rtt := rtts[len(cs)] * time.Millisecond
		c := dht.Contact{ID: id, Peer: peer(500 + len(cs))}
		cs = append(cs, c)
		tr := nw.Add(c.Peer)
		tr.Handle(dht.MsgFindNode, func(context.Context, dht.Peer, []byte) ([]byte, error) {
			mu.Lock()
			order = append(order, rtt)
			mu.Unlock()
			return dht.FindNodeResponse{}.MarshalBinary()
		})
		a.Table().Seen(c, rtt)
	}
	if _, _, err := a.FindNode(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{10, 20, 30, 40, 50, 0}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(order, want) {
		t.Fatalf("asked in RTT order %v, want %v", order, want)
	}
}

// TestAdaptiveTimeout: a contact whose RTT was measured and that then dies
// costs a lookup MinAdaptiveTimeout, not Options.Timeout, and is evicted
// after MaxFailures such timeouts.
func TestAdaptiveTimeout(t *testing.T) {
	sn := newSimNet(t, 12, func(o *dht.Options) { o.Timeout = dht.DefaultTimeout })
	a := sn.nodes[len(sn.nodes)-1] // bootstrapped last: learned its contacts from their answers
	var dead *simNode
	for _, nd := range sn.nodes[1 : len(sn.nodes)-1] {
		if a.d.Table().Contains(nd.key) && a.d.Table().RTT(nd.key) > 0 {
			dead = nd
			break
		}
	}
	if dead == nil {
		t.Fatal("no contact with a measured RTT")
	}
	sn.net.Remove(dead.c.Peer.Addr)
	for i := range dht.DefaultMaxFailures {
		start := time.Now()
		if _, _, err := a.d.FindNode(context.Background(), dead.key); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		t.Logf("lookup %d with a dead contact: %v", i+1, took)
		if took >= dht.DefaultTimeout/2 {
			t.Fatalf("lookup %d waited %v on a dead contact with a measured RTT", i+1, took)
		}
	}
	if a.d.Table().Contains(dead.key) {
		t.Fatalf("dead contact still in the table after %d timeouts", dht.DefaultMaxFailures)
	}
}
