package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weft-net/weft/internal/natlab"
)

// The end-to-end tests run the real binary, built once per test run, as
// separate processes on loopback. They skip the parts that need curl, ssh or
// sshd when those are not installed.

var (
	binDir   string // removed by TestMain
	binOnce  sync.Once
	binPath  string
	binErr   error
	binBuild []byte // go build output when it failed
)

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "weft-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		os.Exit(1)
	}
	binDir = d
	code := m.Run()
	os.RemoveAll(d)
	// Last, where a CI log cut to its tail still shows it: which lab tests
	// failed, and where their daemons' whole logs are.
	if tests, dir := natlab.Failures(); len(tests) > 0 {
		fmt.Printf("natlab: %d lab test(s) failed: %s\nnatlab: their processes' whole output is in %s\n", len(tests), strings.Join(tests, ", "), dir)
	}
	os.Exit(code)
}

// weftBinary builds bin/weft once for the whole test run and returns its path.
func weftBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		binPath = filepath.Join(binDir, "weft")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goTool, "build", "-o", binPath, ".")
		binBuild, binErr = cmd.CombinedOutput()
	})
	if binErr != nil {
		t.Fatalf("go build ./cmd/weft: %v\n%s", binErr, binBuild)
	}
	return binPath
}

// testEnv is the environment of every weft subprocess: the default state
// directory points into the test's temp dir, never at the user's own.
func testEnv(t *testing.T) []string {
	return append(os.Environ(), "WEFT_STATE="+filepath.Join(t.TempDir(), "default-state"))
}

// result is one finished weft command.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("weft %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// runWeft runs the binary to completion with a timeout and checks that it did
// not panic.
func runWeft(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, weftBinary(t), args...)
	cmd.Env = testEnv(t)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	r := result{args: args, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("weft %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("weft %s: timed out\n%v", strings.Join(args, " "), r)
	}
	checkNoPanic(t, r)
	return r
}

func checkNoPanic(t *testing.T, r result) {
	t.Helper()
	for _, s := range []string{"panic:", "goroutine ", "SIGSEGV", "fatal error:"} {
		if strings.Contains(r.stderr, s) || strings.Contains(r.stdout, s) {
			t.Fatalf("weft crashed (%q in output):\n%v", s, r)
		}
	}
}

// mustWeft runs weft and fails the test unless it exits 0.
func mustWeft(t *testing.T, args ...string) result {
	t.Helper()
	r := runWeft(t, "", args...)
	if r.code != 0 {
		t.Fatalf("want exit 0:\n%v", r)
	}
	return r
}

// syncBuffer is a bytes.Buffer safe for a process writing and a test reading.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// process is a long-running subprocess (a weft daemon or sshd) that is
// killed when the test ends unless it already exited.
type process struct {
	name   string
	cmd    *exec.Cmd
	output *syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // of Wait; valid after done
}

func startProcess(t *testing.T, name string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, output: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			// Kill the process group, so children (sshd sessions) go too.
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				t.Errorf("%s (pid %d) did not exit after SIGKILL", name, cmd.Process.Pid)
			}
		}
		// WEFT_TEST_DUMP=1 shows the daemons' logs of passing tests too.
		if t.Failed() || os.Getenv("WEFT_TEST_DUMP") != "" {
			t.Logf("output of %s:\n%s", name, p.output.String())
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit on its own.
func (p *process) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v", p.name, timeout)
		return nil
	}
}

// startDaemon runs `weft up --state STATE ARGS...` and waits until its API
// answers `weft status`.
func startDaemon(t *testing.T, name, state string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(weftBinary(t), append([]string{"up", "--state", state, "--log-level", "debug"}, args...)...)
	cmd.Env = testEnv(t)
	p := startProcess(t, name, cmd)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if p.exited() {
			t.Fatalf("%s exited early: %v\n%s", name, p.err, p.output.String())
		}
		r := runWeft(t, "", "status", "--state", state, "--json")
		if r.code == 0 {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: API not answering after 15s; last status:\n%v\ndaemon output:\n%s", name, r, p.output.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopDaemon runs `weft down` and checks that the daemon exits cleanly.
func stopDaemon(t *testing.T, p *process, state string) {
	t.Helper()
	r := mustWeft(t, "down", "--state", state)
	if !strings.Contains(r.stdout, "weft stopped") {
		t.Errorf("weft down: want \"weft stopped\":\n%v", r)
	}
	if err := p.wait(t, 10*time.Second); err != nil {
		t.Errorf("%s exited with %v after weft down\n%s", p.name, err, p.output.String())
	}
	if out := p.output.String(); strings.Contains(out, "level=ERROR") {
		t.Errorf("%s logged errors:\n%s", p.name, out)
	}
	if _, err := os.Stat(socketPath(state)); err == nil {
		// A leftover socket is harmless (the next `up` removes it) but
		// nobody may answer on it.
		if c, err := net.DialTimeout("unix", socketPath(state), time.Second); err == nil {
			c.Close()
			t.Errorf("%s: API socket still answers after weft down", p.name)
		}
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T, network string) int {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// twoNodes is an anchor (alpha) and a member (beta) on loopback, both up.
type twoNodes struct {
	stateA, stateB string
	anchor, member *process
	socks, proxy   string // the member's SOCKS5 and HTTP proxy addresses
}

// sshServer is a real sshd on loopback that lets one generated key in.
type sshServer struct {
	addr string
	key  string // client private key
	user string
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test runs processes; skipped with -short")
	}
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skipf("end-to-end test uses Unix sockets and process groups; not on %s", runtime.GOOS)
	}
	start := time.Now()
	weftBinary(t)
	dir := t.TempDir()

	// A real HTTP service on the anchor's host.
	const body = "hello from alpha's web server\n"
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, body)
	}))
	t.Cleanup(web.Close)
	webAddr := web.Listener.Addr().String()

	ssh := startSSHD(t, dir) // nil when sshd or ssh is missing

	n := twoNodes{stateA: filepath.Join(dir, "A"), stateB: filepath.Join(dir, "B")}
	listenA, listenB := loopback(freePort(t, "udp")), loopback(freePort(t, "udp"))
	n.socks, n.proxy = loopback(freePort(t, "tcp")), loopback(freePort(t, "tcp"))

	r := mustWeft(t, "init", "--state", n.stateA, "--name", "alpha")
	if !strings.Contains(r.stdout, "created network") || !strings.Contains(r.stdout, "alpha.weft.internal") {
		t.Errorf("weft init output:\n%v", r)
	}
	upA := []string{"--listen", listenA, "--expose", "8080=" + webAddr}
	if ssh != nil {
		upA = append(upA, "--expose", "22="+ssh.addr)
	}
	n.anchor = startDaemon(t, "anchor alpha", n.stateA, upA...)

	r = mustWeft(t, "invite", "--state", n.stateA)
	tok := strings.TrimSpace(r.stdout)
	if strings.Count(r.stdout, "\n") != 1 || !strings.HasPrefix(tok, "weft1-") {
		t.Fatalf("weft invite: want one token line:\n%v", r)
	}
	r = mustWeft(t, "join", "--state", n.stateB, "--name", "beta", tok)
	if !strings.Contains(r.stdout, "joined network") || !strings.Contains(r.stdout, "beta.weft.internal") {
		t.Errorf("weft join output:\n%v", r)
	}
	n.member = startDaemon(t, "member beta", n.stateB,
		"--listen", listenB, "--socks5", n.socks, "--http-proxy", n.proxy)

	t.Run("nc", func(t *testing.T) {
		// Always runs, so the status checks below see traffic even
		// without curl.
		// (and flags after the positionals, as users type them).
		start := time.Now()
		r := runWeft(t, "GET / HTTP/1.0\r\nHost: alpha\r\n\r\n", "nc", "alpha", "8080", "--state", n.stateB)
		if d := time.Since(start); d > 3*time.Second {
			// Not a failure, but worth a look: the first connection to a
			// new peer should not wait for a WireGuard handshake retry.
			t.Logf("the first overlay connection took %v; daemon logs:\n--- alpha\n%s\n--- beta\n%s", d, n.anchor.output, n.member.output)
		}
		if r.code != 0 || !strings.HasPrefix(r.stdout, "HTTP/1.0 200 OK\r\n") || !strings.HasSuffix(r.stdout, "\r\n\r\n"+body) {
			t.Errorf("weft nc alpha 8080 with an HTTP request: want 200 and %q:\n%v", body, r)
		}
	})
	if t.Failed() {
		return
	}
	t.Run("curl socks5", func(t *testing.T) {
		curl := needCurl(t)
		out := run(t, curl, "-sS", "--fail", "--max-time", "15", "--socks5-hostname", n.socks, "http://alpha:8080/")
		if out != body {
			t.Errorf("curl through SOCKS5: got %q, want %q", out, body)
		}
	})
	t.Run("curl http proxy", func(t *testing.T) {
		curl := needCurl(t)
		out := run(t, curl, "-sS", "--fail", "--max-time", "15", "-x", "http://"+n.proxy, "http://alpha.weft.internal:8080/")
		if out != body {
			t.Errorf("curl through the HTTP proxy: got %q, want %q", out, body)
		}
	})
	t.Run("status json", func(t *testing.T) { checkStatusJSON(t, n) })
	t.Run("peers", func(t *testing.T) { checkPeers(t, n) })
	t.Run("dht", func(t *testing.T) { checkDHT(t, n) })
	t.Run("ssh", func(t *testing.T) {
		if ssh == nil {
			t.Skip(sshSkipReason)
		}
		checkSSH(t, n, ssh)
	})

	stopDaemon(t, n.member, n.stateB)
	stopDaemon(t, n.anchor, n.stateA)
	r = runWeft(t, "", "status", "--state", n.stateA)
	if r.code != 1 || !strings.Contains(r.stderr, "not running") {
		t.Errorf("status after down: want exit 1, \"not running\":\n%v", r)
	}
	if d := time.Since(start); d > 45*time.Second {
		t.Errorf("end-to-end test took %v; keep it under a minute", d)
	}
}

func needCurl(t *testing.T) string {
	t.Helper()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (`make setup` installs it); skipping the curl checks")
	}
	return curl
}

// run runs an external program with a timeout and returns its stdout.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 2 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func checkStatusJSON(t *testing.T, n twoNodes) {
	for _, side := range []struct {
		state, self, peer string
		anchor            bool
	}{
		{n.stateB, "beta", "alpha", false},
		{n.stateA, "alpha", "beta", true},
	} {
		r := mustWeft(t, "status", "--state", side.state, "--json")
		var st map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status --json is not JSON: %v\n%v", err, r)
		}
		for _, k := range []string{"node_id", "name", "network_id", "ipv4", "ipv6", "listen"} {
			if s, _ := st[k].(string); s == "" {
				t.Errorf("%s: status field %q = %v, want a non-empty string", side.self, k, st[k])
			}
		}
		if st["name"] != side.self {
			t.Errorf("%s: status name = %v", side.self, st["name"])
		}
		if st["anchor"] != side.anchor {
			t.Errorf("%s: status anchor = %v, want %v", side.self, st["anchor"], side.anchor)
		}
		peers, ok := st["peers"].([]any)
		if !ok {
			t.Fatalf("%s: status peers = %T %v, want a list\n%s", side.self, st["peers"], st["peers"], r.stdout)
		}
		var peer map[string]any
		for _, p := range peers {
			if m, ok := p.(map[string]any); ok && m["name"] == side.peer {
				peer = m
			}
		}
		if peer == nil {
			t.Fatalf("%s: peer %s missing from status after traffic:\n%s", side.self, side.peer, r.stdout)
		}
		for _, k := range []string{"name", "node_id", "ipv4", "ipv6", "endpoint", "path", "last_handshake"} {
			if s, _ := peer[k].(string); s == "" {
				t.Errorf("%s: peer field %q = %v, want a non-empty string", side.self, k, peer[k])
			}
		}
		for _, k := range []string{"rx_bytes", "tx_bytes"} {
			if v, _ := peer[k].(float64); v <= 0 {
				t.Errorf("%s: peer field %q = %v, want a positive number after traffic", side.self, k, peer[k])
			}
		}
		if hs, err := time.Parse(time.RFC3339Nano, fmt.Sprint(peer["last_handshake"])); err != nil || hs.Year() < 2000 {
			t.Errorf("%s: peer last_handshake = %v (%v), want a recent time", side.self, peer["last_handshake"], err)
		}
		if peer["path"] != "direct" {
			t.Errorf("%s: peer path = %v, want direct on loopback", side.self, peer["path"])
		}
		if side.self == "beta" {
			// beta reached alpha through its listen address.
			var a map[string]any
			ra := mustWeft(t, "status", "--state", n.stateA, "--json")
			if err := json.Unmarshal([]byte(ra.stdout), &a); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"node_id", "ipv4", "ipv6"} {
				if peer[k] != a[k] {
					t.Errorf("beta's view of alpha: %s = %v, alpha says %v", k, peer[k], a[k])
				}
			}
			if peer["endpoint"] != a["listen"] {
				t.Errorf("beta's view of alpha: endpoint %v, alpha listens on %v", peer["endpoint"], a["listen"])
			}
			if st["network_id"] != a["network_id"] {
				t.Errorf("network_id differs: beta %v, alpha %v", st["network_id"], a["network_id"])
			}
		}
	}
}

func checkPeers(t *testing.T, n twoNodes) {
	r := mustWeft(t, "peers", "--state", n.stateB)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) < 2 {
		t.Fatalf("weft peers: want a header and a row:\n%v", r)
	}
	for _, h := range []string{"NAME", "NODE ID", "IPV4", "IPV6", "ENDPOINT", "PATH", "HANDSHAKE", "RX", "TX"} {
		if !strings.Contains(lines[0], h) {
			t.Errorf("weft peers header lacks %q: %q", h, lines[0])
		}
	}
	row := strings.Fields(lines[1])
	if len(row) < 1 || row[0] != "alpha" || !strings.Contains(lines[1], "direct") || !strings.Contains(lines[1], " ago") {
		t.Errorf("weft peers: want a direct row for alpha with a handshake:\n%s", r.stdout)
	}
	if strings.Contains(lines[1], "never") {
		t.Errorf("weft peers: alpha has never handshaked after traffic:\n%s", r.stdout)
	}

	r = mustWeft(t, "peers", "--state", n.stateB, "--json")
	var peers []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &peers); err != nil {
		t.Fatalf("peers --json: %v\n%v", err, r)
	}
	if len(peers) != 1 || peers[0]["name"] != "alpha" {
		t.Errorf("peers --json: want just alpha:\n%s", r.stdout)
	}

	r = mustWeft(t, "status", "--state", n.stateB)
	for _, s := range []string{"beta.weft.internal", "member of network", "node id", "listening", "alpha"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("weft status lacks %q:\n%s", s, r.stdout)
		}
	}
}

var sshSkipReason string

// sshdPath is where Debian's openssh-server installs sshd.
const sshdPath = "/usr/sbin/sshd"

// sshdUnavailable says why a real sshd cannot be run, "" if it can.
func sshdUnavailable() string {
	if _, err := os.Stat(sshdPath); err != nil {
		return sshdPath + " is not installed (`make setup` installs openssh-server); skipping the ssh check"
	}
	for _, tool := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed (`make setup` installs openssh-client); skipping the ssh check"
		}
	}
	return ""
}

// startSSHD starts a real sshd on a free loopback port that accepts one
// generated key for the current user. It returns nil, with sshSkipReason
// set, when sshd, ssh or ssh-keygen is missing.
func startSSHD(t *testing.T, dir string) *sshServer {
	t.Helper()
	if sshSkipReason = sshdUnavailable(); sshSkipReason != "" {
		return nil
	}
	s, config := newSSHDConfig(t, dir, loopback(freePort(t, "tcp")))
	// -D: foreground; -e: log to stderr.
	p := startProcess(t, "sshd", exec.Command(sshdPath, "-D", "-e", "-f", config))
	waitSSHBanner(t, s.addr, func() (net.Conn, error) { return net.DialTimeout("tcp", s.addr, time.Second) },
		p.exited, p.output.String)
	return s
}

// newSSHDConfig writes, under dir/sshd, a host key, a client key and the
// configuration of an sshd listening on addr (IP:PORT) that lets the
// current user in with the client key. It returns the server and the
// configuration file for `sshd -f`.
func newSSHDConfig(t *testing.T, dir, addr string) (*sshServer, string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// sshd refuses to start without its privilege separation directory.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("create /run/sshd for sshd: %v", err)
		}
	}
	sd := filepath.Join(dir, "sshd")
	if err := os.Mkdir(sd, 0o700); err != nil {
		t.Fatal(err)
	}
	hostKey, clientKey := filepath.Join(sd, "host_ed25519"), filepath.Join(sd, "client_ed25519")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "weft-test-host", "-f", hostKey)
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "weft-test-client", "-f", clientKey)
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authKeys := filepath.Join(sd, "authorized_keys")
	if err := os.WriteFile(authKeys, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	rootLogin := "no"
	if os.Geteuid() == 0 {
		rootLogin = "yes"
	}
	config := filepath.Join(sd, "sshd_config")
	cfg := fmt.Sprintf(`Port %s
ListenAddress %s
HostKey %s
AuthorizedKeysFile %s
PidFile none
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin %s
AllowUsers %s
LogLevel VERBOSE
`, port, host, hostKey, authKeys, rootLogin, u.Username)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &sshServer{addr: addr, key: clientKey, user: u.Username}, config
}

// waitSSHBanner waits until dial reaches a server that sends an SSH banner.
// exited and output are the sshd process's, for the error.
func waitSSHBanner(t *testing.T, addr string, dial func() (net.Conn, error), exited func() bool, output func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if exited() {
			t.Fatalf("sshd exited:\n%s", output())
		}
		if c, err := dial(); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			banner, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(banner, "SSH-2.0-") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd on %s not answering after 10s:\n%s", addr, output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shellQuote quotes s for the shell ssh runs ProxyCommand with.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ncProxy is the ssh ProxyCommand that reaches %h:%p through `weft nc` on
// the daemon whose state directory is state.
func ncProxy(t *testing.T, state string) string {
	return fmt.Sprintf("%s nc --state %s %%h %%p", shellQuote(weftBinary(t)), shellQuote(state))
}

// sshArgs are ssh's options for logging in to s with its key through
// proxy (a ProxyCommand), with no config file, no prompts and any host
// key; opts are more -o options.
func sshArgs(s *sshServer, proxy string, opts ...string) []string {
	args := []string{"-F", "none",
		"-o", "ProxyCommand=" + proxy,
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR",
		"-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "ConnectTimeout=15"}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	return append(args, "-i", s.key)
}

func checkSSH(t *testing.T, n twoNodes, s *sshServer) {
	out := run(t, "ssh", append(sshArgs(s, ncProxy(t, n.stateB)), s.user+"@alpha", "echo through-weft")...)
	if strings.TrimSpace(out) != "through-weft" {
		t.Errorf("ssh through weft nc: got %q, want \"through-weft\"", out)
	}
}
