//go:build linux

package platform

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// useTempResolvConf points the package at a resolv.conf in a temporary
// directory (never /etc/resolv.conf) and at no system bus, and returns the
// path and a state directory.
func useTempResolvConf(t *testing.T) (path, stateDir string) {
	t.Helper()
	dir := t.TempDir()
	path = filepath.Join(dir, "etc", "resolv.conf")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	oldPath, oldResolved, oldBus := resolvConfPath, resolvedResolvConfPath, dialSystemBus
	resolvConfPath = path
	resolvedResolvConfPath = filepath.Join(dir, "run", "systemd", "resolve", "resolv.conf")
	dialSystemBus = func() (*dbus.Conn, error) { return nil, errors.New("no system bus in this test") }
	t.Cleanup(func() { resolvConfPath, resolvedResolvConfPath, dialSystemBus = oldPath, oldResolved, oldBus })
	return path, filepath.Join(dir, "state")
}

// fileState is what "restored exactly" compares.
type fileState struct {
	exists  bool
	symlink string
	mode    fs.FileMode
	content string
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileState{}
	}
	if err != nil {
		t.Fatal(err)
	}
	s := fileState{exists: true, mode: fi.Mode()}
	if fi.Mode()&fs.ModeSymlink != 0 {
		s.symlink, _ = os.Readlink(path)
		s.mode = 0
	}
	b, _ := os.ReadFile(path)
	s.content = string(b)
	return s
}

const origResolvConf = `# from DHCP
nameserver 10.0.0.1
nameserver 2001:db8::53
search corp.example
options ndots:2 rotate
`

var weftServer = netip.MustParseAddr("100.64.0.53")

func testDNSConfig(stateDir string) DNSConfig {
	return DNSConfig{Interface: "weft0", Servers: []netip.Addr{weftServer}, Domain: "weft.internal", StateDir: stateDir}
}

func TestResolvConfMode(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, path string) // creates the original
	}{
		{"regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(origResolvConf), 0o640); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, 0o640)
		}},
		{"symlink", func(t *testing.T, path string) {
			target := filepath.Join(filepath.Dir(path), "stub-resolv.conf")
			if err := os.WriteFile(target, []byte(origResolvConf), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("stub-resolv.conf", path); err != nil {
				t.Fatal(err)
			}
		}},
		{"dangling symlink", func(t *testing.T, path string) {
			if err := os.Symlink("/nonexistent/resolv.conf", path); err != nil {
				t.Fatal(err)
			}
		}},
		{"absent", func(t *testing.T, path string) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, stateDir := useTempResolvConf(t)
			tc.setup(t, path)
			before := stateOf(t, path)
			var target fileState
			if before.symlink != "" {
				target = stateOf(t, filepath.Join(filepath.Dir(path), before.symlink))
			}

			d, err := ConfigureDNS(testDNSConfig(stateDir))
			if err != nil {
				t.Fatalf("ConfigureDNS: %v", err)
			}
			if d.Mode() != DNSModeResolvConf {
				t.Errorf("Mode() = %q", d.Mode())
			}
			now := stateOf(t, path)
			if now.symlink != "" || !now.exists {
				t.Fatalf("resolv.conf is not weft's regular file: %+v", now)
			}
			rc := parseResolvConf([]byte(now.content))
			if len(rc.nameservers) == 0 || rc.nameservers[0] != weftServer {
				t.Errorf("first nameserver is not weft's:\n%s", now.content)
			}
			if before.content != "" {
				if !slices.Contains(rc.nameservers, netip.MustParseAddr("10.0.0.1")) ||
					!slices.Contains(rc.other, "search corp.example") || !slices.Contains(rc.other, "options ndots:2") {
					t.Errorf("original upstreams, search or options lost:\n%s", now.content)
				}
			}
			if before.symlink != "" && stateOf(t, filepath.Join(filepath.Dir(path), before.symlink)) != target {
				t.Errorf("the symlink's target was written through")
			}
			fi, err := os.Stat(filepath.Join(stateDir, backupName))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("backup: %v, %v", fi, err)
			}

			ups, err := SystemUpstreams()
			if before.content == "" {
				if err == nil {
					t.Errorf("SystemUpstreams without original nameservers = %v", ups)
				}
			} else if want := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:53"), netip.MustParseAddrPort("[2001:db8::53]:53")}; !slices.Equal(ups, want) || err != nil {
				t.Errorf("SystemUpstreams while weft's file is in place = %v, %v; want the original %v", ups, err, want)
			}

			if err := d.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if after := stateOf(t, path); after != before {
				t.Errorf("not restored exactly:\n got %+v\nwant %+v", after, before)
			}
			if _, err := os.Stat(filepath.Join(stateDir, backupName)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("backup left behind: %v", err)
			}
			if err := d.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*weft-*"))
			if len(leftovers) > 0 {
				t.Errorf("temporary files left: %v", leftovers)
			}
		})
	}
}

func TestRecoverDNSAfterCrash(t *testing.T) {
	path, stateDir := useTempResolvConf(t)
	if err := os.WriteFile(path, []byte(origResolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, path)
	if _, err := ConfigureDNS(testDNSConfig(stateDir)); err != nil { // and "crash": no Close
		t.Fatal(err)
	}
	if stateOf(t, path) == before {
		t.Fatal("ConfigureDNS changed nothing")
	}
	logger, logs := testLogger(t)
	if err := RecoverDNS(stateDir, logger); err != nil {
		t.Fatalf("RecoverDNS: %v", err)
	}
	if after := stateOf(t, path); after != before {
		t.Errorf("not restored:\n got %+v\nwant %+v", after, before)
	}
	if !strings.Contains(logs.String(), "did not stop cleanly") {
		t.Errorf("no log line about the recovery:\n%s", logs)
	}
	if err := RecoverDNS(stateDir, nil); err != nil {
		t.Errorf("second RecoverDNS: %v", err)
	}
	if err := RecoverDNS(t.TempDir(), nil); err != nil {
		t.Errorf("RecoverDNS without a backup: %v", err)
	}
	if err := RecoverDNS("", nil); err != nil {
		t.Errorf("RecoverDNS(\"\"): %v", err)
	}
}

func TestConfigureDNSRecoversFirst(t *testing.T) {
	path, stateDir := useTempResolvConf(t)
	os.WriteFile(path, []byte(origResolvConf), 0o644)
	before := stateOf(t, path)
	if _, err := ConfigureDNS(testDNSConfig(stateDir)); err != nil { // crash
		t.Fatal(err)
	}
	d, err := ConfigureDNS(testDNSConfig(stateDir)) // the next run
	if err != nil {
		t.Fatalf("ConfigureDNS over a crashed run's file: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if after := stateOf(t, path); after != before {
		t.Errorf("the original was lost:\n got %+v\nwant %+v", after, before)
	}
}

func TestResolvConfReplacedBySomeoneElse(t *testing.T) {
	path, stateDir := useTempResolvConf(t)
	os.WriteFile(path, []byte(origResolvConf), 0o644)
	d, err := ConfigureDNS(testDNSConfig(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	const dhcp = "nameserver 192.0.2.1\n"
	if err := os.WriteFile(path, []byte(dhcp), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := stateOf(t, path).content; got != dhcp {
		t.Errorf("weft clobbered someone else's resolv.conf: %q", got)
	}
	if _, err := os.Stat(filepath.Join(stateDir, backupName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("backup left behind: %v", err)
	}
}

func TestSecondWeftRefused(t *testing.T) {
	path, stateDir := useTempResolvConf(t)
	os.WriteFile(path, []byte(origResolvConf), 0o644)
	before := stateOf(t, path)
	d, err := ConfigureDNS(testDNSConfig(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	if d2, err := ConfigureDNS(testDNSConfig(stateDir + "-other")); err == nil || !strings.Contains(err.Error(), "already managed") {
		if d2 != nil {
			d2.Close()
		}
		t.Errorf("second node's ConfigureDNS = %v, want a refusal", err)
	}
	d.Close()
	if after := stateOf(t, path); after != before {
		t.Errorf("not restored:\n got %+v\nwant %+v", after, before)
	}
}

func TestSearchDomain(t *testing.T) {
	path, stateDir := useTempResolvConf(t)
	os.WriteFile(path, []byte(origResolvConf), 0o644)
	cfg := testDNSConfig(stateDir)
	cfg.Search = true
	d, err := ConfigureDNS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if rc := parseResolvConf([]byte(stateOf(t, path).content)); !slices.Contains(rc.other, "search weft.internal corp.example") {
		t.Errorf("search line: %q", rc.other)
	}
}

func TestDNSConfigCheck(t *testing.T) {
	_, stateDir := useTempResolvConf(t)
	good := testDNSConfig(stateDir)
	for _, tc := range []struct {
		name   string
		modify func(*DNSConfig)
		want   string
	}{
		{"no servers", func(c *DNSConfig) { c.Servers = nil }, "without servers"},
		{"invalid server", func(c *DNSConfig) { c.Servers = []netip.Addr{{}} }, "not a usable address"},
		{"no domain", func(c *DNSConfig) { c.Domain = "" }, "not a domain name"},
		{"routing prefix in domain", func(c *DNSConfig) { c.Domain = "~weft.internal" }, "not a domain name"},
		{"no state dir", func(c *DNSConfig) { c.StateDir = "" }, "needs a state directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.modify(&cfg)
			d, err := ConfigureDNS(cfg)
			if err == nil {
				d.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ConfigureDNS = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestSystemUpstreamsResolvedStub(t *testing.T) {
	path, _ := useTempResolvConf(t)
	os.WriteFile(path, []byte("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"), 0o644)
	// Without resolved's own list the stub is kept.
	ups, err := SystemUpstreams()
	if err != nil || !slices.Equal(ups, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53")}) {
		t.Errorf("SystemUpstreams = %v, %v; want the stub", ups, err)
	}
	// With /run/systemd/resolve/resolv.conf its upstreams replace the stub.
	os.MkdirAll(filepath.Dir(resolvedResolvConfPath), 0o755)
	os.WriteFile(resolvedResolvConfPath, []byte("nameserver 192.0.2.7\nnameserver 192.0.2.8\n"), 0o644)
	ups, err = SystemUpstreams()
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.7:53"), netip.MustParseAddrPort("192.0.2.8:53")}
	if err != nil || !slices.Equal(ups, want) {
		t.Errorf("SystemUpstreams = %v, %v; want %v", ups, err, want)
	}
}

func TestSystemUpstreamsNoNameserver(t *testing.T) {
	path, _ := useTempResolvConf(t)
	os.WriteFile(path, []byte("search example.com\n"), 0o644)
	if ups, err := SystemUpstreams(); err == nil {
		t.Errorf("SystemUpstreams = %v, want an error", ups)
	}
}

// fakeResolved is systemd-resolved's D-Bus API as far as weft uses it.
type fakeResolved struct {
	mu    sync.Mutex
	calls []string // guarded by mu
}

func (f *fakeResolved) record(format string, args ...any) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	return nil
}

func (f *fakeResolved) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeResolved) SetLinkDNS(ifindex int32, addrs []resolvedAddr) *dbus.Error {
	var s []string
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.Address)
		s = append(s, fmt.Sprintf("%d:%v", a.Family, ip))
	}
	return f.record("SetLinkDNS %d %v", ifindex, s)
}

func (f *fakeResolved) SetLinkDomains(ifindex int32, domains []resolvedDomain) *dbus.Error {
	return f.record("SetLinkDomains %d %v", ifindex, domains)
}

func (f *fakeResolved) SetLinkDefaultRoute(ifindex int32, on bool) *dbus.Error {
	return f.record("SetLinkDefaultRoute %d %v", ifindex, on)
}

func (f *fakeResolved) SetLinkLLMNR(ifindex int32, mode string) *dbus.Error {
	return f.record("SetLinkLLMNR %d %s", ifindex, mode)
}

func (f *fakeResolved) SetLinkMulticastDNS(ifindex int32, mode string) *dbus.Error {
	return f.record("SetLinkMulticastDNS %d %s", ifindex, mode)
}

func (f *fakeResolved) SetLinkDNSSEC(ifindex int32, mode string) *dbus.Error {
	return f.record("SetLinkDNSSEC %d %s", ifindex, mode)
}

func (f *fakeResolved) RevertLink(ifindex int32) *dbus.Error {
	return f.record("RevertLink %d", ifindex)
}

func (f *fakeResolved) GetLink(ifindex int32) (dbus.ObjectPath, *dbus.Error) {
	return dbus.ObjectPath(fmt.Sprintf("/org/freedesktop/resolve1/link/_3%d", ifindex)), nil
}

// fakeProps answers org.freedesktop.DBus.Properties.Get for one object.
type fakeProps map[string]dbus.Variant

func (p fakeProps) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	v, ok := p[iface+"."+name]
	if !ok {
		return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.UnknownProperty", []any{name})
	}
	return v, nil
}

// startFakeResolved runs a private dbus-daemon with a fake resolved on it
// and points the package at it.
func startFakeResolved(t *testing.T) *fakeResolved {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("skipping: dbus-daemon is not installed (apt-get install dbus) for the systemd-resolved test")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "bus")
	conf := filepath.Join(dir, "bus.conf")
	os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=`+sock+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`), 0o644)
	cmd := exec.Command(daemon, "--config-file="+conf, "--nofork", "--nopidfile")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dbus-daemon: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := "unix:path=" + sock
	var conn *dbus.Conn
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if conn, err = dbus.Connect(addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect to the private bus: %v", err)
		}
	}
	t.Cleanup(func() { conn.Close() })

	f := &fakeResolved{}
	if err := conn.Export(f, resolvedPath, resolvedManager); err != nil {
		t.Fatal(err)
	}
	type serverEx struct {
		Ifindex int32
		Family  int32
		Address []byte
		Port    uint16
		Name    string
	}
	conn.Export(fakeProps{resolvedManager + ".DNSEx": dbus.MakeVariant([]serverEx{
		{0, 2, []byte{1, 1, 1, 1}, 0, ""},                        // global
		{2, 2, []byte{192, 0, 2, 9}, 5353, ""},                   // a link taking all names
		{3, 2, []byte{10, 0, 0, 53}, 53, ""},                     // a VPN link with routing domains only
		{0, 2, []byte{127, 0, 0, 53}, 53, ""},                    // the stub itself
		{2, 10, netip.MustParseAddr("fe80::1").AsSlice(), 0, ""}, // link-local: needs the zone
	})}, resolvedPath, "org.freedesktop.DBus.Properties")
	for idx, dr := range map[int32]bool{2: true, 3: false} {
		p, _ := f.GetLink(idx)
		conn.Export(fakeProps{resolvedLink + ".DefaultRoute": dbus.MakeVariant(dr)}, p, "org.freedesktop.DBus.Properties")
	}
	if reply, err := conn.RequestName(resolvedName, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own %s: %v %v", resolvedName, reply, err)
	}
	dialSystemBus = func() (*dbus.Conn, error) { return dbus.Connect(addr) }
	return f
}

func TestResolvedMode(t *testing.T) {
	path, stateDir := useTempResolvConf(t)
	const stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\n"
	os.WriteFile(path, []byte(stub), 0o644)
	f := startFakeResolved(t)
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}

	ups, err := SystemUpstreams()
	want := []netip.AddrPort{
		netip.MustParseAddrPort("1.1.1.1:53"),
		netip.MustParseAddrPort("192.0.2.9:5353"),
		netip.AddrPortFrom(netip.MustParseAddr("fe80::1").WithZone("2"), 53),
	}
	if err != nil || !slices.Equal(ups, want) {
		t.Errorf("SystemUpstreams = %v, %v; want %v", ups, err, want)
	}

	cfg := testDNSConfig(stateDir)
	cfg.Interface = "lo"
	d, err := ConfigureDNS(cfg)
	if err != nil {
		t.Fatalf("ConfigureDNS: %v", err)
	}
	if d.Mode() != DNSModeResolved {
		t.Errorf("Mode() = %q, want %q", d.Mode(), DNSModeResolved)
	}
	if got := stateOf(t, path).content; got != stub {
		t.Errorf("resolv.conf touched in resolved mode: %q", got)
	}
	i := lo.Index
	wantCalls := []string{
		fmt.Sprintf("SetLinkDNS %d [2:100.64.0.53]", i),
		fmt.Sprintf("SetLinkDomains %d [{weft.internal true}]", i),
		fmt.Sprintf("SetLinkDefaultRoute %d false", i),
		fmt.Sprintf("SetLinkLLMNR %d no", i),
		fmt.Sprintf("SetLinkMulticastDNS %d no", i),
		fmt.Sprintf("SetLinkDNSSEC %d no", i),
	}
	if got := f.Calls(); !slices.Equal(got, wantCalls) {
		t.Errorf("calls to resolved:\n got %q\nwant %q", got, wantCalls)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	d.Close()
	if got := f.Calls(); !slices.Equal(got[len(wantCalls):], []string{fmt.Sprintf("RevertLink %d", i)}) {
		t.Errorf("calls on Close: %q", got[len(wantCalls):])
	}
}

// TestResolvedWithoutStub checks that resolv.conf mode is used when resolved
// runs but the C library does not ask it.
func TestResolvedWithoutStub(t *testing.T) {
	path, stateDir := useTempResolvConf(t)
	os.WriteFile(path, []byte(origResolvConf), 0o644)
	f := startFakeResolved(t)
	d, err := ConfigureDNS(testDNSConfig(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Mode() != DNSModeResolvConf || len(f.Calls()) != 0 {
		t.Errorf("mode %q, calls %q; want resolv.conf mode", d.Mode(), f.Calls())
	}
}
