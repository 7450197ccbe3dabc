package dht_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/dht/dhttest"
)

// testNet is a client and some honest servers on an in-memory network.
type testNet struct {
	net     *dhttest.Network
	clk     *clock
	client  *dht.Client
	self    *dhttest.Transport
	servers []*dhttest.Transport
	stores  []*dht.Store
}

func newTestNet(t *testing.T, n int) *testNet {
	t.Helper()
	tn := &testNet{net: dhttest.NewNetwork(), clk: newClock()}
	tn.self = tn.net.Add(peer(0))
	c, err := dht.NewClient(dht.ClientOptions{
		Transport: tn.self,
		Validator: testValidator,
		Now:       tn.clk.Now,
		Timeout:   100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	tn.client = c
	for i := range n {
		tn.addServer(t, peer(i+1))
	}
	return tn
}

func (tn *testNet) addServer(t *testing.T, p dht.Peer) {
	t.Helper()
	tr := tn.net.Add(p)
	st := newStore(t, tn.clk, nil)
	if _, err := dht.NewServer(dht.ServerOptions{Transport: tr, Store: st}); err != nil {
		t.Fatal(err)
	}
	tn.servers = append(tn.servers, tr)
	tn.stores = append(tn.stores, st)
}

func (tn *testNet) peers() []dht.Peer {
	var ps []dht.Peer
	for _, s := range tn.servers {
		ps = append(ps, s.Peer())
	}
	return ps
}

// liar adds a server that answers every request with reply.
func (tn *testNet) liar(p dht.Peer, reply func() ([]byte, error)) dht.Peer {
	tr := tn.net.Add(p)
	for _, typ := range []dht.MsgType{dht.MsgFindValue, dht.MsgStore} {
		tr.Handle(typ, func(context.Context, dht.Peer, []byte) ([]byte, error) { return reply() })
	}
	return p
}

func found(v []byte) func() ([]byte, error) {
	return func() ([]byte, error) { return dht.FindValueResponse{Found: true, Value: v}.MarshalBinary() }
}

func TestPutGet(t *testing.T) {
	tn := newTestNet(t, 3)
	ctx := t.Context()
	k := key("alice")
	v := record(k, 1, epoch.Add(time.Hour), "hello")
	if err := tn.client.Put(ctx, tn.peers(), k, v); err != nil {
		t.Fatal(err)
	}
	for i, st := range tn.stores {
		if rec, ok := st.Get(k); !ok || !bytes.Equal(rec.Value, v) {
			t.Errorf("server %d does not hold the record", i)
		}
	}
	rec, err := tn.client.Get(ctx, tn.peers(), k)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Seq != 1 || !bytes.Equal(rec.Value, v) || !rec.Expires.Equal(epoch.Add(time.Hour)) || rec.Key != k {
		t.Errorf("Get = %+v", rec)
	}
	// Republishing the same record is idempotent.
	if err := tn.client.Put(ctx, tn.peers(), k, v); err != nil {
		t.Fatalf("republish: %v", err)
	}
}

func TestGetToleratesLiars(t *testing.T) {
	tn := newTestNet(t, 2)
	ctx := t.Context()
	k := key("alice")
	exp := epoch.Add(time.Hour)
	latest := record(k, 5, exp, "latest")
	// Server 0 is current; server 1 only saw an older record.
	if err := tn.stores[0].Put(peer(0), k, latest); err != nil {
		t.Fatal(err)
	}
	if err := tn.stores[1].Put(peer(0), k, record(k, 3, exp, "stale")); err != nil {
		t.Fatal(err)
	}
	forged := record(k, 100, exp, "forged")
	forged[len(forged)-1] ^= 1
	servers := append(tn.peers(),
		tn.liar(peer(10), func() ([]byte, error) { return []byte("\x01\x83garbage"), nil }),
		tn.liar(peer(11), found(forged)),
		tn.liar(peer(12), found(record(key("bob"), 200, exp, "other key"))),
		tn.liar(peer(13), found(record(k, 300, epoch, "expired"))),
		tn.liar(peer(14), func() ([]byte, error) { return nil, errors.New("boom") }),
		tn.liar(peer(15), func() ([]byte, error) { return dht.FindValueResponse{}.MarshalBinary() }),
		peer(16), // nobody there: times out
	)
	start := time.Now()
	rec, err := tn.client.Get(ctx, servers, k)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Seq != 5 || !bytes.Equal(rec.Value, latest) {
		t.Errorf("Get = seq %d %q, want seq 5", rec.Seq, rec.Value)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Get took %v", d)
	}
}

func TestGetTieBreakDeterministic(t *testing.T) {
	tn := newTestNet(t, 0)
	k := key("a")
	exp := epoch.Add(time.Hour)
	a, b := record(k, 7, exp, "a"), record(k, 7, exp, "b")
	lo := a
	if bytes.Compare(b, a) < 0 {
		lo = b
	}
	for _, order := range [][][]byte{{a, b}, {b, a}} {
		s1 := tn.liar(peer(20), found(order[0]))
		s2 := tn.liar(peer(21), found(order[1]))
		rec, err := tn.client.Get(t.Context(), []dht.Peer{s1, s2}, k)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rec.Value, lo) {
			t.Errorf("order %q: got %q", order, rec.Value)
		}
	}
}

func TestGetNotFoundReportsWhy(t *testing.T) {
	tn := newTestNet(t, 1)
	k := key("nobody")
	servers := append(tn.peers(),
		tn.liar(peer(10), func() ([]byte, error) { return []byte{0xde, 0xad}, nil }),
		tn.liar(peer(11), found([]byte("unsigned"))),
		peer(12),
		peer(1), // duplicate: asked once
	)
	_, err := tn.client.Get(t.Context(), servers, k)
	if !errors.Is(err, dht.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	q, ok := errors.AsType[*dht.QueryError](err)
	if !ok || len(q.Failures) != 4 {
		t.Fatalf("err = %#v", err)
	}
	for _, want := range []error{dht.ErrMalformed, dht.ErrInvalid, context.DeadlineExceeded} {
		if !errors.Is(err, want) {
			t.Errorf("error does not wrap %v", want)
		}
	}
	msg := err.Error()
	for _, want := range []string{"server has no record", "malformed", "invalid record", "deadline exceeded", "asked 4 servers"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	t.Log(msg)
}

func TestGetExpiredAnswer(t *testing.T) {
	tn := newTestNet(t, 1)
	k := key("a")
	if err := tn.stores[0].Put(peer(0), k, record(k, 1, epoch.Add(time.Minute), "")); err != nil {
		t.Fatal(err)
	}
	// A server whose clock lags still serves the record; the client's
	// clock says it has expired.
	lagging := tn.liar(peer(10), found(record(k, 1, epoch.Add(time.Minute), "")))
	tn.clk.Advance(time.Minute)
	_, err := tn.client.Get(t.Context(), append(tn.peers(), lagging), k)
	if !errors.Is(err, dht.ErrNotFound) || !errors.Is(err, dht.ErrExpired) {
		t.Fatalf("err = %v, want ErrNotFound and ErrExpired", err)
	}
}

func TestGetNoServers(t *testing.T) {
	tn := newTestNet(t, 0)
	if _, err := tn.client.Get(t.Context(), nil, key("a")); !errors.Is(err, dht.ErrNoServers) {
		t.Errorf("Get: %v", err)
	}
	k := key("a")
	if err := tn.client.Put(t.Context(), nil, k, record(k, 1, epoch.Add(time.Hour), "")); !errors.Is(err, dht.ErrNoServers) {
		t.Errorf("Put: %v", err)
	}
}

func TestGetCancelled(t *testing.T) {
	tn := newTestNet(t, 0)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	c, err := dht.NewClient(dht.ClientOptions{Transport: tn.self, Validator: testValidator, Timeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(ctx, []dht.Peer{peer(50), peer(51)}, key("a"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestPutSucceedsIfAnyAccepts(t *testing.T) {
	tn := newTestNet(t, 2)
	k := key("a")
	exp := epoch.Add(time.Hour)
	// Server 0 already holds a newer record.
	if err := tn.stores[0].Put(peer(0), k, record(k, 9, exp, "")); err != nil {
		t.Fatal(err)
	}
	servers := append(tn.peers(),
		tn.liar(peer(10), func() ([]byte, error) { return []byte("junk"), nil }),
		peer(11))
	if err := tn.client.Put(t.Context(), servers, k, record(k, 4, exp, "")); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if rec, _ := tn.stores[1].Get(k); rec.Seq != 4 {
		t.Errorf("server 1 holds seq %d", rec.Seq)
	}
	if rec, _ := tn.stores[0].Get(k); rec.Seq != 9 {
		t.Errorf("server 0 holds seq %d", rec.Seq)
	}
}

func TestPutRejected(t *testing.T) {
	k := key("a")
	exp := epoch.Add(time.Hour)
	tests := []struct {
		name    string
		setup   func(tn *testNet)
		value   []byte
		want    error
		wantMsg string
	}{
		{
			name:    "replay",
			setup:   func(tn *testNet) { tn.stores[0].Put(peer(0), k, record(k, 9, exp, "")) },
			value:   record(k, 4, exp, ""),
			want:    dht.ErrReplay,
			wantMsg: "publish with seq > 9",
		},
		{
			name:  "conflict",
			setup: func(tn *testNet) { tn.stores[0].Put(peer(0), k, record(k, 4, exp, "x")) },
			value: record(k, 4, exp, "y"),
			want:  dht.ErrConflict,
		},
		{
			name: "rate limited",
			setup: func(tn *testNet) {
				for seq := range uint64(dht.DefaultStoreBurst) {
					tn.stores[0].Put(peer(0), k, record(k, seq, exp, ""))
				}
			},
			value: record(k, 100, exp, ""),
			want:  dht.ErrRateLimited,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tn := newTestNet(t, 0)
			st, err := dht.NewStore(dht.StoreOptions{Validator: testValidator, Now: tn.clk.Now, SweepInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			tn.stores = []*dht.Store{st}
			if _, err := dht.NewServer(dht.ServerOptions{Transport: tn.net.Add(peer(1)), Store: st}); err != nil {
				t.Fatal(err)
			}
			tt.setup(tn)
			err = tn.client.Put(t.Context(), []dht.Peer{peer(1)}, k, tt.value)
			if !errors.Is(err, tt.want) || !errors.Is(err, dht.ErrNotStored) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err %q lacks %q", err, tt.wantMsg)
			}
			t.Log(err)
		})
	}
}

func TestPutValidatesLocally(t *testing.T) {
	tn := newTestNet(t, 1)
	k := key("a")
	if err := tn.client.Put(t.Context(), tn.peers(), k, []byte("unsigned")); !errors.Is(err, dht.ErrInvalid) {
		t.Errorf("invalid: %v", err)
	}
	if err := tn.client.Put(t.Context(), tn.peers(), k, record(k, 1, epoch, "")); !errors.Is(err, dht.ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	if st := tn.stores[0].Stats(); st.Invalid+st.Expired != 0 {
		t.Errorf("invalid records reached the server: %+v", st)
	}
}

func TestServerRejectsMalformedRequests(t *testing.T) {
	tn := newTestNet(t, 1)
	for _, typ := range []dht.MsgType{dht.MsgFindValue, dht.MsgStore, dht.MsgFindNode} {
		_, err := tn.self.Call(t.Context(), peer(1), typ, []byte{1, 0x99})
		var re *dhttest.RemoteError
		if !errors.As(err, &re) || !strings.Contains(re.Msg, "malformed") {
			t.Errorf("%s: err = %v", typ, err)
		}
	}
}

func TestServerContacts(t *testing.T) {
	net := dhttest.NewNetwork()
	st := newStore(t, newClock(), nil)
	var id addr.NodeID
	id[0] = 0x42
	good := dht.Contact{ID: id, Peer: peer(7)}
	closest := func(target dht.Key, n int) []dht.Contact {
		cs := []dht.Contact{good, {ID: id}} // second has no address: dropped
		for range 30 {
			cs = append(cs, good)
		}
		return cs
	}
	if _, err := dht.NewServer(dht.ServerOptions{Transport: net.Add(peer(1)), Store: st, Closest: closest}); err != nil {
		t.Fatal(err)
	}
	self := net.Add(peer(0))

	body, _ := dht.FindNodeRequest{Target: key("t")}.MarshalBinary()
	reply, err := self.Call(t.Context(), peer(1), dht.MsgFindNode, body)
	if err != nil {
		t.Fatal(err)
	}
	var fn dht.FindNodeResponse
	if err := fn.UnmarshalBinary(reply); err != nil {
		t.Fatal(err)
	}
	if len(fn.Contacts) != dht.MaxContacts || fn.Contacts[0] != good || fn.Contacts[1] != good {
		t.Errorf("FIND_NODE contacts = %d: %+v", len(fn.Contacts), fn.Contacts[:2])
	}

	body, _ = dht.FindValueRequest{Key: key("missing")}.MarshalBinary()
	reply, err = self.Call(t.Context(), peer(1), dht.MsgFindValue, body)
	if err != nil {
		t.Fatal(err)
	}
	var fv dht.FindValueResponse
	if err := fv.UnmarshalBinary(reply); err != nil {
		t.Fatal(err)
	}
	if fv.Found || len(fv.Contacts) != dht.MaxContacts {
		t.Errorf("FIND_VALUE miss = found %v, %d contacts", fv.Found, len(fv.Contacts))
	}
}

func TestServerWithoutRoutingTable(t *testing.T) {
	tn := newTestNet(t, 1)
	body, _ := dht.FindNodeRequest{Target: key("t")}.MarshalBinary()
	reply, err := tn.self.Call(t.Context(), peer(1), dht.MsgFindNode, body)
	if err != nil {
		t.Fatal(err)
	}
	var fn dht.FindNodeResponse
	if err := fn.UnmarshalBinary(reply); err != nil || len(fn.Contacts) != 0 {
		t.Errorf("FIND_NODE = %+v, %v", fn, err)
	}
}

func TestNewClientServerOptions(t *testing.T) {
	tr := dhttest.NewNetwork().Add(peer(0))
	if _, err := dht.NewClient(dht.ClientOptions{Validator: testValidator}); err == nil {
		t.Error("NewClient without Transport succeeded")
	}
	if _, err := dht.NewClient(dht.ClientOptions{Transport: tr}); err == nil {
		t.Error("NewClient without Validator succeeded")
	}
	if _, err := dht.NewServer(dht.ServerOptions{Transport: tr}); err == nil {
		t.Error("NewServer without Store succeeded")
	}
	if _, err := dht.NewServer(dht.ServerOptions{}); err == nil {
		t.Error("NewServer without Transport succeeded")
	}
}
