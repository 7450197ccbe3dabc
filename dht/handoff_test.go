package dht_test

import (
	"context"
	"testing"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/dht/dhttest"
)

// TestHandOff: records put while a node was away are handed to it when it
// joins, by the nodes holding them, for the keys it is now among the k
// closest to; a key it is the farthest node from is not handed to it.
func TestHandOff(t *testing.T) {
	const old, k = 20, 4
	net := dhttest.NewNetwork()
	ids := make(map[[32]byte]addr.NodeID)
	for i := range old + 1 {
		ids[peer(i+1).Key] = nodeID(i)
	}
	identify := func(p dht.Peer) (addr.NodeID, bool) { id, ok := ids[p.Key]; return id, ok }
	nodes := make([]*dht.DHT, old+1)
	stores := make([]*dht.Store, old+1)
	for i := range nodes {
		st, err := dht.NewStore(dht.StoreOptions{Validator: testValidator, SweepInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		d, err := dht.New(dht.Options{
			Self:      dht.Contact{ID: nodeID(i), Peer: peer(i + 1)},
			Transport: net.Add(peer(i + 1)),
			Store:     st,
			Validator: testValidator,
			Identify:  identify,
			Timeout:   simTimeout,
			K:         k,
		})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i], stores[i] = d, st
		t.Cleanup(func() { d.Close(); st.Close() })
	}
	ctx := context.Background()
	for _, d := range nodes[1:old] {
		if err := d.Bootstrap(ctx, []dht.Peer{peer(1)}); err != nil {
			t.Fatal(err)
		}
	}

	// Keys the newcomer will be the closest node to, and one it will be
	// the farthest from.
	newKey := dht.NodeKey(nodeID(old))
	var near []dht.Key
	for bit := 200; bit < 203; bit++ {
		k := newKey
		k[bit/8] ^= 0x80 >> (bit % 8)
		near = append(near, k)
	}
	var far dht.Key
	for i := 0; ; i++ {
		far = key("far" + string(rune('a'+i)))
		farthest := true
		for j := range old {
			if dht.CompareDistance(far, dht.NodeKey(nodeID(j)), newKey) > 0 {
				farthest = false
				break
			}
		}
		if farthest {
			break
		}
	}
	exp := time.Now().Add(time.Hour)
	for i, key := range append(near, far) {
		if n, err := nodes[1+i].Put(ctx, key, record(key, 1, exp, "v")); err != nil || n < k {
			t.Fatalf("put: stored on %d, %v", n, err)
		}
	}

	start := time.Now()
	if err := nodes[old].Bootstrap(ctx, []dht.Peer{peer(1)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		have := 0
		for _, key := range near {
			if _, ok := stores[old].Get(key); ok {
				have++
			}
		}
		if have == len(near) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the newcomer holds %d of the %d records it is closest to", have, len(near))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("records handed to the newcomer %v after it bootstrapped", time.Since(start))
	if _, ok := stores[old].Get(far); ok {
		t.Errorf("the newcomer was handed a record it is the farthest node from")
	}
}
