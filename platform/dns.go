package platform

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
)

// RecoverDNS restores the resolv.conf that a run which crashed left in
// place, if stateDir holds its backup; it does nothing otherwise (nor for
// "" or in systemd-resolved mode, which needs no recovery). Call it at start
// before SystemUpstreams. logger may be nil.
func RecoverDNS(stateDir string, logger *slog.Logger) error {
	if stateDir == "" {
		return nil
	}
	logger = componentLogger(logger)
	backup := filepath.Join(stateDir, backupName)
	if _, err := os.Stat(backup); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	logger.Warn("restoring the resolver configuration left by a weft that did not stop cleanly", "file", resolvConfPath, "backup", backup)
	return restoreResolvConf(backup, logger)
}

// restoreResolvConf puts the original resolv.conf saved in backup back,
// unless somebody else has replaced weft's version since, and removes the
// backup.
func restoreResolvConf(backup string, logger *slog.Logger) error {
	bk, err := readBackup(backup)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w (delete it to give up on restoring)", resolvConfPath, err)
	}
	cur, err := os.ReadFile(resolvConfPath)
	if err == nil && (bytes.Equal(cur, bk.Written) || parseResolvConf(cur).backup == backup) {
		if err := restoreOriginal(resolvConfPath, bk); err != nil {
			return fmt.Errorf("restore %s from %s: %w", resolvConfPath, backup, err)
		}
		logger.Info("restored the original resolver configuration", "file", resolvConfPath, "symlink", bk.Symlink)
	} else {
		logger.Warn("resolver configuration was replaced by someone else since weft wrote it; leaving it as it is", "file", resolvConfPath)
	}
	if err := os.Remove(backup); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", backup, err)
	}
	return nil
}

// isResolvedStub reports whether a is one of systemd-resolved's local stub
// listeners.
func isResolvedStub(a netip.Addr) bool {
	return a == netip.AddrFrom4([4]byte{127, 0, 0, 53}) || a == netip.AddrFrom4([4]byte{127, 0, 0, 54})
}
