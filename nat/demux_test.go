package nat

import "testing"

func TestClassify(t *testing.T) {
	stun := make([]byte, 20)
	stun[1] = 0x01                                              // binding request
	stun[4], stun[5], stun[6], stun[7] = 0x21, 0x12, 0xA4, 0x42 // magic cookie
	tests := []struct {
		name string
		pkt  []byte
		want kind
	}{
		{"empty", nil, kindUnknown},
		{"short", []byte{1, 0, 0}, kindUnknown},
		{"wg handshake initiation", []byte{1, 0, 0, 0, 9, 9}, kindWireGuard},
		{"wg handshake response", []byte{2, 0, 0, 0}, kindWireGuard},
		{"wg cookie reply", []byte{3, 0, 0, 0}, kindWireGuard},
		{"wg transport", []byte{4, 0, 0, 0, 1, 2, 3}, kindWireGuard},
		{"wg type 5", []byte{5, 0, 0, 0}, kindUnknown},
		{"wg nonzero reserved", []byte{4, 0, 1, 0}, kindUnknown},
		{"control", []byte{0xF7, 'w', 'f', 't', 1}, kindControl},
		{"control bad magic", []byte{0xF7, 'w', 'f', 'x'}, kindUnknown},
		{"stun", stun, kindSTUN},
		{"stun short", stun[:19], kindUnknown},
		{"turn channel", []byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}, kindTURNChannel},
		{"turn channel high", []byte{0x4F, 0xFF, 0, 0}, kindTURNChannel},
		{"turn reserved channel", []byte{0x50, 0x00, 0, 0}, kindUnknown},
		{"dtls", []byte{0x16, 0xFE, 0xFD, 0}, kindUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.pkt); got != tt.want {
				t.Errorf("classify(%x) = %v, want %v", tt.pkt, got, tt.want)
			}
		})
	}
}
