package platform

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseResolvConf(t *testing.T) {
	for _, tc := range []struct {
		name        string
		in          string
		nameservers []string
		other       []string
		backup      string
	}{
		{"empty", "", nil, nil, ""},
		{"plain", "nameserver 10.0.0.1\nnameserver 2001:db8::53\n", []string{"10.0.0.1", "2001:db8::53"}, nil, ""},
		{"comments and junk", "# nameserver 1.1.1.1\n; nameserver 2.2.2.2\nnameserver\nnameserver not-an-ip\nbogus line\n  nameserver   10.0.0.2  \n", []string{"10.0.0.2"}, nil, ""},
		{"zone", "nameserver fe80::1%eth0\n", []string{"fe80::1%eth0"}, nil, ""},
		{"other lines kept", "search a.example b.example\noptions ndots:2 rotate\ndomain x.example\nsortlist 10.0.0.0/8\n", nil,
			[]string{"search a.example b.example", "options ndots:2 rotate", "domain x.example", "sortlist 10.0.0.0/8"}, ""},
		{"weft's own", headerGenerated + ": x\n" + headerBackup + "/var/lib/weft/" + backupName + "\n" + headerServers + "100.64.0.53\nnameserver 100.64.0.53\n",
			[]string{"100.64.0.53"}, nil, "/var/lib/weft/" + backupName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := parseResolvConf([]byte(tc.in))
			var ns []string
			for _, a := range rc.nameservers {
				ns = append(ns, a.String())
			}
			if !slices.Equal(ns, tc.nameservers) || !slices.Equal(rc.other, tc.other) || rc.backup != tc.backup {
				t.Errorf("parse = %v %q %q, want %v %q %q", ns, rc.other, rc.backup, tc.nameservers, tc.other, tc.backup)
			}
		})
	}
}

func TestRenderResolvConf(t *testing.T) {
	weft := []netip.Addr{netip.MustParseAddr("100.64.0.53")}
	for _, tc := range []struct {
		name    string
		orig    string
		search  bool
		want    []string // lines after the header, in order
		rotated bool
	}{
		{"keeps upstreams after weft", "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n", false,
			[]string{"nameserver 100.64.0.53", "nameserver 10.0.0.1", "nameserver 10.0.0.2"}, false},
		{"no duplicate", "nameserver 100.64.0.53\nnameserver 10.0.0.1\n", false,
			[]string{"nameserver 100.64.0.53", "nameserver 10.0.0.1"}, false},
		{"drops rotate keeps options", "nameserver 10.0.0.1\noptions rotate ndots:2\noptions rotate\nsearch corp.example\n", false,
			[]string{"nameserver 100.64.0.53", "nameserver 10.0.0.1", "options ndots:2", "search corp.example"}, true},
		{"search domain first", "nameserver 10.0.0.1\nsearch corp.example weft.internal.\n", true,
			[]string{"nameserver 100.64.0.53", "nameserver 10.0.0.1", "search weft.internal corp.example"}, false},
		{"search domain added", "nameserver 10.0.0.1\n", true,
			[]string{"nameserver 100.64.0.53", "nameserver 10.0.0.1", "search weft.internal"}, false},
		{"domain line becomes search", "domain corp.example\n", true,
			[]string{"nameserver 100.64.0.53", "search weft.internal corp.example"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, rotated := renderResolvConf(parseResolvConf([]byte(tc.orig)), weft, "weft.internal", tc.search, "/s/"+backupName)
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if !strings.HasPrefix(l, "#") {
					lines = append(lines, l)
				}
			}
			if !slices.Equal(lines, tc.want) || rotated != tc.rotated {
				t.Errorf("render =\n%s\nwant lines %q, rotate dropped %v", out, tc.want, tc.rotated)
			}
			rc := parseResolvConf(out)
			if rc.backup != "/s/"+backupName || !slices.Equal(rc.weftServers, weft) {
				t.Errorf("header does not name the backup and servers: %q %v", rc.backup, rc.weftServers)
			}
		})
	}
}

// FuzzResolvConf checks that parsing never fails and that weft's rendering
// of any input parses back with weft's server first and the header intact.
func FuzzResolvConf(f *testing.F) {
	f.Add([]byte("nameserver 10.0.0.1\nsearch a b\noptions rotate ndots:1\n"))
	f.Add([]byte("domain x\nnameserver fe80::1%eth0\n# c\n"))
	f.Add([]byte(headerBackup + "/x\nnameserver 1.2.3.4"))
	weft := []netip.Addr{netip.MustParseAddr("100.64.0.53")}
	f.Fuzz(func(t *testing.T, b []byte) {
		rc := parseResolvConf(b)
		out, _ := renderResolvConf(rc, weft, "weft.internal", true, "/s/"+backupName)
		back := parseResolvConf(out)
		if len(back.nameservers) == 0 || back.nameservers[0] != weft[0] || len(back.nameservers) > maxNameservers {
			t.Fatalf("nameservers %v from\n%q", back.nameservers, out)
		}
		if back.backup != "/s/"+backupName {
			t.Fatalf("backup %q from\n%q", back.backup, out)
		}
		for _, l := range back.other {
			if f := strings.Fields(l); f[0] == "options" && slices.Contains(f, "rotate") {
				t.Fatalf("rotate kept:\n%q", out)
			}
		}
	})
}
