package main

import "testing"

// TestTUNFlag checks --tun: alone, with a name, and turned off.
func TestTUNFlag(t *testing.T) {
	for _, c := range []struct {
		name    string
		values  []string // Set calls, in order
		set     bool
		iface   string
		wantErr bool
	}{
		{"bare", []string{"true"}, true, defaultTUN, false},
		{"named", []string{"wg-lab.1"}, true, "wg-lab.1", false},
		{"false", []string{"false"}, false, "", false},
		{"last wins", []string{"a0", "false"}, false, "", false},
		{"15 chars", []string{"abcdefghijklmno"}, true, "abcdefghijklmno", false},
		{"16 chars", []string{"abcdefghijklmnop"}, false, "", true},
		{"slash", []string{"a/b"}, false, "", true},
		{"space", []string{"a b"}, false, "", true},
		{"dotdot", []string{".."}, false, "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var f tunFlag
			var err error
			for _, v := range c.values {
				err = f.Set(v)
			}
			if (err != nil) != c.wantErr || (err == nil && (f.set != c.set || f.name != c.iface)) {
				t.Errorf("Set(%q): set=%v name=%q err=%v; want set=%v name=%q error=%v", c.values, f.set, f.name, err, c.set, c.iface, c.wantErr)
			}
		})
	}
}
