package nat

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/crypto/nacl/box"
)

func TestPrecomputeMatchesBox(t *testing.T) {
	a, b := newKey(t), newKey(t)
	pubB, _ := publicKey(&b)
	got, err := precompute(&pubB, &a)
	if err != nil {
		t.Fatal(err)
	}
	var want [32]byte
	box.Precompute(&want, &pubB, &a)
	if *got != want {
		t.Fatalf("precompute differs from box.Precompute")
	}
}

func TestPrecomputeRejectsLowOrder(t *testing.T) {
	priv := newKey(t)
	for _, pub := range [][32]byte{{}, {1}} { // zero and the identity point
		if _, err := precompute(&pub, &priv); !errors.Is(err, ErrBadKey) {
			t.Errorf("precompute(%x) = %v, want ErrBadKey", pub[:4], err)
		}
	}
}

func TestPacketRoundTrip(t *testing.T) {
	shared := [32]byte{7}
	tests := []struct {
		name  string
		plain bool
		p     payload
	}{
		{"request", false, payload{typ: MsgFindValue, txid: 1, body: []byte("key")}},
		{"empty body", false, payload{typ: MsgPing, txid: 1 << 63}},
		{"response", false, payload{typ: MsgStore, txid: 42, flags: payloadResponse, body: []byte("ok")}},
		{"error", false, payload{typ: MsgJoin, txid: 9, flags: payloadResponse | payloadError, body: []byte("nope")}},
		{"max body", false, payload{typ: MsgFindNode, txid: 3, body: bytes.Repeat([]byte{0xAA}, MaxBodySize)}},
		{"plain hello", true, payload{typ: MsgHello, txid: 5, body: []byte("record")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := header{sender: [32]byte{1, 2, 3}, nonce: [24]byte{4, 5, 6}}
			var pkt []byte
			if tt.plain {
				h.flags = FlagPlain
				pkt = plainPacket(&h, &tt.p)
			} else {
				pkt = sealPacket(&h, &tt.p, &shared)
			}
			if len(pkt) > MaxControlSize {
				t.Fatalf("packet %d bytes > MaxControlSize", len(pkt))
			}
			if classify(pkt) != kindControl {
				t.Fatalf("packet does not classify as control")
			}
			gh, rest, err := parseHeader(pkt)
			if err != nil {
				t.Fatal(err)
			}
			if gh != h {
				t.Fatalf("header = %+v, want %+v", gh, h)
			}
			var got payload
			if tt.plain {
				got, err = parsePayload(rest)
			} else {
				got, err = openPayload(&gh, rest, &shared)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.typ != tt.p.typ || got.txid != tt.p.txid || got.flags != tt.p.flags || !bytes.Equal(got.body, tt.p.body) {
				t.Fatalf("payload = %+v, want %+v", got, tt.p)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	good := plainPacket(&header{flags: FlagPlain}, &payload{typ: MsgHello})
	mut := func(f func([]byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		pkt  []byte
	}{
		{"short", good[:headerSize-1]},
		{"too large", make([]byte, MaxControlSize+1)},
		{"magic", mut(func(b []byte) []byte { b[0] = 0; return b })},
		{"version", mut(func(b []byte) []byte { b[4] = 2; return b })},
		{"header flags", mut(func(b []byte) []byte { b[5] |= 0x80; return b })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := parseHeader(tt.pkt); !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseHeader = %v, want ErrMalformed", err)
			}
		})
	}
	payloads := []struct {
		name string
		b    []byte
	}{
		{"short", make([]byte, payloadHdrSize-1)},
		{"unknown flags", []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0x80}},
		{"error without response", []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, payloadError}},
	}
	for _, tt := range payloads {
		t.Run("payload "+tt.name, func(t *testing.T) {
			if _, err := parsePayload(tt.b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("parsePayload = %v, want ErrMalformed", err)
			}
		})
	}
}

// FuzzParsePacket feeds arbitrary bytes to the control packet decoders: they
// must not panic, and whatever parses must re-encode to the same bytes.
func FuzzParsePacket(f *testing.F) {
	shared := [32]byte{9}
	f.Add(plainPacket(&header{flags: FlagPlain}, &payload{typ: MsgHello, txid: 1, body: []byte("hi")}))
	f.Add(sealPacket(&header{}, &payload{typ: MsgPing, txid: 2, flags: payloadResponse}, &shared))
	f.Add([]byte{0xF7, 'w', 'f', 't'})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, rest, err := parseHeader(b)
		if err != nil {
			return
		}
		if enc := appendHeader(nil, &h); !bytes.Equal(enc, b[:headerSize]) {
			t.Fatalf("header re-encodes to %x, want %x", enc, b[:headerSize])
		}
		if h.flags&FlagPlain == 0 {
			if p, err := openPayload(&h, rest, &shared); err == nil {
				if again := sealPacket(&h, &p, &shared); !bytes.Equal(again, b) {
					t.Fatalf("sealed packet does not round-trip")
				}
			}
			return
		}
		p, err := parsePayload(rest)
		if err != nil {
			return
		}
		if enc := appendPayload(nil, &p); !bytes.Equal(enc, rest) {
			t.Fatalf("payload re-encodes to %x, want %x", enc, rest)
		}
	})
}

// FuzzParsePayload round-trips the (opened) payload decoder.
func FuzzParsePayload(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 'x'})
	f.Add([]byte{3, 0, 0, 0, 0, 0, 0, 0, 1, 3, 'e'})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePayload(b)
		if err != nil {
			return
		}
		if enc := appendPayload(nil, &p); !bytes.Equal(enc, b) {
			t.Fatalf("payload re-encodes to %x, want %x", enc, b)
		}
	})
}

// FuzzHandleControl drives a live Conn's control path with arbitrary
// packets from a fixed source: nothing may panic and every packet must be
// accounted for.
func FuzzHandleControl(f *testing.F) {
	c, err := Listen(Config{PrivateKey: [32]byte{1}})
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	peerPriv := [32]byte{2}
	peerPub, _ := publicKey(&peerPriv)
	cpub := c.PublicKey()
	k, _ := precompute(&cpub, &peerPriv)
	f.Add(sealPacket(&header{sender: peerPub}, &payload{typ: MsgPing, txid: 1}, k))
	f.Add(sealPacket(&header{sender: peerPub}, &payload{typ: MsgPing, txid: 1, flags: payloadResponse}, k))
	f.Add(plainPacket(&header{flags: FlagPlain}, &payload{typ: MsgHello}))
	f.Add(plainPacket(&header{flags: FlagPlain}, &payload{typ: MsgStore}))
	from := c.LocalAddr() // replies go to ourselves and are dropped as unmatched
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > MaxControlSize {
			return
		}
		c.handleControl(b, from)
	})
}
