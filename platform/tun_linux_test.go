//go:build linux

package platform

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// inNewNetns moves the test's goroutine, locked to its thread, into a fresh
// network namespace for the rest of the test, so that the host's interfaces
// are untouched. The namespace disappears with its last reference after the
// test. Subtests run on their own goroutines and need their own call.
func inNewNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (CAP_NET_ADMIN) for network namespaces and TUN devices; run `go test` as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("skipping: /dev/net/tun is missing (%v); load the tun module or run in a VM/container with it", err)
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("current network namespace: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime ends it with the goroutine.
			t.Errorf("restore network namespace: %v", err)
		} else {
			runtime.UnlockOSThread()
		}
		ns.Close()
		orig.Close()
	})
}

// logBuffer is a slog handler target that tests can search.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// drainEvents consumes the device's events, as the wireguard-go device
// would; otherwise its listeners block on a full channel and leak. The
// goroutine ends when the device closes the channel.
func drainEvents(dev tun.Device) {
	go func() {
		for range dev.Events() {
		}
	}()
}

// createTUN creates a TUN, drains its events and closes it at the end of
// the test.
func createTUN(t *testing.T, cfg TUNConfig) *TUN {
	t.Helper()
	tn, err := CreateTUN(cfg)
	if err != nil {
		t.Fatalf("CreateTUN: %v", err)
	}
	drainEvents(tn.Device())
	t.Cleanup(func() {
		if err := tn.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tn
}

var (
	testV4 = netip.MustParsePrefix("100.92.49.235/10")
	testV6 = netip.MustParsePrefix("fd5e:77a1:9c00::1/48")
)

func TestCreateTUN(t *testing.T) {
	inNewNetns(t)
	logger, logs := testLogger(t)
	extra := []netip.Prefix{
		netip.MustParsePrefix("10.99.0.0/16"),
		netip.MustParsePrefix("fd00:99::/64"),
		netip.MustParsePrefix("100.64.0.0/10"), // the v4 address's own prefix: skipped
	}
	tn := createTUN(t, TUNConfig{Addrs: []netip.Prefix{testV4, testV6}, Routes: extra, Logger: logger})

	if tn.Name() != DefaultTUNName {
		t.Errorf("Name() = %q, want %q", tn.Name(), DefaultTUNName)
	}
	l, err := netlink.LinkByName(DefaultTUNName)
	if err != nil {
		t.Fatalf("LinkByName: %v", err)
	}
	if _, ok := l.(*netlink.Tuntap); !ok {
		t.Errorf("link type %s, want tuntap", l.Type())
	}
	if l.Attrs().Index != tn.Index() {
		t.Errorf("Index() = %d, link index %d", tn.Index(), l.Attrs().Index)
	}
	if l.Attrs().MTU != DefaultMTU {
		t.Errorf("MTU %d, want %d", l.Attrs().MTU, DefaultMTU)
	}
	if mtu, _ := tn.Device().MTU(); mtu != DefaultMTU {
		t.Errorf("Device().MTU() = %d, want %d", mtu, DefaultMTU)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("link is not up: %v", l.Attrs().Flags)
	}

	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []netip.Prefix{testV4, testV6} {
		var found *netlink.Addr
		for i, a := range addrs {
			if a.IPNet.String() == want.String() {
				found = &addrs[i]
			}
		}
		switch {
		case found == nil:
			t.Errorf("address %v missing; have %v", want, addrs)
		case want.Addr().Is6() && found.Flags&unix.IFA_F_NODAD == 0:
			t.Errorf("address %v without IFA_F_NODAD (flags %#x)", want, found.Flags)
		case want.Addr().Is6() && found.Flags&unix.IFA_F_TENTATIVE != 0:
			t.Errorf("address %v is tentative", want)
		}
	}

	routes, err := netlink.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var dsts []string
	for _, r := range routes {
		if r.Dst != nil {
			dsts = append(dsts, r.Dst.String())
		}
	}
	for _, want := range []string{"100.64.0.0/10", "fd5e:77a1:9c00::/48", "10.99.0.0/16", "fd00:99::/64"} {
		if !slices.Contains(dsts, want) {
			t.Errorf("route %s via %s missing; have %v", want, DefaultTUNName, dsts)
		}
	}

	off := tn.Offloads()
	t.Logf("offloads: %s", off)
	if !strings.HasPrefix(off, "GSO ") {
		t.Errorf("Offloads() = %q", off)
	}
	if o := readOffloads(tn.Device(), tn.Name()); o.vnetHdr && (o.err != nil || !o.tcpGSO) {
		t.Errorf("virtio-net header on but TCP segmentation offload not read: %+v", o)
	}

	if err := tn.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := netlink.LinkByName(DefaultTUNName); err == nil {
		t.Errorf("%s still exists after Close", DefaultTUNName)
	}
	if err := tn.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if !strings.Contains(logs.String(), "TUN interface up") {
		t.Errorf("no bring-up log line:\n%s", logs)
	}
}

func TestCreateTUNCustomNameMTU(t *testing.T) {
	inNewNetns(t)
	tn := createTUN(t, TUNConfig{Name: "weft-test7", MTU: 1280, Addrs: []netip.Prefix{testV6}})
	l, err := netlink.LinkByName("weft-test7")
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().MTU != 1280 || tn.Name() != "weft-test7" {
		t.Errorf("name %q MTU %d, want weft-test7 1280", tn.Name(), l.Attrs().MTU)
	}
}

func TestTUNConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  TUNConfig
		want string
	}{
		{"long name", TUNConfig{Name: "a-very-long-interface-name"}, "not a valid interface name"},
		{"slash", TUNConfig{Name: "we/ft"}, "not a valid interface name"},
		{"tiny MTU", TUNConfig{MTU: 100}, "out of range"},
		{"IPv6 below 1280", TUNConfig{MTU: 1200, Addrs: []netip.Prefix{testV6}}, "IPv6 minimum"},
		{"invalid address", TUNConfig{Addrs: []netip.Prefix{{}}}, "not a usable address"},
		{"unspecified address", TUNConfig{Addrs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}, "not a usable address"},
		{"invalid route", TUNConfig{Routes: []netip.Prefix{{}}}, "not a valid prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CreateTUN(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CreateTUN(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
			}
		})
	}
}

func TestCreateTUNReplacesLeftover(t *testing.T) {
	for _, tc := range []struct {
		name     string
		leftover func(t *testing.T)
	}{
		{"persistent", func(t *testing.T) {
			if err := netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: DefaultTUNName}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_NO_PI}); err != nil {
				t.Fatalf("persistent TUN: %v", err)
			}
		}},
		{"held by a live descriptor", func(t *testing.T) {
			dev, err := tun.CreateTUN(DefaultTUNName, 1400)
			if err != nil {
				t.Fatalf("TUN: %v", err)
			}
			drainEvents(dev)
			t.Cleanup(func() { dev.Close() })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inNewNetns(t)
			tc.leftover(t)
			old, err := netlink.LinkByName(DefaultTUNName)
			if err != nil {
				t.Fatal(err)
			}
			logger, logs := testLogger(t)
			tn := createTUN(t, TUNConfig{Addrs: []netip.Prefix{testV4}, Logger: logger})
			if tn.Index() == old.Attrs().Index {
				t.Errorf("index %d unchanged: the leftover was not replaced", tn.Index())
			}
			if !strings.Contains(logs.String(), "deleting leftover TUN") {
				t.Errorf("no log line about the leftover:\n%s", logs)
			}
			l, err := netlink.LinkByName(DefaultTUNName)
			if err != nil || l.Attrs().MTU != DefaultMTU {
				t.Errorf("new link: %v, %v", l, err)
			}
		})
	}
}

func TestCreateTUNRefusesOtherInterface(t *testing.T) {
	for _, tc := range []struct {
		name string
		link netlink.Link
		want string
	}{
		{"bridge", &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: DefaultTUNName}}, "is a bridge, not a TUN"},
		{"tap", &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: DefaultTUNName}, Mode: netlink.TUNTAP_MODE_TAP}, "is a TAP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inNewNetns(t)
			if err := netlink.LinkAdd(tc.link); err != nil {
				t.Fatal(err)
			}
			tn, err := CreateTUN(TUNConfig{})
			if err == nil {
				tn.Close()
				t.Fatal("CreateTUN replaced a non-TUN interface")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
			if _, err := netlink.LinkByName(DefaultTUNName); err != nil {
				t.Errorf("the %s interface is gone: %v", tc.name, err)
			}
		})
	}
}

func TestCreateTUNUndoesOnFailure(t *testing.T) {
	inNewNetns(t)
	blocker, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(blocker); err != nil {
		t.Fatal(err)
	}
	taken := netip.MustParsePrefix("10.99.0.0/16")
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: blocker.Attrs().Index, Dst: ipNet(taken), Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	tn, err := CreateTUN(TUNConfig{Addrs: []netip.Prefix{testV4, testV6}, Routes: []netip.Prefix{taken}})
	if err == nil {
		tn.Close()
		t.Fatal("CreateTUN succeeded over an existing route")
	}
	if !strings.Contains(err.Error(), "already exists") {
		t.Errorf("error %q does not say the route exists", err)
	}
	if _, err := netlink.LinkByName(DefaultTUNName); err == nil {
		t.Errorf("%s left behind after a failed CreateTUN", DefaultTUNName)
	}
	if rs, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: ipNet(testV4.Masked())}, netlink.RT_FILTER_DST); len(rs) != 0 {
		t.Errorf("route left behind: %v", rs)
	}
}

// TestKernelDeletesTUNOnClose checks what Close relies on: closing the
// descriptor of a non-persistent TUN makes the kernel delete the interface
// with its addresses and routes.
func TestKernelDeletesTUNOnClose(t *testing.T) {
	inNewNetns(t)
	logger, logs := testLogger(t)
	tn := createTUN(t, TUNConfig{Addrs: []netip.Prefix{testV4, testV6}, Routes: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}, Logger: logger})
	if err := tn.Device().Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		if _, err := netlink.LinkByName(DefaultTUNName); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the kernel kept the interface after its descriptor closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	addrs, _ := netlink.AddrList(nil, netlink.FAMILY_ALL)
	for _, a := range addrs {
		if a.IP.Equal(net.IP(testV4.Addr().AsSlice())) || a.IP.Equal(net.IP(testV6.Addr().AsSlice())) {
			t.Errorf("address %v left", a)
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, _ := netlink.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		for _, r := range rs {
			if r.LinkIndex == tn.Index() {
				t.Errorf("route %v left", r)
			}
		}
	}
	if err := tn.Close(); err != nil {
		t.Errorf("Close after the device closed: %v", err)
	}
	if strings.Contains(logs.String(), "outlived") {
		t.Errorf("Close had to delete the interface itself:\n%s", logs)
	}
}

// TestCloseDeletesPersistentTUN checks that Close removes the interface
// even when the kernel would keep it.
func TestCloseDeletesPersistentTUN(t *testing.T) {
	inNewNetns(t)
	logger, logs := testLogger(t)
	tn := createTUN(t, TUNConfig{Addrs: []netip.Prefix{testV4}, Logger: logger})
	sc, err := tn.Device().File().SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ierr error
	sc.Control(func(fd uintptr) { ierr = unix.IoctlSetInt(int(fd), unix.TUNSETPERSIST, 1) })
	if ierr != nil {
		t.Fatalf("TUNSETPERSIST: %v", ierr)
	}
	if err := tn.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := netlink.LinkByName(DefaultTUNName); err == nil {
		t.Errorf("persistent %s survived Close", DefaultTUNName)
	}
	if !strings.Contains(logs.String(), "outlived") {
		t.Errorf("no log line about deleting the interface:\n%s", logs)
	}
}

// TestTUNReadWrite sends packets from kernel sockets into the overlay and
// reads them from the device, and writes a packet to the device that a
// kernel socket receives.
func TestTUNReadWrite(t *testing.T) {
	inNewNetns(t)
	tn := createTUN(t, TUNConfig{Addrs: []netip.Prefix{testV4, testV6}})
	dev := tn.Device()

	packets := make(chan []byte, 64)
	go func() { // ends when the device closes
		defer close(packets)
		const offset = 16
		bufs := make([][]byte, dev.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, offset+65535)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := dev.Read(bufs, sizes, offset)
			for i := 0; i < n; i++ {
				packets <- slices.Clone(bufs[i][offset : offset+sizes[i]])
			}
			if err != nil && !errors.Is(err, tun.ErrTooManySegments) {
				return
			}
		}
	}()

	for _, dst := range []netip.AddrPort{
		netip.MustParseAddrPort("100.64.0.9:9999"),
		netip.MustParseAddrPort("[fd5e:77a1:9c00::9]:9999"),
	} {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			t.Fatalf("dial %v: %v", dst, err)
		}
		payload := []byte("into the overlay " + dst.String())
		if _, err := c.Write(payload); err != nil {
			t.Fatalf("send to %v: %v (an IPv6 address still tentative would fail here)", dst, err)
		}
		c.Close()
		timeout := time.After(5 * time.Second)
	wait:
		for {
			select {
			case p := <-packets:
				if dstOf(p) == dst.Addr() && bytes.HasSuffix(p, payload) {
					break wait
				}
			case <-timeout:
				t.Fatalf("the packet to %v never came out of the device", dst)
			}
		}
	}

	// The other way: a packet written to the device reaches a kernel socket.
	ln, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(testV4.Addr(), 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	from := netip.MustParseAddrPort("100.64.0.9:7")
	to := netip.MustParseAddrPort(ln.LocalAddr().String())
	pkt := udp4Packet(from, to, []byte("out of the overlay"))
	const offset = 16
	buf := append(make([]byte, offset), pkt...)
	if _, err := dev.Write([][]byte{buf}, offset); err != nil {
		t.Fatalf("Write: %v", err)
	}
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 100)
	n, src, err := ln.ReadFromUDPAddrPort(got)
	if err != nil {
		t.Fatalf("the written packet never reached the socket: %v", err)
	}
	if string(got[:n]) != "out of the overlay" || src != from {
		t.Errorf("received %q from %v, want %q from %v", got[:n], src, "out of the overlay", from)
	}

	if err := tn.Close(); err != nil {
		t.Fatal(err)
	}
	for range packets { // wait for the reader to end
	}
}

func dstOf(p []byte) netip.Addr {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(p[16:20]))
	case len(p) >= 40 && p[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(p[24:40]))
	}
	return netip.Addr{}
}

// udp4Packet builds an IPv4 UDP packet with valid checksums.
func udp4Packet(src, dst netip.AddrPort, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = unix.IPPROTO_UDP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], ^onesSum(0, p[:20]))
	u := p[20:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, unix.IPPROTO_UDP, byte(len(u)>>8), byte(len(u)))
	binary.BigEndian.PutUint16(u[6:], ^onesSum(uint32(onesSum(0, pseudo)), u))
	return p
}

func onesSum(sum uint32, b []byte) uint16 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func TestCreateTUNRefusesLoopback(t *testing.T) {
	inNewNetns(t)
	_, err := CreateTUN(TUNConfig{Name: "lo"})
	if err == nil || !strings.Contains(err.Error(), "not a TUN") {
		t.Fatalf("CreateTUN(lo) = %v, want a refusal", err)
	}
	if _, err := netlink.LinkByName("lo"); err != nil {
		t.Errorf("lo is gone: %v", err)
	}
}
