package trust

import (
	"fmt"
	"os"
	"path/filepath"
)

// File names inside a node's state directory.
const (
	IdentityFile    = "identity.key"
	GenesisFile     = "genesis"
	CertificateFile = "cert"
	// ViewFile holds the anchor-set chain, revocations and policy.
	ViewFile = "trust-view"
	// AnchorDir is the subdirectory holding an anchor's state.
	AnchorDir = "anchor"
	// anchorStateFile lives in AnchorDir.
	anchorStateFile = "state.json"
)

// maxStateFile bounds files read from the state directory.
const maxStateFile = 64 << 20

// writeFileAtomic writes data to path so that readers see either the old
// or the new contents, never a mix: it writes a temporary file in the same
// directory (mode perm), syncs it, renames it over path and syncs the
// directory. The directory is created with mode 0700 if missing.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		// Best effort: some filesystems do not support syncing directories.
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// readFileLimited reads a state file, refusing files larger than
// maxStateFile.
func readFileLimited(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxStateFile {
		return nil, fmt.Errorf("%s is %d bytes, larger than the %d byte limit", path, fi.Size(), maxStateFile)
	}
	return os.ReadFile(path)
}
