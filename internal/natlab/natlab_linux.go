//go:build linux

package natlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Where iproute2 keeps named namespaces and the per-namespace files that
// `ip netns exec` bind-mounts over /etc.
const (
	netnsDir = "/var/run/netns"
	etcNetns = "/etc/netns"
)

// DefaultTimeout bounds Run and MustRun.
const DefaultTimeout = 20 * time.Second

var (
	probeOnce sync.Once
	probeSkip string // why namespace labs cannot run here; "" if they can
)

// Root skips t, with the reason, unless this process can build labs: it
// runs as root, ip(8) is installed, network namespaces can be created and
// /dev/net/tun opens.
func Root(t testing.TB) {
	t.Helper()
	probeOnce.Do(func() { probeSkip = probe() })
	if probeSkip != "" {
		t.Skip("natlab: " + probeSkip)
	}
}

func probe() string {
	if os.Geteuid() != 0 {
		return "network namespace tests need root (CI runs them as root); skipped. Run `sudo -E go test ...` to include them"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "the ip command (iproute2) is not installed (`make setup` installs it); skipped"
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return fmt.Sprintf("cannot open /dev/net/tun (%v): in a container, pass --device /dev/net/tun; skipped", err)
	}
	f.Close()
	name := "natlabprobe-" + strconv.Itoa(os.Getpid()) + "-" + randHex(3)
	if out, err := ipCmd(context.Background(), "netns", "add", name); err != nil {
		return fmt.Sprintf("cannot create a network namespace (ip netns add: %v: %s): in a container, run it privileged; skipped", err, bytes.TrimSpace(out))
	}
	ipCmd(context.Background(), "netns", "del", name)
	return ""
}

// Need skips t unless every program in tools is on PATH.
func Need(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		t.Skipf("natlab: %s not installed (`make setup` installs the lab's tools); skipped", strings.Join(missing, ", "))
	}
}

// Options configure a Lab.
type Options struct {
	// Prefix starts the name of every namespace of the lab; it should name
	// the test suite (e.g. "wefttun"). Empty means "natlab". Letters and
	// digits only.
	Prefix string
}

// Lab is a set of namespaces owned by one test. Its methods may be called
// from the test and its subtests; the namespaces go when the test that
// called New ends.
type Lab struct {
	id string // PREFIX-PID-RAND

	mu  sync.Mutex   // guards nss
	nss []*Namespace // in creation order
}

// New returns an empty lab, after skipping t where labs cannot run (see
// Root) and deleting the namespaces that earlier runs with the same prefix
// left behind when they crashed.
func New(t testing.TB, opts Options) *Lab {
	t.Helper()
	Root(t)
	prefix := opts.Prefix
	if prefix == "" {
		prefix = "natlab"
	}
	for _, c := range prefix {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			t.Fatalf("natlab: prefix %q: use letters and digits only", prefix)
		}
	}
	removeStale(t, prefix)
	l := &Lab{id: fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), randHex(3))}
	t.Cleanup(l.close(t))
	return l
}

// ID is the lab's unique name, the start of all its namespaces' names.
func (l *Lab) ID() string { return l.id }

// removeStale deletes namespaces named PREFIX-PID-... (and their /etc/netns
// directories) whose process no longer exists.
func removeStale(t testing.TB, prefix string) {
	var names []string
	for _, dir := range []string{netnsDir, etcNetns} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			names = append(names, e.Name())
		}
	}
	seen := map[string]bool{}
	for _, name := range names {
		rest, ok := strings.CutPrefix(name, prefix+"-")
		if !ok || seen[name] {
			continue
		}
		seen[name] = true
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue // its test is still running (or the pid is reused: left alone)
		}
		t.Logf("natlab: removing namespace %s left by a crashed run (pid %d)", name, pid)
		deleteNamespace(t, name)
	}
}

// close deletes the lab's namespaces, last created first.
func (l *Lab) close(t testing.TB) func() {
	return func() {
		l.mu.Lock()
		nss := l.nss
		l.nss = nil
		l.mu.Unlock()
		for i := len(nss) - 1; i >= 0; i-- {
			deleteNamespace(t, nss[i].name)
		}
	}
}

// deleteNamespace kills what still runs in the namespace, deletes it and
// its /etc/netns directory.
func deleteNamespace(t testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Processes that left the test's process groups (sshd sessions call
	// setsid) would keep the namespace, and its interfaces, alive.
	if out, err := ipCmd(ctx, "netns", "pids", name); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(netnsDir, name)); err == nil {
		if out, err := ipCmd(ctx, "netns", "del", name); err != nil {
			t.Errorf("natlab: ip netns del %s: %v: %s", name, err, bytes.TrimSpace(out))
		}
	}
	if err := os.RemoveAll(filepath.Join(etcNetns, name)); err != nil {
		t.Errorf("natlab: %v", err)
	}
}

// Namespace is one network namespace of a lab.
type Namespace struct {
	lab   *Lab
	name  string
	short string
}

// Namespace creates a namespace named after short (letters, digits and
// '-') with its loopback up.
func (l *Lab) Namespace(t testing.TB, short string) *Namespace {
	t.Helper()
	if short == "" || strings.ContainsFunc(short, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-')
	}) {
		t.Fatalf("natlab: namespace name %q: use letters, digits and '-'", short)
	}
	ns := &Namespace{lab: l, name: l.id + "-" + short, short: short}
	l.mu.Lock()
	for _, o := range l.nss {
		if o.short == short {
			l.mu.Unlock()
			t.Fatalf("natlab: namespace %q exists already in this lab", short)
		}
	}
	// Registered before it exists, so that a half-made one is deleted too.
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	mustIP(t, "netns", "add", ns.name)
	ns.IP(t, "link", "set", "lo", "up")
	return ns
}

// Name is the namespace's name for ip(8) (`ip -n NAME`, `ip netns exec NAME`).
func (ns *Namespace) Name() string { return ns.name }

// Short is the name given to Lab.Namespace.
func (ns *Namespace) Short() string { return ns.short }

// Path is the namespace's file, for setns(2).
func (ns *Namespace) Path() string { return filepath.Join(netnsDir, ns.name) }

func (ns *Namespace) String() string { return ns.short }

// IP runs `ip -n NAME ARGS...` and returns its output; it fails t on error.
func (ns *Namespace) IP(t testing.TB, args ...string) string {
	t.Helper()
	return mustIP(t, append([]string{"-n", ns.name}, args...)...)
}

// AddAddr assigns prefix (e.g. "10.0.0.1/24" or "fd00::1/64") to dev. IPv6
// addresses skip duplicate address detection, so they work at once.
func (ns *Namespace) AddAddr(t testing.TB, dev, prefix string) {
	t.Helper()
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		t.Fatalf("natlab: address %q: want ADDR/BITS: %v", prefix, err)
	}
	args := []string{"addr", "add", p.String(), "dev", dev}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	ns.IP(t, args...)
}

// Sysctl sets a sysctl of the namespace, e.g. "net.ipv4.ip_forward" to
// "1". Only the net.* ones are per namespace.
func (ns *Namespace) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	err := ns.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) })
	if err != nil {
		t.Fatalf("natlab: %s: sysctl %s=%s: %v", ns, key, value, err)
	}
}

// ResolvConfPath is the file `ip netns exec` shows programs in the
// namespace as /etc/resolv.conf (once SetResolvConf has created it).
func (ns *Namespace) ResolvConfPath() string {
	return filepath.Join(etcNetns, ns.name, "resolv.conf")
}

// SetResolvConf writes the namespace's resolv.conf. Without one, programs
// in the namespace share the host's /etc/resolv.conf.
func (ns *Namespace) SetResolvConf(t testing.TB, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(ns.ResolvConfPath()), 0o755); err != nil {
		t.Fatalf("natlab: %v", err)
	}
	if err := os.WriteFile(ns.ResolvConfPath(), []byte(content), 0o644); err != nil {
		t.Fatalf("natlab: %v", err)
	}
}

// End is one end of a link: a namespace, the interface name there, and the
// addresses to give it (may be empty).
type End struct {
	NS    *Namespace
	Dev   string
	Addrs []string
}

// Veth connects a and b with a veth pair, assigns the addresses and brings
// both ends up. The pair is created inside the namespaces, so interface
// names only need to be unique within each namespace.
func (l *Lab) Veth(t testing.TB, a, b End) {
	t.Helper()
	a.NS.IP(t, "link", "add", a.Dev, "type", "veth", "peer", "name", b.Dev, "netns", b.NS.name)
	for _, e := range []End{a, b} {
		for _, p := range e.Addrs {
			e.NS.AddAddr(t, e.Dev, p)
		}
		e.NS.IP(t, "link", "set", e.Dev, "up")
	}
}

// Switch is a bridge in a namespace of its own: a shared segment, e.g. the
// "public internet" between NAT routers.
type Switch struct {
	// NS holds the bridge, named Bridge. Give it an address with AddAddr to
	// make the switch namespace a host on the segment too.
	NS     *Namespace
	Bridge string

	mu    sync.Mutex // guards ports
	ports int
}

// Switch creates a namespace named short holding a bridge "br0" that is up.
func (l *Lab) Switch(t testing.TB, short string) *Switch {
	t.Helper()
	s := &Switch{NS: l.Namespace(t, short), Bridge: "br0"}
	s.NS.IP(t, "link", "add", s.Bridge, "type", "bridge")
	s.NS.IP(t, "link", "set", s.Bridge, "up")
	return s
}

// Attach plugs e into the switch: a veth pair from e.NS (named e.Dev, with
// e.Addrs) to a new port of the bridge.
func (s *Switch) Attach(t testing.TB, e End) {
	t.Helper()
	s.mu.Lock()
	s.ports++
	port := fmt.Sprintf("port%d", s.ports)
	s.mu.Unlock()
	s.NS.lab.Veth(t, e, End{NS: s.NS, Dev: port})
	s.NS.IP(t, "link", "set", port, "master", s.Bridge)
}

// Result is a finished program.
type Result struct {
	Args           []string // the program and its arguments, without `ip netns exec`
	Stdout, Stderr string
	// Err is nil if the program exited 0; it mentions the timeout if it
	// was killed for one.
	Err      error
	Duration time.Duration
}

// ExitCode is the program's exit status, -1 if it did not exit normally.
func (r Result) ExitCode() int {
	var ee *exec.ExitError
	switch {
	case r.Err == nil:
		return 0
	case errors.As(r.Err, &ee):
		return ee.ExitCode()
	}
	return -1
}

func (r Result) String() string {
	status := "ok"
	if r.Err != nil {
		status = r.Err.Error()
	}
	return fmt.Sprintf("%s: %s after %v\nstdout:\n%s\nstderr:\n%s", strings.Join(r.Args, " "), status, r.Duration.Round(time.Millisecond), r.Stdout, r.Stderr)
}

// Command returns a command running name in the namespace through
// `ip netns exec`, which also bind-mounts /etc/netns/NAME/* over /etc.
func (ns *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.name, name}, args...)...)
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Run runs name in the namespace to completion, killing it after timeout
// (0 means DefaultTimeout). It does not fail t; see Result.Err.
func (ns *Namespace) Run(t testing.TB, timeout time.Duration, name string, args ...string) Result {
	t.Helper()
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r := ns.RunCmd(ns.Command(ctx, name, args...))
	if r.Err != nil && ctx.Err() != nil {
		r.Err = fmt.Errorf("%w (killed after the %v timeout)", r.Err, timeout)
	}
	return r
}

// RunCmd runs a command made by Command (with a context; its environment,
// stdin and so on set as needed) and collects its output.
func (ns *Namespace) RunCmd(cmd *exec.Cmd) Result {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	args := cmd.Args
	if len(args) >= 4 && args[1] == "netns" && args[2] == "exec" {
		args = args[4:]
	}
	return Result{Args: args, Stdout: out.String(), Stderr: errb.String(), Err: err, Duration: time.Since(start)}
}

// MustRun runs name in the namespace with DefaultTimeout and returns its
// standard output; it fails t unless the program exits 0.
func (ns *Namespace) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	r := ns.Run(t, 0, name, args...)
	if r.Err != nil {
		t.Fatalf("natlab: in %s: %v", ns, r)
	}
	return r.Stdout
}

// mustIP runs ip(8) in the test's own namespace and fails t on error.
func mustIP(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	out, err := ipCmd(ctx, args...)
	if err != nil {
		t.Fatalf("natlab: ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func ipCmd(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.WaitDelay = 2 * time.Second
	return cmd.CombinedOutput()
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
