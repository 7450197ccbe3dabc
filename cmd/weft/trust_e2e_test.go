package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// anchorNode is one anchor of the multi-anchor test network.
type anchorNode struct {
	name, state, listen string
	desc                string // its `weft keygen` descriptor
	p                   *process
}

// trustJSON is what the test reads from `weft trust status --json`.
type trustJSON struct {
	NetworkID   string       `json:"network_id"`
	SetSeq      uint64       `json:"anchor_set_seq"`
	Threshold   int          `json:"threshold"`
	Tolerance   int          `json:"tolerates_byzantine"`
	Anchors     []anchorJSON `json:"anchors"`
	Revocations []struct {
		NodeID string `json:"node_id"`
		Reason string `json:"reason"`
	} `json:"revocations"`
	Policy    string `json:"policy"`
	PolicySeq uint64 `json:"policy_seq"`
}

// anchorJSON is one anchor in `weft trust status --json`.
type anchorJSON struct {
	Name   string `json:"name"`
	NodeID string `json:"node_id"`
}

func trustStatus(t *testing.T, state string) trustJSON {
	t.Helper()
	r := mustWeft(t, "trust", "status", "--state", state, "--json")
	var ts trustJSON
	if err := json.Unmarshal([]byte(r.stdout), &ts); err != nil {
		t.Fatalf("trust status --json: %v\n%v", err, r)
	}
	return ts
}

// eventually retries check until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// wantStderr fails unless r's stderr contains every string of want.
func wantStderr(t *testing.T, r result, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%v", w, r)
		}
	}
}

// token returns the single token line a command printed, checking its
// prefix.
func token(t *testing.T, r result, prefix string) string {
	t.Helper()
	tok := strings.TrimSpace(r.stdout)
	if strings.Count(r.stdout, "\n") != 1 || !strings.HasPrefix(tok, prefix) {
		t.Fatalf("want one %s… token line on stdout:\n%v", prefix, r)
	}
	return tok
}

// tryWeft runs weft like runWeft, but a timeout is a result, not a test
// failure.
func tryWeft(t *testing.T, timeout time.Duration, stdin string, args ...string) (r result, timedOut bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, weftBinary(t), args...)
	cmd.Env = testEnv(t)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	r = result{args: args, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("weft %s: %v", strings.Join(args, " "), err)
	}
	checkNoPanic(t, r)
	return r, ctx.Err() != nil
}

// TestMultiAnchor builds a network of four anchors (t = 3, f = 1) on
// loopback from the CLI alone, as four operators would: keygen on each,
// genesis assembled on one and installed on the others, invites cosigned
// to the threshold, a revocation cosigned and spread, a join that waits for
// approvals, and a policy.
func TestMultiAnchor(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-anchor end-to-end test runs six daemons; skipped with -short")
	}
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skipf("end-to-end test uses Unix sockets and process groups; not on %s", runtime.GOOS)
	}
	start := time.Now()
	weftBinary(t)
	dir := t.TempDir()
	const body = "hello from a2's web server\n"
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }))
	t.Cleanup(web.Close)

	// 1. Each anchor makes its key on "its own machine".
	anchors := make([]*anchorNode, 4)
	var descs []string
	for i := range anchors {
		a := &anchorNode{name: fmt.Sprintf("a%d", i+1), state: filepath.Join(dir, fmt.Sprintf("a%d", i+1)),
			listen: loopback(freePort(t, "udp"))}
		r := mustWeft(t, "keygen", "--state", a.state, "--name", a.name, "--endpoint", a.listen)
		a.desc = token(t, r, "weft-anchor1-")
		wantStderr(t, r, "weft init --anchors")
		anchors[i], descs = a, append(descs, a.desc)
	}
	// keygen again reuses the key: the same descriptor, also as JSON.
	r := mustWeft(t, "keygen", "--state", anchors[0].state, "--name", "a1", "--endpoint", anchors[0].listen, "--json")
	var kg keygenResult
	if err := json.Unmarshal([]byte(r.stdout), &kg); err != nil || kg.Descriptor != anchors[0].desc || len(kg.NodeID) != 64 ||
		!slices.Equal(kg.Endpoints, []string{anchors[0].listen}) {
		t.Errorf("keygen --json again: want the same descriptor (%v):\n%v", err, r)
	}

	// 2. One of them assembles the genesis; the others install it.
	r = mustWeft(t, "init", "--state", anchors[0].state, "--anchors", descs[0]+","+descs[1], "--anchors", descs[2]+","+descs[3])
	genesis := token(t, r, "weft-genesis1-")
	wantStderr(t, r, "4 anchors, 3 endorsements needed, tolerates 1 Byzantine", "weft init --genesis TOKEN")
	for _, a := range anchors[1:] {
		r := mustWeft(t, "init", "--state", a.state, "--genesis", genesis)
		if !strings.Contains(r.stdout, "installed network") || !strings.Contains(r.stdout, "role     anchor") {
			t.Errorf("init --genesis on %s:\n%v", a.name, r)
		}
	}
	stranger := filepath.Join(dir, "stranger")
	r = runWeft(t, "", "init", "--state", stranger, "--genesis", genesis)
	if r.code != 1 || !strings.Contains(r.stderr, "run `weft keygen --state "+stranger+"` first") {
		t.Errorf("init --genesis without a key: want a refusal that names `weft keygen`:\n%v", r)
	}
	mustWeft(t, "keygen", "--state", stranger)
	r = runWeft(t, "", "init", "--state", stranger, "--genesis", genesis)
	if r.code != 1 || !strings.Contains(r.stderr, "is not an anchor of network") || !strings.Contains(r.stderr, "weft join") {
		t.Errorf("init --genesis with a key outside the set: want a refusal that names `weft join`:\n%v", r)
	}

	// 3. Up.
	for i, a := range anchors {
		args := []string{"--listen", a.listen}
		if i == 1 {
			args = append(args, "--expose", "8080="+web.Listener.Addr().String())
		}
		a.p = startDaemon(t, "anchor "+a.name, a.state, args...)
	}
	a1, a2, a3, a4 := anchors[0].state, anchors[1].state, anchors[2].state, anchors[3].state

	// 4. An invite needs three endorsements.
	r = mustWeft(t, "invite", "--state", a1, "--name", "m1", "--tags", "web,ops")
	tok1 := token(t, r, "weft1-")
	wantStderr(t, r, "1 of 3 endorsements: pass it to another anchor with `weft invite cosign TOKEN`")
	r = mustWeft(t, "invite", "cosign", "--state", a2, tok1)
	tok2 := token(t, r, "weft1-")
	wantStderr(t, r, "2 of 3 endorsements: pass it to another anchor")
	r = mustWeft(t, "trust", "cosign", tok2, "--state", a3) // the general form works for invites too
	tok3 := token(t, r, "weft1-")
	wantStderr(t, r, "3 of 3 endorsements: the invite is complete", "weft join TOKEN")

	t.Run("two endorsements are refused", func(t *testing.T) {
		s := filepath.Join(dir, "m1-early")
		r := runWeft(t, "", "join", "--state", s, tok2)
		if r.code != 1 {
			t.Errorf("join with 2 of 3 endorsements: want exit 1:\n%v", r)
		}
		wantStderr(t, r, "2 of the 3 anchor endorsements", "weft invite cosign")
		if _, err := os.Stat(s); err == nil {
			t.Errorf("the refused join created %s", s)
		}
	})

	m1 := filepath.Join(dir, "m1")
	r = mustWeft(t, "join", "--state", m1, tok3)
	wantStderr(t, r, "endorsements: admitted")
	if !strings.Contains(r.stdout, "m1.weft.internal") {
		t.Errorf("join output:\n%v", r)
	}
	startDaemon(t, "member m1", m1, "--listen", loopback(freePort(t, "udp")))

	t.Run("trust status everywhere", func(t *testing.T) {
		var id string
		for _, s := range []string{a1, a2, a3, a4, m1} {
			ts := trustStatus(t, s)
			if ts.Threshold != 3 || ts.Tolerance != 1 || len(ts.Anchors) != 4 || ts.SetSeq != 0 || len(ts.Revocations) != 0 {
				t.Errorf("%s: trust status %+v; want t=3 f=1, 4 anchors, seq 0, no revocations", s, ts)
			}
			if id == "" {
				id = ts.NetworkID
			} else if ts.NetworkID != id {
				t.Errorf("%s: network %s, a1 says %s", s, ts.NetworkID, id)
			}
		}
		r := mustWeft(t, "trust", "--state", a2) // status is the default
		for _, w := range []string{"threshold t=3, tolerates f=1", "a1", "a4", "revocations  none", "allow all"} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("weft trust lacks %q:\n%v", w, r)
			}
		}
	})

	get := "GET / HTTP/1.0\r\nHost: a2\r\n\r\n"
	r = runWeft(t, get, "nc", "--state", m1, "a2", "8080")
	if r.code != 0 || !strings.HasSuffix(r.stdout, body) {
		t.Fatalf("m1 → a2:8080 before the revocation:\n%v", r)
	}

	t.Run("revoke", func(t *testing.T) {
		var mid string
		if err := json.Unmarshal([]byte(mustWeft(t, "status", "--state", m1, "--json").stdout), &struct {
			NodeID *string `json:"node_id"`
		}{&mid}); err != nil || mid == "" {
			t.Fatalf("m1 status: %v", err)
		}
		r := mustWeft(t, "revoke", "m1", "--state", a1, "--reason", "lost laptop")
		rv := token(t, r, "weft-revoke1-")
		wantStderr(t, r, "1 of 3 endorsements: pass it to another anchor with `weft trust cosign TOKEN`")
		r = mustWeft(t, "trust", "cosign", "--state", a2, rv)
		rv = token(t, r, "weft-revoke1-")
		wantStderr(t, r, "2 of 3 endorsements")
		r = mustWeft(t, "trust", "cosign", "--state", a3, "--json", rv)
		var res struct {
			Token                   string
			Endorsements, Threshold int
			Published               bool
		}
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || !res.Published || res.Endorsements != 3 || res.Threshold != 3 {
			t.Fatalf("third cosign: want published with 3 of 3 (%v):\n%v", err, r)
		}
		eventually(t, 5*time.Second, "a4 lists the revocation", func() error {
			ts := trustStatus(t, a4)
			if len(ts.Revocations) != 1 || ts.Revocations[0].NodeID != mid || ts.Revocations[0].Reason != "lost laptop" {
				return fmt.Errorf("revocations %+v", ts.Revocations)
			}
			return nil
		})
		// Publishing it again changes nothing.
		r = mustWeft(t, "trust", "publish", "--state", a4, res.Token)
		if !strings.Contains(r.stdout, "already in force") {
			t.Errorf("publish of a known revocation:\n%v", r)
		}
		// The revoked member reaches no anchor any more.
		eventually(t, 10*time.Second, "m1 cut off", func() error {
			r, timedOut := tryWeft(t, 5*time.Second, get, "nc", "--state", m1, "a2", "8080")
			if timedOut || r.code != 0 {
				return nil
			}
			return fmt.Errorf("m1 still reaches a2:\n%v", r)
		})
		// Anchors refuse to revoke themselves, and members cannot revoke.
		r = runWeft(t, "", "revoke", "--state", m1, "a2")
		if r.code != 1 || !strings.Contains(r.stderr, "run this on an anchor") {
			t.Errorf("revoke on a member: want \"run this on an anchor\":\n%v", r)
		}
	})

	t.Run("join waiting for approval", func(t *testing.T) {
		g := filepath.Join(dir, "gamma")
		cmd := exec.Command(weftBinary(t), "join", "--state", g, "--genesis", genesis, "--name", "gamma", "--wait", "30s")
		cmd.Env = testEnv(t)
		join := startProcess(t, "join gamma", cmd)
		for _, s := range []string{a1, a2, a3} {
			eventually(t, 10*time.Second, "gamma pending on "+s, func() error {
				var list []pendingJoin
				r := mustWeft(t, "trust", "pending", "--state", s, "--json")
				if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
					return err
				}
				if len(list) != 1 || list[0].Name != "gamma" || list[0].State != "pending" {
					return fmt.Errorf("pending: %+v", list)
				}
				return nil
			})
			r := mustWeft(t, "trust", "pending", "--state", s)
			if !strings.Contains(r.stdout, "gamma") || !strings.Contains(r.stdout, "weft trust approve") {
				t.Errorf("trust pending:\n%v", r)
			}
			r = mustWeft(t, "trust", "approve", "gamma", "--state", s)
			if !strings.Contains(r.stdout, "approved gamma") {
				t.Errorf("trust approve:\n%v", r)
			}
		}
		if err := join.wait(t, 15*time.Second); err != nil {
			t.Fatalf("join --genesis: %v\n%s", err, join.output)
		}
		out := join.output.String()
		for _, w := range []string{"waiting for an operator to run `weft trust approve", "3 of 3 endorsements: admitted", "joined network", "gamma.weft.internal"} {
			if !strings.Contains(out, w) {
				t.Errorf("join --genesis output lacks %q:\n%s", w, out)
			}
		}
		// The fourth operator rejects it, too late to matter.
		r := mustWeft(t, "trust", "reject", "gamma", "--why", "unknown machine", "--state", a4, "--json")
		if !strings.Contains(r.stdout, `"state": "rejected"`) {
			t.Errorf("trust reject --json:\n%v", r)
		}
		r = runWeft(t, "", "trust", "approve", "nobody", "--state", a4)
		if r.code != 1 || !strings.Contains(r.stderr, "weft trust approve: no pending join request matches") {
			t.Errorf("approve of an unknown host:\n%v", r)
		}
	})

	t.Run("policy", func(t *testing.T) {
		r := mustWeft(t, "trust", "policy", "--state", a1,
			"--rule", "from=* to=web proto=tcp ports=22,80-89", "--rule", "from=ops to=* proto=icmp")
		p := token(t, r, "weft-policy1-")
		wantStderr(t, r, "1 of 3 endorsements")
		p = token(t, mustWeft(t, "trust", "cosign", "--state", a2, p), "weft-policy1-")
		r = mustWeft(t, "trust", "cosign", "--state", a3, p)
		wantStderr(t, r, "3 of 3 endorsements: published")
		eventually(t, 5*time.Second, "a4 has the policy", func() error {
			ts := trustStatus(t, a4)
			if ts.PolicySeq != 1 || !strings.Contains(ts.Policy, "* -> web tcp/22,80-89") || !strings.Contains(ts.Policy, "ops -> * icmp") {
				return fmt.Errorf("policy seq %d: %q", ts.PolicySeq, ts.Policy)
			}
			return nil
		})
		r = mustWeft(t, "status", "--state", a4)
		if !strings.Contains(r.stdout, "policy     seq 1,") || !strings.Contains(r.stdout, "default deny") {
			t.Errorf("weft status does not show the policy in force:\n%v", r)
		}
		r = mustWeft(t, "status", "--state", a4, "--json")
		var st struct {
			Trust *trustJSON `json:"trust"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Trust == nil || st.Trust.PolicySeq != 1 {
			t.Errorf("status --json: want trust.policy_seq 1 (%v):\n%v", err, r)
		}
	})

	t.Run("rotate", func(t *testing.T) {
		r := runWeft(t, "", "rotate", "--state", a4, "--json")
		var res rotateResult
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || len(res.WGPublicKey) != 44 {
			t.Fatalf("rotate --json: want a base64 key:\n%v", r)
		}
		r = mustWeft(t, "rotate", "--state", a4)
		if k := strings.TrimSpace(r.stdout); len(k) != 44 || k == res.WGPublicKey {
			t.Errorf("second rotate: want a new 44-character key, had %s:\n%v", res.WGPublicKey, r)
		}
	})

	t.Run("anchor-set change", func(t *testing.T) {
		a5 := &anchorNode{name: "a5", state: filepath.Join(dir, "a5"), listen: loopback(freePort(t, "udp"))}
		a5.desc = token(t, mustWeft(t, "keygen", "--state", a5.state, "--name", "a5", "--endpoint", a5.listen), "weft-anchor1-")
		r := mustWeft(t, "trust", "change", "--state", a1, "--add", a5.desc, "--remove", "a4")
		c := token(t, r, "weft-change1-")
		wantStderr(t, r, "1 of 3 endorsements")
		c = token(t, mustWeft(t, "trust", "cosign", "--state", a2, c), "weft-change1-")
		r = mustWeft(t, "trust", "cosign", "--state", a3, c)
		c = token(t, r, "weft-change1-")
		wantStderr(t, r, "3 of 3 endorsements: published")
		eventually(t, 5*time.Second, "a2 follows the new set", func() error {
			ts := trustStatus(t, a2)
			var names []string
			for _, a := range ts.Anchors {
				names = append(names, a.Name)
			}
			slices.Sort(names)
			if ts.SetSeq != 1 || !slices.Equal(names, []string{"a1", "a2", "a3", "a5"}) || ts.Threshold != 3 {
				return fmt.Errorf("anchor set seq %d %v t=%d", ts.SetSeq, names, ts.Threshold)
			}
			return nil
		})
		// a4, removed, follows the change too, and gives up its powers.
		eventually(t, 5*time.Second, "a4 follows the new set", func() error {
			if ts := trustStatus(t, a4); ts.SetSeq != 1 || slices.ContainsFunc(ts.Anchors, func(a anchorJSON) bool { return a.Name == "a4" }) {
				return fmt.Errorf("a4's anchor set: seq %d %+v", ts.SetSeq, ts.Anchors)
			}
			return nil
		})
		if r := runWeft(t, "", "trust", "pending", "--state", a4); r.code == 0 || !strings.Contains(r.stderr, "anchor") {
			t.Errorf("trust pending on the removed anchor a4: want a not-an-anchor refusal:\n%v", r)
		}
		// The new anchor installs the genesis and the change, then runs.
		r = runWeft(t, "", "init", "--state", a5.state, "--genesis", genesis)
		if r.code != 1 || !strings.Contains(r.stderr, "not an anchor") {
			t.Errorf("init --genesis without the change on the new anchor: want a refusal:\n%v", r)
		}
		r = runWeft(t, "", "init", "--state", a5.state, "--genesis", genesis, "--change", c)
		if r.code != 0 {
			t.Fatalf("init --genesis --change on the new anchor:\n%v", r)
		}
		a5.p = startDaemon(t, "anchor a5", a5.state, "--listen", a5.listen)
		if ts := trustStatus(t, a5.state); ts.SetSeq != 1 || len(ts.Anchors) != 4 {
			t.Errorf("a5's trust status: %+v", ts)
		}
		stopDaemon(t, a5.p, a5.state)
	})

	for _, a := range anchors {
		stopDaemon(t, a.p, a.state)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Errorf("the multi-anchor test took %v; keep it under a minute", d)
	}
}

// TestTrustNotRunning checks that the trust commands say how to start the
// daemon, naming the subcommand.
func TestTrustNotRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary; skipped with -short")
	}
	state := filepath.Join(t.TempDir(), "S")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"trust status", []string{"trust", "status"}},
		{"trust", []string{"trust"}},
		{"trust pending", []string{"trust", "pending", "--json"}},
		{"trust approve", []string{"trust", "approve", "gamma"}},
		{"trust cosign", []string{"trust", "cosign", "weft-revoke1-AAAA"}},
		{"trust policy", []string{"trust", "policy", "--rule", "from=* to=*"}},
		{"revoke", []string{"revoke", "beta"}},
		{"rotate", []string{"rotate"}},
		{"invite cosign", []string{"invite", "cosign", "weft1-AAAA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runWeft(t, "", append(tc.args, "--state", state)...)
			prefix := "weft " + tc.name
			if tc.name == "trust" {
				prefix = "weft trust status"
			}
			if tc.name == "invite cosign" {
				prefix = "weft invite" // the command that failed
			}
			want := prefix + ": weft is not running for state " + state + ": start it with `weft up --state " + state + "`"
			if r.code != 1 || strings.TrimSpace(r.stderr) != want {
				t.Errorf("want exit 1 and %q:\n%v", want, r)
			}
		})
	}
}
