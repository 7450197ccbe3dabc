package dhttest_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/dht/dhttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTransport(t *testing.T) {
	n := dhttest.NewNetwork()
	a := n.Add(dht.Peer{Addr: netip.MustParseAddrPort("192.0.2.1:1"), Key: [32]byte{1}})
	bp := dht.Peer{Addr: netip.MustParseAddrPort("192.0.2.2:1"), Key: [32]byte{2}}
	b := n.Add(bp)
	b.Handle(dht.MsgStore, func(_ context.Context, from dht.Peer, body []byte) ([]byte, error) {
		if from != a.Peer() {
			t.Errorf("from = %v", from)
		}
		if bytes.Equal(body, []byte("fail")) {
			return nil, errors.New("nope")
		}
		body[0] = 'X' // must not reach the caller's slice
		return append([]byte("re:"), body...), nil
	})
	ctx := t.Context()
	in := []byte("hi")
	got, err := a.Call(ctx, bp, dht.MsgStore, in)
	if err != nil || string(got) != "re:Xi" || string(in) != "hi" {
		t.Fatalf("Call = %q, %v (in %q)", got, err, in)
	}
	var re *dhttest.RemoteError
	if _, err := a.Call(ctx, bp, dht.MsgStore, []byte("fail")); !errors.As(err, &re) || re.Msg != "nope" {
		t.Errorf("handler error: %v", err)
	}
	if _, err := a.Call(ctx, bp, dht.MsgFindNode, nil); !errors.As(err, &re) {
		t.Errorf("unknown type: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	wrongKey := bp
	wrongKey.Key[0] = 9
	if _, err := a.Call(short, wrongKey, dht.MsgStore, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wrong key: %v", err)
	}
	n.Remove(bp.Addr)
	if _, err := a.Call(short, bp, dht.MsgStore, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("removed: %v", err)
	}
}
