package weft

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
)

// DefaultStateDir returns the per-user state directory: $WEFT_STATE if set,
// else $XDG_STATE_HOME/weft, else ~/.local/state/weft (on macOS
// ~/Library/Application Support/weft).
func DefaultStateDir() string {
	if d := os.Getenv("WEFT_STATE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "weft")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), fmt.Sprintf("weft-%d", os.Getuid()))
	}
	if runtime.GOOS == "darwin" {
		return filepath.Join(home, "Library", "Application Support", "weft")
	}
	return filepath.Join(home, ".local", "state", "weft")
}

// nodeFile is the node's own settings in the state directory, besides the
// files package trust keeps (identity, genesis, certificate, anchor state).
const nodeFile = "node.json"

// nodeState is what `weft join` and `weft up` remember between runs.
type nodeState struct {
	// Bootstrap are the bootstrap nodes learned from the invite and from
	// --bootstrap.
	Bootstrap []netip.AddrPort `json:"bootstrap,omitempty"`
	// Listen is the UDP address the node last listened on; invites made
	// while the node is down advertise it.
	Listen netip.AddrPort `json:"listen,omitzero"`
	// Endpoints are the addresses the node last advertised.
	Endpoints []netip.AddrPort `json:"endpoints,omitempty"`
	// Peers are the signed records of the peers the node last had
	// tunnels with; a restarted node reconnects to them at once, so they
	// learn its new session (and endpoint) without waiting for a lookup.
	Peers [][]byte `json:"peers,omitempty"`
	// Contacts are DHT contacts of the last run (the closest to the node):
	// seeds for rejoining the DHT when no bootstrap node answers.
	Contacts []netip.AddrPort `json:"dht_contacts,omitempty"`
}

func loadNodeState(dir string) (nodeState, error) {
	var st nodeState
	b, err := os.ReadFile(filepath.Join(dir, nodeFile))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read node state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("node state %s is corrupt (%v): fix or delete it; it only holds bootstrap addresses", filepath.Join(dir, nodeFile), err)
	}
	return st, nil
}

func saveNodeState(dir string, st nodeState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, nodeFile), append(b, '\n'))
}

// writeFileAtomic writes b to a temporary file beside path, syncs it and
// renames it into place with mode 0600, so readers never see a torn file.
func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// mergeAddrPorts appends the addresses of add not already in list.
func mergeAddrPorts(list []netip.AddrPort, add ...netip.AddrPort) []netip.AddrPort {
	for _, a := range add {
		dup := false
		for _, b := range list {
			if a == b {
				dup = true
				break
			}
		}
		if !dup && a.IsValid() {
			list = append(list, a)
		}
	}
	return list
}
