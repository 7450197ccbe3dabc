package dht_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/dht/dhttest"
)

// simNode is one DHT node on an in-memory network.
type simNode struct {
	d   *dht.DHT
	tr  *dhttest.Transport
	st  *dht.Store
	c   dht.Contact
	key dht.Key
}

// simNet is a network of DHT nodes. ids is filled before any node runs and
// read-only afterwards.
type simNet struct {
	net   *dhttest.Network
	nodes []*simNode
	ids   map[[32]byte]addr.NodeID
}

func nodeID(i int) addr.NodeID {
	return addr.NodeID(sha256.Sum256(binary.BigEndian.AppendUint64([]byte("node"), uint64(i))))
}

const simTimeout = 40 * time.Millisecond

// newSimNet starts n nodes, each bootstrapping through node 0.
func newSimNet(t *testing.T, n int, tweak func(*dht.Options)) *simNet {
	t.Helper()
	sn := &simNet{net: dhttest.NewNetwork(), ids: make(map[[32]byte]addr.NodeID)}
	for i := range n {
		sn.ids[peer(i+1).Key] = nodeID(i)
	}
	for i := range n {
		p := peer(i + 1)
		tr := sn.net.Add(p)
		st, err := dht.NewStore(dht.StoreOptions{Validator: testValidator, SweepInterval: -1, StoreRate: -1})
		if err != nil {
			t.Fatal(err)
		}
		c := dht.Contact{ID: nodeID(i), Peer: p}
		opts := dht.Options{
			Self:      c,
			Transport: tr,
			Store:     st,
			Validator: testValidator,
			Identify:  sn.identify,
			Timeout:   simTimeout,
		}
		if tweak != nil {
			tweak(&opts)
		}
		d, err := dht.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		sn.nodes = append(sn.nodes, &simNode{d: d, tr: tr, st: st, c: c, key: dht.NodeKey(c.ID)})
	}
	t.Cleanup(func() {
		for _, nd := range sn.nodes {
			nd.d.Close()
			nd.st.Close()
		}
	})
	ctx := context.Background()
	for i, nd := range sn.nodes[1:] {
		if err := nd.d.Bootstrap(ctx, []dht.Peer{sn.nodes[0].c.Peer}); err != nil {
			t.Fatalf("bootstrap node %d: %v", i+1, err)
		}
	}
	return sn
}

func (sn *simNet) identify(p dht.Peer) (addr.NodeID, bool) {
	id, ok := sn.ids[p.Key]
	return id, ok
}

// trueClosest returns the indexes of the n nodes closest to target among
// those ok accepts.
func (sn *simNet) trueClosest(target dht.Key, n int, ok func(int) bool) []int {
	var idx []int
	for i := range sn.nodes {
		if ok == nil || ok(i) {
			idx = append(idx, i)
		}
	}
	slices.SortFunc(idx, func(a, b int) int { return dht.CompareDistance(target, sn.nodes[a].key, sn.nodes[b].key) })
	return idx[:min(n, len(idx))]
}

// publishAll has every node publish its own record (NodeKey) with seq.
func (sn *simNet) publishAll(t *testing.T, seq uint64) {
	t.Helper()
	exp := time.Now().Add(time.Hour)
	parallel(len(sn.nodes), func(i int) {
		nd := sn.nodes[i]
		if _, err := nd.d.Put(context.Background(), nd.key, record(nd.key, seq, exp, nd.c.ID.String())); err != nil {
			t.Errorf("node %d put: %v", i, err)
		}
	})
}

// parallel runs f(0..n-1) on a few workers.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// lookupReport aggregates lookups.
type lookupReport struct {
	mu       sync.Mutex
	total    int
	ok       int
	hops     []int
	messages []int
}

func (r *lookupReport) add(ok bool, st dht.LookupStats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	if ok {
		r.ok++
	}
	r.hops = append(r.hops, st.Hops)
	r.messages = append(r.messages, st.Messages)
}

func pct(xs []int, p float64) int {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func mean(xs []int) float64 {
	t := 0
	for _, x := range xs {
		t += x
	}
	return float64(t) / float64(max(1, len(xs)))
}

func (r *lookupReport) String() string {
	return fmt.Sprintf("success %d/%d (%.2f%%), hops median %d p99 %d, messages median %d p99 %d mean %.1f",
		r.ok, r.total, 100*float64(r.ok)/float64(max(1, r.total)),
		pct(r.hops, 0.5), pct(r.hops, 0.99), pct(r.messages, 0.5), pct(r.messages, 0.99), mean(r.messages))
}

func (r *lookupReport) success() float64 { return float64(r.ok) / float64(max(1, r.total)) }

const simN = 200

func lookupsPerNode(t *testing.T) int {
	if testing.Short() {
		return 3
	}
	return 10
}

// TestDHTNetwork runs in a synctest bubble: the in-memory transport has no
// latency, and virtual time keeps the 40 ms request timeout from firing
// spuriously when the machine is busy (it made this test flaky).
func TestDHTNetwork(t *testing.T) { synctest.Test(t, testDHTNetwork) }

func testDHTNetwork(t *testing.T) {
	sn := newSimNet(t, simN, nil)
	sn.publishAll(t, 1)
	per := lookupsPerNode(t)

	var gets, finds lookupReport
	parallel(len(sn.nodes), func(i int) {
		nd := sn.nodes[i]
		r := mrand.New(mrand.NewPCG(uint64(i), 1))
		for range per {
			j := r.IntN(len(sn.nodes))
			want := sn.nodes[j].key
			rec, st, err := nd.d.Get(context.Background(), want)
			gets.add(err == nil && rec.Seq == 1, st)
			if err != nil {
				t.Errorf("node %d get node %d record: %v", i, j, err)
			}

			var target dht.Key
			rand.Read(target[:])
			cs, st, err := nd.d.FindNode(context.Background(), target)
			// "Should find": the true closest node other than itself,
			// and most of the true k closest.
			truth := sn.trueClosest(target, dht.DefaultK, func(x int) bool { return x != i })
			ok := err == nil && len(cs) > 0 && cs[0].ID == sn.nodes[truth[0]].c.ID
			if ok {
				got := map[addr.NodeID]bool{}
				for _, c := range cs {
					got[c.ID] = true
				}
				hit := 0
				for _, x := range truth {
					if got[sn.nodes[x].c.ID] {
						hit++
					}
				}
				ok = hit >= len(truth)-1
				if !ok {
					t.Errorf("node %d find %s: %d of the true %d closest", i, target.Short(), hit, len(truth))
				}
			} else {
				t.Errorf("node %d find %s: closest %v, err %v", i, target.Short(), cs, err)
			}
			finds.add(ok, st)
		}
	})
	t.Logf("N=%d honest Get:      %s", simN, &gets)
	t.Logf("N=%d honest FindNode: %s", simN, &finds)
	if gets.success() < 1 || finds.success() < 1 {
		t.Errorf("success below 100%%")
	}
	if m := pct(gets.hops, 0.5); m > 3 {
		t.Errorf("median Get hops %d > 3", m)
	}
	if m := pct(finds.messages, 0.99); m > 80 {
		t.Errorf("p99 FindNode messages %d > 80", m)
	}
	if m := pct(gets.messages, 0.99); m > 60 {
		t.Errorf("p99 Get messages %d > 60", m)
	}
}

// Kinds of faulty node.
type fault int

const (
	faultSilent fault = iota
	faultGarbage
	faultWrongContacts
	faultStale
)

func (f fault) String() string {
	return [...]string{"silent", "garbage", "wrong-contacts", "stale"}[f]
}

// corrupt makes node i behave as kind f. It replaces the DHT's handlers on
// the node's transport.
func (sn *simNet) corrupt(i int, f fault) {
	nd := sn.nodes[i]
	far := func(target dht.Key) []dht.Contact {
		idx := sn.trueClosest(target, len(sn.nodes), nil)
		var cs []dht.Contact
		for _, x := range slices.Backward(idx) {
			cs = append(cs, sn.nodes[x].c)
			if len(cs) == dht.MaxContacts {
				break
			}
		}
		return cs
	}
	switch f {
	case faultSilent:
		sn.net.Remove(nd.c.Peer.Addr)
	case faultGarbage:
		junk := func(ctx context.Context, from dht.Peer, body []byte) ([]byte, error) {
			var req dht.FindValueRequest
			if req.UnmarshalBinary(body) == nil {
				v := make([]byte, 80)
				rand.Read(v)
				return dht.FindValueResponse{Found: true, Value: v}.MarshalBinary()
			}
			return []byte{1, 0x85, 0xff, 0xff}, nil
		}
		nd.tr.Handle(dht.MsgFindValue, junk)
		nd.tr.Handle(dht.MsgFindNode, junk)
	case faultWrongContacts:
		nd.tr.Handle(dht.MsgFindValue, func(ctx context.Context, from dht.Peer, body []byte) ([]byte, error) {
			var req dht.FindValueRequest
			if err := req.UnmarshalBinary(body); err != nil {
				return nil, err
			}
			return dht.FindValueResponse{Contacts: far(req.Key)}.MarshalBinary()
		})
		nd.tr.Handle(dht.MsgFindNode, func(ctx context.Context, from dht.Peer, body []byte) ([]byte, error) {
			var req dht.FindNodeRequest
			if err := req.UnmarshalBinary(body); err != nil {
				return nil, err
			}
			return dht.FindNodeResponse{Contacts: far(req.Target)}.MarshalBinary()
		})
	case faultStale:
		nd.tr.Handle(dht.MsgFindValue, func(ctx context.Context, from dht.Peer, body []byte) ([]byte, error) {
			var req dht.FindValueRequest
			if err := req.UnmarshalBinary(body); err != nil {
				return nil, err
			}
			// A validly signed but superseded record.
			return dht.FindValueResponse{Found: true, Value: record(req.Key, 1, time.Now().Add(time.Hour), "old")}.MarshalBinary()
		})
	}
}

func TestDHTFaultyNodes(t *testing.T) {
	cases := []struct {
		name   string
		faults []fault
	}{
		{"silent", []fault{faultSilent}},
		{"garbage", []fault{faultGarbage}},
		{"wrong-contacts", []fault{faultWrongContacts}},
		{"stale", []fault{faultStale}},
		{"mixed", []fault{faultSilent, faultGarbage, faultWrongContacts, faultStale}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sn := newSimNet(t, simN, nil)
			sn.publishAll(t, 1)
			sn.publishAll(t, 2) // the latest; stale nodes serve seq 1
			r := mrand.New(mrand.NewPCG(7, 7))
			bad := map[int]bool{}
			for _, i := range r.Perm(simN)[:simN/5] {
				bad[i] = true
				sn.corrupt(i, tc.faults[len(bad)%len(tc.faults)])
			}
			honest := func(i int) bool { return !bad[i] }
			per := lookupsPerNode(t)
			var gets, finds lookupReport
			parallel(len(sn.nodes), func(i int) {
				if bad[i] {
					return
				}
				nd := sn.nodes[i]
				r := mrand.New(mrand.NewPCG(uint64(i), 2))
				for range per {
					j := r.IntN(len(sn.nodes))
					for bad[j] {
						j = r.IntN(len(sn.nodes))
					}
					rec, st, err := nd.d.Get(context.Background(), sn.nodes[j].key)
					ok := err == nil && rec.Seq == 2
					if !ok {
						t.Logf("node %d get node %d: seq %d, err %v", i, j, rec.Seq, err)
					}
					gets.add(ok, st)

					var target dht.Key
					rand.Read(target[:])
					cs, st, err := nd.d.FindNode(context.Background(), target)
					truth := sn.trueClosest(target, 1, func(x int) bool { return x != i && honest(x) })
					ok = err == nil && slices.ContainsFunc(cs, func(c dht.Contact) bool { return c.ID == sn.nodes[truth[0]].c.ID })
					finds.add(ok, st)
				}
			})
			t.Logf("N=%d 20%% %s Get:      %s", simN, tc.name, &gets)
			t.Logf("N=%d 20%% %s FindNode: %s", simN, tc.name, &finds)
			if gets.success() < 0.995 {
				t.Errorf("Get success %.2f%% < 99.5%%", 100*gets.success())
			}
			if finds.success() < 0.99 {
				t.Errorf("FindNode success %.2f%% < 99%%", 100*finds.success())
			}
			if tc.name == "garbage" {
				banned := 0
				for i, nd := range sn.nodes {
					if bad[i] {
						continue
					}
					for b := range bad {
						if nd.d.Table().Banned(sn.nodes[b].key) {
							banned++
						}
					}
				}
				t.Logf("garbage: %d (honest node, liar) bans", banned)
				if banned == 0 {
					t.Errorf("no honest node banned a liar")
				}
			}
		})
	}
}

func TestDHTRepublish(t *testing.T) {
	sn := newSimNet(t, 40, nil)
	nd := sn.nodes[5]
	k := key("republished")
	v := record(k, 3, time.Now().Add(time.Hour), "x")
	n, err := nd.d.Put(context.Background(), k, v)
	if err != nil || n < dht.DefaultK {
		t.Fatalf("put: stored on %d, %v", n, err)
	}
	// Every holder but one loses it.
	var holder *simNode
	for _, o := range sn.nodes {
		if _, ok := o.st.Get(k); ok {
			if holder == nil {
				holder = o
				continue
			}
			o.st.Delete(k)
		}
	}
	if holder == nil {
		t.Fatal("nobody holds the record")
	}
	got, err := holder.d.Republish(context.Background())
	if err != nil || got != 1 {
		t.Fatalf("republish: %d, %v", got, err)
	}
	held := 0
	for _, o := range sn.nodes {
		if _, ok := o.st.Get(k); ok {
			held++
		}
	}
	if held < dht.DefaultK {
		t.Errorf("after republish %d nodes hold the record, want >= %d", held, dht.DefaultK)
	}
	rec, _, err := sn.nodes[30].d.Get(context.Background(), k)
	if err != nil || rec.Seq != 3 {
		t.Errorf("get after republish: %+v, %v", rec, err)
	}
}

func TestDHTPutRejectsInvalid(t *testing.T) {
	sn := newSimNet(t, 5, nil)
	k := key("bad")
	bad := record(k, 1, time.Now().Add(time.Hour), "x")
	bad[len(bad)-1] ^= 1
	if _, err := sn.nodes[1].d.Put(context.Background(), k, bad); !errors.Is(err, dht.ErrInvalid) {
		t.Errorf("put invalid: %v, want ErrInvalid", err)
	}
	// Replay: publish seq 2 then seq 1.
	if _, err := sn.nodes[1].d.Put(context.Background(), k, record(k, 2, time.Now().Add(time.Hour), "x")); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.nodes[2].d.Put(context.Background(), k, record(k, 1, time.Now().Add(time.Hour), "x")); !errors.Is(err, dht.ErrReplay) {
		t.Errorf("put replay: %v, want ErrReplay", err)
	}
	if _, _, err := sn.nodes[3].d.Get(context.Background(), key("absent")); !errors.Is(err, dht.ErrNotFound) {
		t.Errorf("get absent: %v, want ErrNotFound", err)
	}
}

func TestDHTBootstrapFailures(t *testing.T) {
	net := dhttest.NewNetwork()
	st := newStore(t, newClock(), nil)
	d, err := dht.New(dht.Options{Self: dht.Contact{ID: nodeID(1), Peer: peer(1)}, Transport: net.Add(peer(1)), Store: st, Validator: testValidator, Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Bootstrap(context.Background(), []dht.Peer{peer(99)}); !errors.Is(err, dht.ErrNoContacts) {
		t.Errorf("bootstrap from nobody: %v, want ErrNoContacts", err)
	}
	if _, _, err := d.FindNode(context.Background(), key("x")); !errors.Is(err, dht.ErrNoContacts) {
		t.Errorf("find with empty table: %v, want ErrNoContacts", err)
	}
	d.Close()
	d.Close()
	if _, _, err := d.Get(context.Background(), key("x")); !errors.Is(err, dht.ErrDHTClosed) {
		t.Errorf("get after close: %v", err)
	}
}

func TestNewValidatesOptions(t *testing.T) {
	net := dhttest.NewNetwork()
	st := newStore(t, newClock(), nil)
	good := dht.Options{Self: dht.Contact{ID: nodeID(1), Peer: peer(1)}, Transport: net.Add(peer(1)), Store: st, Validator: testValidator}
	for name, mod := range map[string]func(*dht.Options){
		"no id":        func(o *dht.Options) { o.Self.ID = addr.NodeID{} },
		"no transport": func(o *dht.Options) { o.Transport = nil },
		"no store":     func(o *dht.Options) { o.Store = nil },
		"no validator": func(o *dht.Options) { o.Validator = nil },
		"k too big":    func(o *dht.Options) { o.K = dht.MaxContacts + 1 },
	} {
		o := good
		mod(&o)
		if _, err := dht.New(o); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// TestLookupTermination checks that a lookup stops once the k closest
// have answered (a bounded number of messages on a network far larger
// than k), and that one where nobody answers ends after the timeouts.
func TestLookupTermination(t *testing.T) {
	sn := newSimNet(t, 60, func(o *dht.Options) { o.K = 5 })
	for range 20 {
		var target dht.Key
		rand.Read(target[:])
		cs, st, err := sn.nodes[10].d.FindNode(context.Background(), target)
		if err != nil || len(cs) != 5 {
			t.Fatalf("find: %d contacts, %v", len(cs), err)
		}
		if st.Messages > 25 || st.PathsSucceeded != 1 {
			t.Errorf("find %s: %+v, want <= 25 messages and converged", target.Short(), st)
		}
		truth := sn.trueClosest(target, 5, func(x int) bool { return x != 10 })
		for i, x := range truth {
			if cs[i].ID != sn.nodes[x].c.ID {
				t.Errorf("find %s: result %d is %s, want %s", target.Short(), i, cs[i].ID.Short(), sn.nodes[x].c.ID.Short())
			}
		}
	}
	// Everyone else goes silent.
	for _, nd := range sn.nodes[1:] {
		sn.net.Remove(nd.c.Peer.Addr)
	}
	start := time.Now()
	_, st, err := sn.nodes[0].d.FindNode(context.Background(), key("anything"))
	if err == nil {
		t.Errorf("find on a silent network succeeded")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("find on a silent network took %v (%+v)", el, st)
	}
}
