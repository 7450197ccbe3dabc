package dht_test

import (
	"bytes"
	"encoding"
	"reflect"
	"testing"

	"github.com/weft-net/weft/dht"
)

// fuzzDecoder checks that decoding never panics and that whatever decodes
// re-encodes to the same bytes (one encoding per message) and decodes to
// the same value.
func fuzzDecoder[T any, PT interface {
	*T
	encoding.BinaryUnmarshaler
}](f *testing.F, marshal func(T) ([]byte, error), seeds ...T) {
	for _, s := range seeds {
		b, err := marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m T
		if err := PT(&m).UnmarshalBinary(b); err != nil {
			return
		}
		out, err := marshal(m)
		if err != nil {
			t.Fatalf("re-encode of decoded %x: %v", b, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("not canonical:\n in %x\nout %x", b, out)
		}
		var m2 T
		if err := PT(&m2).UnmarshalBinary(out); err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("second decode: %+v, %v; want %+v", m2, err, m)
		}
	})
}

func FuzzFindValueRequest(f *testing.F) {
	fuzzDecoder(f, dht.FindValueRequest.MarshalBinary, dht.FindValueRequest{Key: key("a")})
}

func FuzzFindValueResponse(f *testing.F) {
	fuzzDecoder(f, dht.FindValueResponse.MarshalBinary,
		dht.FindValueResponse{},
		dht.FindValueResponse{Found: true, Value: []byte("value")},
		dht.FindValueResponse{Contacts: []dht.Contact{contact(1, "192.0.2.1:1"), contact(2, "[2001:db8::2]:2")}})
}

func FuzzStoreRequest(f *testing.F) {
	fuzzDecoder(f, dht.StoreRequest.MarshalBinary, dht.StoreRequest{Key: key("a"), Value: []byte("v")})
}

func FuzzStoreResponse(f *testing.F) {
	fuzzDecoder(f, dht.StoreResponse.MarshalBinary,
		dht.StoreResponse{},
		dht.StoreResponse{Status: dht.StatusReplay, StoredSeq: 42, Detail: "stale"})
}

func FuzzFindNodeRequest(f *testing.F) {
	fuzzDecoder(f, dht.FindNodeRequest.MarshalBinary, dht.FindNodeRequest{Target: key("t")})
}

func FuzzFindNodeResponse(f *testing.F) {
	fuzzDecoder(f, dht.FindNodeResponse.MarshalBinary,
		dht.FindNodeResponse{},
		dht.FindNodeResponse{Contacts: []dht.Contact{contact(1, "192.0.2.1:1"), contact(2, "[2001:db8::2]:2")}})
}

func FuzzPingRequest(f *testing.F) {
	fuzzDecoder(f, dht.PingRequest.MarshalBinary, dht.PingRequest{}, dht.PingRequest{Nonce: 0xdeadbeef})
}

func FuzzPingResponse(f *testing.F) {
	fuzzDecoder(f, dht.PingResponse.MarshalBinary, dht.PingResponse{}, dht.PingResponse{Nonce: 42})
}

func FuzzGossipRequest(f *testing.F) {
	fuzzDecoder(f, dht.GossipRequest.MarshalBinary,
		dht.GossipRequest{},
		dht.GossipRequest{Digest: [][8]byte{}},
		dht.GossipRequest{Payloads: [][]byte{[]byte("a"), []byte("revocation")}, Digest: [][8]byte{{1, 2, 3, 4, 5, 6, 7, 8}}})
}

func FuzzGossipResponse(f *testing.F) {
	fuzzDecoder(f, dht.GossipResponse.MarshalBinary,
		dht.GossipResponse{},
		dht.GossipResponse{Payloads: [][]byte{[]byte("a"), []byte("anchor set")}})
}
