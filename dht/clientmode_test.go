package dht_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/dht/dhttest"
)

// TestClientMode checks that a client DHT bootstraps, puts and gets like a
// server but answers nothing and so enters nobody's table.
func TestClientMode(t *testing.T) {
	sn := newSimNet(t, 40, nil)
	// sn.identify does not name the client, as package weft's Identify
	// excludes clients; and a client never answers, so no lookup learns
	// it from a reply either.
	cp := peer(1000)
	tr := sn.net.Add(cp)
	cl, err := dht.New(dht.Options{
		Self:      dht.Contact{ID: nodeID(1000), Peer: cp},
		Transport: tr,
		Validator: testValidator,
		Identify:  sn.identify,
		Timeout:   simTimeout,
		Client:    true,
	})
	if err != nil {
		t.Fatalf("New client without a Store: %v", err)
	}
	defer cl.Close()
	if !cl.Client() {
		t.Fatal("Client() = false")
	}
	ctx := context.Background()
	if err := cl.Bootstrap(ctx, []dht.Peer{sn.nodes[0].c.Peer}); err != nil {
		t.Fatal(err)
	}
	if cl.Table().Len() < 20 {
		t.Fatalf("client table has %d entries after bootstrap", cl.Table().Len())
	}
	k := dht.NodeKey(nodeID(1000))
	n, err := cl.Put(ctx, k, record(k, 1, time.Now().Add(time.Hour), "client"))
	if err != nil || n < dht.DefaultK {
		t.Fatalf("client Put = %d, %v; want %d remote stores", n, err, dht.DefaultK)
	}
	rec, _, err := sn.nodes[7].d.Get(ctx, k)
	if err != nil || rec.Seq != 1 {
		t.Fatalf("server Get of the client's record = %+v, %v", rec, err)
	}
	if rec, _, err := cl.Get(ctx, k); err != nil || rec.Seq != 1 {
		t.Fatalf("client Get = %+v, %v", rec, err)
	}
	if _, _, err := cl.FindNode(ctx, key("x")); err != nil {
		t.Fatalf("client FindNode: %v", err)
	}
	for _, typ := range []dht.MsgType{dht.MsgFindNode, dht.MsgFindValue, dht.MsgStore, dht.MsgPing} {
		_, err := sn.nodes[0].tr.Call(ctx, cp, typ, nil)
		if _, ok := errors.AsType[*dhttest.RemoteError](err); !ok {
			t.Errorf("client answered %s: %v", typ, err)
		}
	}
	for i, nd := range sn.nodes {
		if nd.d.Table().Contains(k) {
			t.Errorf("server %d has the client in its table", i)
		}
	}
}
