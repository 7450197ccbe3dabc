package dht_test

import (
	"bytes"
	"encoding"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
)

func contact(n int, ap string) dht.Contact {
	var id addr.NodeID
	id[0] = byte(n)
	p := peer(n)
	p.Addr = netip.MustParseAddrPort(ap)
	return dht.Contact{ID: id, Peer: p}
}

type message interface {
	encoding.BinaryMarshaler
}

func TestMessageRoundTrip(t *testing.T) {
	k := key("alice")
	contacts := []dht.Contact{contact(1, "192.0.2.1:51820"), contact(2, "[2001:db8::1]:443")}
	many := make([]dht.Contact, dht.MaxContacts)
	for i := range many {
		many[i] = contact(i, "198.51.100.7:9")
	}
	tests := []struct {
		name string
		msg  message
		new  func() encoding.BinaryUnmarshaler
	}{
		{"find value request", dht.FindValueRequest{Key: k}, func() encoding.BinaryUnmarshaler { return new(dht.FindValueRequest) }},
		{"find value found", dht.FindValueResponse{Found: true, Value: []byte("v")}, func() encoding.BinaryUnmarshaler { return new(dht.FindValueResponse) }},
		{"find value found empty", dht.FindValueResponse{Found: true, Value: []byte{}}, func() encoding.BinaryUnmarshaler { return new(dht.FindValueResponse) }},
		{"find value max", dht.FindValueResponse{Found: true, Value: bytes.Repeat([]byte{7}, dht.MaxValueSize), Contacts: many}, func() encoding.BinaryUnmarshaler { return new(dht.FindValueResponse) }},
		{"find value contacts", dht.FindValueResponse{Contacts: contacts}, func() encoding.BinaryUnmarshaler { return new(dht.FindValueResponse) }},
		{"find value empty", dht.FindValueResponse{}, func() encoding.BinaryUnmarshaler { return new(dht.FindValueResponse) }},
		{"store request", dht.StoreRequest{Key: k, Value: []byte("record")}, func() encoding.BinaryUnmarshaler { return new(dht.StoreRequest) }},
		{"store ok", dht.StoreResponse{StoredSeq: 9}, func() encoding.BinaryUnmarshaler { return new(dht.StoreResponse) }},
		{"store replay", dht.StoreResponse{Status: dht.StatusReplay, StoredSeq: 1<<64 - 1, Detail: "older ✓"}, func() encoding.BinaryUnmarshaler { return new(dht.StoreResponse) }},
		{"find node request", dht.FindNodeRequest{Target: k}, func() encoding.BinaryUnmarshaler { return new(dht.FindNodeRequest) }},
		{"find node response", dht.FindNodeResponse{Contacts: contacts}, func() encoding.BinaryUnmarshaler { return new(dht.FindNodeResponse) }},
		{"find node none", dht.FindNodeResponse{}, func() encoding.BinaryUnmarshaler { return new(dht.FindNodeResponse) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.msg.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary: %v", err)
			}
			if len(b) > dht.MaxMessageSize {
				t.Errorf("encoded %d bytes > MaxMessageSize %d", len(b), dht.MaxMessageSize)
			}
			got := tt.new()
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if g := reflect.ValueOf(got).Elem().Interface(); !reflect.DeepEqual(g, tt.msg) {
				t.Errorf("round trip:\n got %+v\nwant %+v", g, tt.msg)
			}
			// Every proper prefix is rejected, never panics.
			for i := range len(b) {
				if err := tt.new().UnmarshalBinary(b[:i]); !errors.Is(err, dht.ErrMalformed) {
					t.Fatalf("prefix of %d bytes: err = %v, want ErrMalformed", i, err)
				}
			}
			if err := tt.new().UnmarshalBinary(append(b, 0)); !errors.Is(err, dht.ErrMalformed) {
				t.Errorf("trailing byte: err = %v", err)
			}
			bad := bytes.Clone(b)
			bad[0] = 2
			if err := tt.new().UnmarshalBinary(bad); err == nil || !strings.Contains(err.Error(), "version") {
				t.Errorf("version 2: err = %v", err)
			}
		})
	}
}

func TestMessageDecodeErrors(t *testing.T) {
	k := key("x")
	req, _ := dht.FindValueRequest{Key: k}.MarshalBinary()
	c4, _ := dht.FindNodeResponse{Contacts: []dht.Contact{contact(1, "192.0.2.1:1")}}.MarshalBinary()
	c6, _ := dht.FindNodeResponse{Contacts: []dht.Contact{contact(1, "[2001:db8::1]:1")}}.MarshalBinary()
	const famOff = 3 + 64 // header(2) count(1) id(32) key(32)
	mod := func(b []byte, f func([]byte) []byte) []byte { return f(bytes.Clone(b)) }
	tests := []struct {
		name string
		in   []byte
		into encoding.BinaryUnmarshaler
	}{
		{"empty", nil, new(dht.FindValueRequest)},
		{"request as response", req, new(dht.FindValueResponse)},
		{"wrong tag", req, new(dht.StoreRequest)},
		{"unknown flag", []byte{1, 0x83, 2, 0}, new(dht.FindValueResponse)},
		{"value too large", []byte{1, 0x83, 1, 0xff, 0xff}, new(dht.FindValueResponse)},
		{"too many contacts", []byte{1, 0x85, dht.MaxContacts + 1}, new(dht.FindNodeResponse)},
		{"bad family", mod(c4, func(b []byte) []byte { b[famOff] = 5; return b }), new(dht.FindNodeResponse)},
		{"port zero", mod(c4, func(b []byte) []byte { b[len(b)-1], b[len(b)-2] = 0, 0; return b }), new(dht.FindNodeResponse)},
		{"unspecified ip", mod(c4, func(b []byte) []byte { copy(b[famOff+1:], []byte{0, 0, 0, 0}); return b }), new(dht.FindNodeResponse)},
		{"mapped in family 6", mod(c6, func(b []byte) []byte {
			copy(b[famOff+1:], netip.MustParseAddr("::ffff:1.2.3.4").AsSlice())
			return b
		}), new(dht.FindNodeResponse)},
		{"detail not utf8", []byte{1, 0x84, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff}, new(dht.StoreResponse)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.into.UnmarshalBinary(tt.in); !errors.Is(err, dht.ErrMalformed) {
				t.Errorf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestMessageEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		msg  message
	}{
		{"value too large", dht.StoreRequest{Value: make([]byte, dht.MaxValueSize+1)}},
		{"found value too large", dht.FindValueResponse{Found: true, Value: make([]byte, dht.MaxValueSize+1)}},
		{"too many contacts", dht.FindNodeResponse{Contacts: make([]dht.Contact, dht.MaxContacts+1)}},
		{"invalid contact", dht.FindNodeResponse{Contacts: []dht.Contact{{}}}},
		{"zoned contact", dht.FindValueResponse{Contacts: []dht.Contact{contact(1, "[fe80::1%eth0]:5")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := tt.msg.MarshalBinary(); err == nil {
				t.Errorf("MarshalBinary succeeded: %x", b)
			}
		})
	}
}

func TestContactMappedAddressEncodedAsIPv4(t *testing.T) {
	c := contact(1, "[::ffff:192.0.2.1]:7")
	b, err := dht.FindNodeResponse{Contacts: []dht.Contact{c}}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got dht.FindNodeResponse
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if a := got.Contacts[0].Peer.Addr; a != netip.MustParseAddrPort("192.0.2.1:7") {
		t.Errorf("addr = %s", a)
	}
}

func TestStoreResponseDetailClipped(t *testing.T) {
	b, err := dht.StoreResponse{Status: dht.StatusInvalid, Detail: strings.Repeat("é", 200) + "\xff"}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got dht.StoreResponse
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if len(got.Detail) > dht.MaxDetailSize || !strings.HasPrefix(got.Detail, "éé") {
		t.Errorf("detail %d bytes: %q", len(got.Detail), got.Detail)
	}
}

func TestStoreStatusErr(t *testing.T) {
	if dht.StatusOK.Err() != nil {
		t.Error("StatusOK.Err() != nil")
	}
	if !errors.Is(dht.StatusReplay.Err(), dht.ErrReplay) || !errors.Is(dht.StatusRateLimited.Err(), dht.ErrRateLimited) {
		t.Error("status sentinels wrong")
	}
	if dht.StoreStatus(200).Err() == nil {
		t.Error("unknown status is not an error")
	}
}
