//go:build !linux

package platform

import "golang.zx2c4.com/wireguard/tun"

// TUN is a kernel TUN interface; on this OS there is none (see CreateTUN).
type TUN struct{}

// CreateTUN fails on this OS with an error matching errors.ErrUnsupported.
func CreateTUN(cfg TUNConfig) (*TUN, error) {
	return nil, &unsupportedError{what: "kernel TUN mode", hint: "run without --tun (userspace mode)"}
}

// Device is nil on this OS.
func (t *TUN) Device() tun.Device { return nil }

// Name is "" on this OS.
func (t *TUN) Name() string { return "" }

// Index is 0 on this OS.
func (t *TUN) Index() int { return 0 }

// Offloads is "" on this OS.
func (t *TUN) Offloads() string { return "" }

// Close does nothing on this OS.
func (t *TUN) Close() error { return nil }
