//go:build !linux

package main

// Section 5 needs Linux network namespaces.
func (r *report) natLab(bin string, runs, mib, rounds int) error {
	r.linef("")
	r.linef("5. NAT lab: skipped: needs Linux network namespaces")
	return nil
}
