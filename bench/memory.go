package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemonEnv is added to the daemons' environment (--daemon-env).
var daemonEnv []string

// daemon is a `weft up` subprocess.
type daemon struct {
	name   string
	cmd    *exec.Cmd
	up     chan struct{} // closed when the daemon printed its "up" line
	upLine string        // that line; set before up is closed
	log    bytes.Buffer  // its stderr, for errors
}

// startDaemon runs `weft up --state dir args...` and waits until it is up.
func startDaemon(bin, name, dir string, args ...string) (*daemon, error) {
	return startDaemonArgv(name, append([]string{bin, "up", "--state", dir, "--log-level", "warn"}, args...))
}

// startDaemonArgv runs argv (a `weft up` command line, possibly behind a
// prefix such as `ip netns exec NS`) and waits until the daemon is up.
func startDaemonArgv(name string, argv []string) (*daemon, error) {
	d := &daemon{name: name, up: make(chan struct{})}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = append(append(os.Environ(), "GOMAXPROCS=2"), daemonEnv...)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		upSeen := false
		for sc.Scan() {
			line := sc.Text()
			d.log.WriteString(line + "\n")
			if !upSeen && strings.Contains(line, " up: ") {
				upSeen = true
				d.upLine = line
				close(d.up)
			}
		}
	}()
	select {
	case <-d.up:
		return d, nil
	case <-time.After(20 * time.Second):
		d.stop()
		return nil, fmt.Errorf("weft up %s did not come up in 20s", name)
	}
}

func (d *daemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
}

// procKB returns a field of /proc/PID/status in KiB (VmRSS, VmHWM).
func procKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func weftCmd(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("weft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func freePort(network string) (int, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// socks5Dial connects to host:port through the SOCKS5 proxy at proxy (no
// authentication, CONNECT with a domain name), per RFC 1928.
func socks5Dial(proxy, host string, port int) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fail := func(err error) (net.Conn, error) { c.Close(); return nil, err }
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return fail(err)
	}
	var rep [2]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return fail(err)
	}
	if rep != [2]byte{5, 0} {
		return fail(fmt.Errorf("socks5 method reply %v", rep))
	}
	req := []byte{5, 1, 0, 3, byte(len(host))}
	req = append(req, host...)
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := c.Write(req); err != nil {
		return fail(err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fail(err)
	}
	if hdr[1] != 0 {
		return fail(fmt.Errorf("socks5 connect to %s:%d refused with code %d", host, port, hdr[1]))
	}
	var skip int
	switch hdr[3] {
	case 1:
		skip = 4 + 2
	case 4:
		skip = 16 + 2
	case 3:
		var l [1]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return fail(err)
		}
		skip = int(l[0]) + 2
	default:
		return fail(fmt.Errorf("socks5 reply address type %d", hdr[3]))
	}
	if _, err := io.CopyN(io.Discard, c, int64(skip)); err != nil {
		return fail(err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// memory runs two `weft up` daemons: "recv" (the anchor) exposes overlay port
// 9000 to a discard sink in this process, "send" serves SOCKS5. It reports
// their idle RSS, then pushes n bytes sink-ward through SOCKS5 and reports
// each daemon's peak RSS (VmHWM).
func (r *report) memory(bin string, n int64) error {
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%w (run `make build` first, or pass --weft)", err)
	}
	base, err := os.MkdirTemp("", "weft-bench-mem-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	recvDir, sendDir := filepath.Join(base, "recv"), filepath.Join(base, "send")

	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer sink.Close()
	received := make(chan int64, 1)
	go func() {
		c, err := sink.Accept()
		if err != nil {
			received <- -1
			return
		}
		defer c.Close()
		m, _ := io.Copy(io.Discard, c)
		received <- m
	}()

	if _, err := weftCmd(bin, "init", "--state", recvDir, "--network", "bench", "--name", "recv"); err != nil {
		return err
	}
	recvPort, err := freePort("udp")
	if err != nil {
		return err
	}
	recv, err := startDaemon(bin, "recv", recvDir, "--listen", fmt.Sprintf("127.0.0.1:%d", recvPort),
		"--expose", "9000="+sink.Addr().String())
	if err != nil {
		return err
	}
	defer recv.stop()
	tok, err := weftCmd(bin, "invite", "--state", recvDir, "--name", "send")
	if err != nil {
		return err
	}
	if _, err := weftCmd(bin, "join", "--state", sendDir, tok); err != nil {
		return err
	}
	sendPort, err := freePort("udp")
	if err != nil {
		return err
	}
	socksPort, err := freePort("tcp")
	if err != nil {
		return err
	}
	socks := fmt.Sprintf("127.0.0.1:%d", socksPort)
	send, err := startDaemon(bin, "send", sendDir, "--listen", fmt.Sprintf("127.0.0.1:%d", sendPort), "--socks5", socks)
	if err != nil {
		return err
	}
	defer send.stop()

	time.Sleep(3 * time.Second)
	ds := []*daemon{recv, send}
	idle := make([]int64, len(ds))
	for i, d := range ds {
		if idle[i], err = procKB(d.cmd.Process.Pid, "VmRSS"); err != nil {
			return err
		}
	}

	c, err := socks5Dial(socks, "recv", 9000)
	if err != nil {
		return fmt.Errorf("through SOCKS5 of send: %w\nsend log:\n%s", err, send.log.String())
	}
	start := time.Now()
	buf := make([]byte, chunk)
	for left := n; left > 0; {
		k := min(left, chunk)
		if _, err := c.Write(buf[:k]); err != nil {
			c.Close()
			return fmt.Errorf("write through daemons: %w", err)
		}
		left -= k
	}
	c.(*net.TCPConn).CloseWrite()
	var got int64
	select {
	case got = <-received:
	case <-time.After(120 * time.Second):
		c.Close()
		return errors.New("sink did not receive everything in 120s")
	}
	rate := float64(n) / time.Since(start).Seconds() / 1e6
	c.Close()
	if got != n {
		return fmt.Errorf("sink received %d bytes, want %d", got, n)
	}
	peak := make([]int64, len(ds))
	for i, d := range ds {
		if peak[i], err = procKB(d.cmd.Process.Pid, "VmHWM"); err != nil {
			return err
		}
	}

	r.linef("")
	r.linef("2. Memory of `weft up` daemons (bin/weft), %d MiB through SOCKS5 -> overlay -> --expose at %.0f MB/s", n>>20, rate)
	r.linef("   %-28s %10s %10s", "daemon", "idle RSS", "peak RSS")
	for i, d := range ds {
		role := map[string]string{"recv": "receiver (--expose, anchor)", "send": "sender (--socks5)"}[d.name]
		r.linef("   %-28s %7.1f MB %7.1f MB", role, float64(idle[i])/1024, float64(peak[i])/1024)
	}
	maxIdle, maxPeak := max(idle[0], idle[1]), max(peak[0], peak[1])
	r.linef("   worst idle %.1f MB (target <= 25: %s), worst peak %.1f MB (target <= 80: %s)",
		float64(maxIdle)/1024, verdict(maxIdle <= 25*1024), float64(maxPeak)/1024, verdict(maxPeak <= 80*1024))
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "meets"
	}
	return "MISSES"
}
