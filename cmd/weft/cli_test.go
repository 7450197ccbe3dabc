package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseExpose(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    exposeSpec
		wantErr string // substring of the error; "" means no error
	}{
		{name: "port=addr", in: "8080=127.0.0.1:9000", want: exposeSpec{8080, "127.0.0.1:9000"}},
		{name: "bare port", in: "80", want: exposeSpec{80, "127.0.0.1:80"}},
		{name: "port=port", in: "22=2222", want: exposeSpec{22, "127.0.0.1:2222"}},
		{name: "ipv6 target", in: "443=[::1]:8443", want: exposeSpec{443, "[::1]:8443"}},
		{name: "host name target", in: "53=localhost:5353", want: exposeSpec{53, "localhost:5353"}},
		{name: "highest port", in: "65535=127.0.0.1:65535", want: exposeSpec{65535, "127.0.0.1:65535"}},
		{name: "empty", in: "", wantErr: "want PORT=LOCALADDR"},
		{name: "port zero", in: "0=127.0.0.1:80", wantErr: "want PORT=LOCALADDR"},
		{name: "port too big", in: "65536=127.0.0.1:80", wantErr: "want PORT=LOCALADDR"},
		{name: "port not a number", in: "http=127.0.0.1:80", wantErr: "want PORT=LOCALADDR"},
		{name: "negative port", in: "-1", wantErr: "want PORT=LOCALADDR"},
		{name: "empty target", in: "80=", wantErr: "local address"},
		{name: "target without port", in: "80=127.0.0.1", wantErr: "local address"},
		{name: "target port too big", in: "80=99999", wantErr: "local address"},
		{name: "target port zero", in: "80=0", wantErr: "local port"},
		{name: "target port empty", in: "80=127.0.0.1:", wantErr: "local port"},
		{name: "target port garbage", in: "80=127.0.0.1:eighty", wantErr: "local port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseExpose(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseExpose(%q) = %+v, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), "--expose") {
					t.Errorf("error %q does not name the flag", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseExpose(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestListFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		sets []string
		want []string
	}{
		{name: "none", sets: nil, want: nil},
		{name: "one", sets: []string{"1.2.3.4:5"}, want: []string{"1.2.3.4:5"}},
		{name: "repeated", sets: []string{"a", "b"}, want: []string{"a", "b"}},
		{name: "comma list", sets: []string{"a,b,c"}, want: []string{"a", "b", "c"}},
		{name: "mixed", sets: []string{"a,b", "c"}, want: []string{"a", "b", "c"}},
		{name: "spaces and empties", sets: []string{" a , ,b,", ""}, want: []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l listFlag
			for _, s := range tc.sets {
				if err := l.Set(s); err != nil {
					t.Fatalf("Set(%q): %v", s, err)
				}
			}
			if !reflect.DeepEqual([]string(l), tc.want) {
				t.Errorf("after %q: %q, want %q", tc.sets, l, tc.want)
			}
			if got, want := l.String(), strings.Join(tc.want, ","); got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
		})
	}

	// As a flag.Value in a FlagSet, the way `weft up --bootstrap` uses it.
	var l listFlag
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.Var(&l, "bootstrap", "")
	if err := fs.Parse([]string{"--bootstrap", "1.1.1.1:1,2.2.2.2:2", "--bootstrap=3.3.3.3:3"}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"1.1.1.1:1", "2.2.2.2:2", "3.3.3.3:3"}; !reflect.DeepEqual([]string(l), want) {
		t.Errorf("--bootstrap twice: %q, want %q", l, want)
	}
}

func TestBytesHuman(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{
		{0, "0 B"},
		{1, "1 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{10*1024 - 1, "10.0 KiB"},
		{1<<20 - 1, "1.0 MiB"}, // not "1024.0 KiB"
		{1 << 20, "1.0 MiB"},
		{64 << 20, "64.0 MiB"},
		{1<<30 + 1<<29, "1.5 GiB"},
		{1 << 40, "1.0 TiB"},
		{1 << 50, "1.0 PiB"},
		{1 << 60, "1.0 EiB"},
		{math.MaxUint64, "16.0 EiB"},
	} {
		if got := bytesHuman(tc.n); got != tc.want {
			t.Errorf("bytesHuman(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	type flags struct {
		State, Name string
		JSON        bool
	}
	for _, tc := range []struct {
		name    string
		args    []string
		pos     []string
		flags   flags
		wantErr error
	}{
		{name: "empty", args: nil},
		{name: "positional only", args: []string{"TOKEN"}, pos: []string{"TOKEN"}},
		{name: "flags first", args: []string{"--state", "S", "TOKEN"}, pos: []string{"TOKEN"}, flags: flags{State: "S"}},
		{name: "flags after positional", args: []string{"TOKEN", "--state", "S", "--json"}, pos: []string{"TOKEN"}, flags: flags{State: "S", JSON: true}},
		{name: "interleaved", args: []string{"alpha", "-json", "22", "--name=n"}, pos: []string{"alpha", "22"}, flags: flags{Name: "n", JSON: true}},
		{name: "single dash flags", args: []string{"-state", "S", "x"}, pos: []string{"x"}, flags: flags{State: "S"}},
		{name: "bool with value", args: []string{"x", "--json=false"}, pos: []string{"x"}},
		{name: "terminator first", args: []string{"--", "-x", "--json"}, pos: []string{"-x", "--json"}},
		{name: "terminator after positional", args: []string{"a", "--", "--json", "b"}, pos: []string{"a", "--json", "b"}},
		{name: "terminator after flags", args: []string{"--json", "--", "a", "--state", "S"}, pos: []string{"a", "--state", "S"}, flags: flags{JSON: true}},
		{name: "dashes as a flag value", args: []string{"--name", "--", "a", "--json"}, pos: []string{"a"}, flags: flags{Name: "--", JSON: true}},
		{name: "dashes as a flag value with =", args: []string{"--name=--", "--", "-a"}, pos: []string{"-a"}, flags: flags{Name: "--"}},
		{name: "single dash is positional", args: []string{"-", "--json"}, pos: []string{"-"}, flags: flags{JSON: true}},
		{name: "unknown flag", args: []string{"--bogus"}, wantErr: errUsage},
		{name: "unknown flag after positional", args: []string{"a", "--bogus"}, wantErr: errUsage},
		{name: "missing value", args: []string{"a", "--state"}, wantErr: errUsage},
		{name: "bad bool", args: []string{"--json=maybe"}, wantErr: errUsage},
		{name: "help", args: []string{"-h"}, wantErr: flag.ErrHelp},
		{name: "help after positional", args: []string{"a", "--help"}, wantErr: flag.ErrHelp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got flags
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			fs.StringVar(&got.State, "state", "", "")
			fs.StringVar(&got.Name, "name", "", "")
			fs.BoolVar(&got.JSON, "json", false, "")
			pos, err := parse(fs, tc.args)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("parse(%q) = %q, %v; want %v", tc.args, pos, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse(%q): %v", tc.args, err)
			}
			if len(pos) == 0 {
				pos = nil
			}
			if !reflect.DeepEqual(pos, tc.pos) {
				t.Errorf("parse(%q) positionals = %q, want %q", tc.args, pos, tc.pos)
			}
			if got != tc.flags {
				t.Errorf("parse(%q) flags = %+v, want %+v", tc.args, got, tc.flags)
			}
		})
	}
}

// usageCases are invocations that must fail before touching any state, with
// their exit status and what stderr must say.
func usageCases(state string) []struct {
	name string
	args []string
	code int
	want []string
} {
	return []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"no command", nil, 2, []string{"Usage: weft COMMAND", "Commands:", "join", "status"}},
		{"unknown command", []string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`, "weft help"}},
		{"unknown flag", []string{"status", "--state", state, "--bogus"}, 2, []string{"flag provided but not defined: -bogus", "Usage: weft status"}},
		{"flag missing its value", []string{"status", "--state"}, 2, []string{"flag needs an argument", "Usage: weft status"}},
		{"bad int flag", []string{"invite", "--state", state, "--uses", "many"}, 2, []string{`invalid value "many"`, "Usage: weft invite"}},
		{"bad duration flag", []string{"invite", "--state", state, "--ttl", "soon"}, 2, []string{`invalid value "soon"`, "Usage: weft invite"}},
		{"stray argument", []string{"status", "--state", state, "extra"}, 2, []string{"Usage: weft status"}},
		{"stray argument to version", []string{"version", "extra"}, 2, []string{"Usage: weft version"}},
		{"join without token", []string{"join", "--state", state}, 2, []string{"want exactly one TOKEN", "Usage: weft join [flags] TOKEN"}},
		{"join with two tokens", []string{"join", "--state", state, "a", "b"}, 2, []string{"want exactly one TOKEN", "Usage: weft join"}},
		{"nc without port", []string{"nc", "--state", state, "alpha"}, 2, []string{"want HOST PORT", "Usage: weft nc [flags] HOST PORT"}},
		{"nc with a bad port", []string{"nc", "--state", state, "alpha", "ssh"}, 2, []string{`PORT "ssh" is not a port number`, "Usage: weft nc"}},
		{"up with a bad expose", []string{"up", "--state", state, "--expose", "http"}, 1, []string{"weft up: --expose \"http\"", "PORT=LOCALADDR"}},
		{"up with a bad listen", []string{"up", "--state", state, "--listen", "nowhere"}, 1, []string{`weft up: --listen "nowhere"`, "IP:PORT"}},
		{"up with a bad bootstrap", []string{"up", "--state", state, "--bootstrap", "1.2.3.4"}, 1, []string{`weft up: --bootstrap "1.2.3.4"`, "IP:PORT"}},
		{"up with a bad log level", []string{"up", "--state", state, "--log-level", "loud"}, 1, []string{`--log-level "loud"`}},
		{"invite with no uses", []string{"invite", "--state", state, "--uses", "0"}, 1, []string{"--ttl and --uses must be positive"}},
		{"keygen with a bad endpoint", []string{"keygen", "--state", state, "--endpoint", "example.com:1"}, 1, []string{`weft keygen: --endpoint "example.com:1": want IP:PORT`}},
		{"init with anchors and genesis", []string{"init", "--state", state, "--anchors", "weft-anchor1-x", "--genesis", "weft-genesis1-y"}, 1, []string{"give one of them"}},
		{"init threshold without anchors", []string{"init", "--state", state, "--threshold", "2"}, 1, []string{"--threshold needs --anchors"}},
		{"init endpoint with genesis", []string{"init", "--state", state, "--genesis", "weft-genesis1-y", "--endpoint", "1.2.3.4:5"}, 1, []string{"weft keygen --endpoint"}},
		{"init change without genesis", []string{"init", "--state", state, "--change", "weft-change1-x"}, 1, []string{"--change needs --genesis"}},
		{"init with a bad endpoint", []string{"init", "--state", state, "--endpoint", "nowhere"}, 1, []string{`--endpoint "nowhere": want IP:PORT`}},
		{"invite with a bad tag", []string{"invite", "--state", state, "--tags", "ok,Not_A_Tag"}, 1, []string{`weft invite: --tags "Not_A_Tag"`}},
		{"invite cosign without token", []string{"invite", "cosign", "--state", state}, 2, []string{"want exactly one TOKEN", "Usage: weft invite cosign [flags] TOKEN"}},
		{"join with token and genesis", []string{"join", "--state", state, "--genesis", "weft-genesis1-y", "weft1-x"}, 2, []string{"not both", "Usage: weft join"}},
		{"join with a negative wait", []string{"join", "--state", state, "--genesis", "weft-genesis1-y", "--wait", "-1s"}, 1, []string{"--wait must not be negative"}},
		{"join with a bad anchor", []string{"join", "--state", state, "--genesis", "weft-genesis1-y", "--anchor", "1.2.3.4"}, 1, []string{`--anchor "1.2.3.4": want IP:PORT`}},
		{"join with a bad genesis", []string{"join", "--state", state, "--genesis", "hello"}, 1, []string{"weft join: ", "weft-genesis1-"}},
		{"trust unknown subcommand", []string{"trust", "frob", "--state", state}, 2, []string{`unknown subcommand "frob"`, "Subcommands:", "approve HOST"}},
		{"trust help", []string{"trust", "-h"}, 0, []string{"Subcommands:", "cosign TOKEN", "policy"}},
		{"trust status help", []string{"trust", "status", "-h"}, 0, []string{"Usage: weft trust status", "-json"}},
		{"trust approve without host", []string{"trust", "approve", "--state", state}, 2, []string{"want exactly one HOST", "Usage: weft trust approve [flags] HOST"}},
		{"trust reject with two hosts", []string{"trust", "reject", "--state", state, "a", "b"}, 2, []string{"want exactly one HOST", "-why"}},
		{"trust cosign without token", []string{"trust", "cosign", "--state", state}, 2, []string{"want exactly one TOKEN", "Usage: weft trust cosign"}},
		{"trust publish without token", []string{"trust", "publish", "--state", state}, 2, []string{"want exactly one TOKEN", "Usage: weft trust publish"}},
		{"trust change with nothing", []string{"trust", "change", "--state", state}, 2, []string{"at least one of --add, --remove, --threshold"}},
		{"trust change with a bad descriptor", []string{"trust", "change", "--state", state, "--add", "weft1-x"}, 1, []string{"weft trust change: --add", "weft keygen"}},
		{"trust policy without rules", []string{"trust", "policy", "--state", state}, 2, []string{"give at least one --rule", "Usage: weft trust policy"}},
		{"trust policy with a bad rule", []string{"trust", "policy", "--state", state, "--rule", "from=a to=b proto=sctp"}, 1, []string{`weft trust policy: --rule "from=a to=b proto=sctp": proto="sctp"`}},
		{"trust stray argument", []string{"trust", "status", "--state", state, "extra"}, 2, []string{"Usage: weft trust status"}},
		{"revoke without host", []string{"revoke", "--state", state}, 2, []string{"want exactly one node", "Usage: weft revoke [flags] NAME|NODEID|IP"}},
		{"rotate with an argument", []string{"rotate", "--state", state, "now"}, 2, []string{"Usage: weft rotate"}},
		{"help", []string{"help"}, 0, []string{"Usage: weft COMMAND", "Commands:"}},
		{"command help", []string{"status", "-h"}, 0, []string{"Usage: weft status", "-json"}},
	}
}

// TestUsageInProcess checks exit statuses and messages through Run, without
// the binary.
func TestUsageInProcess(t *testing.T) {
	state := filepath.Join(t.TempDir(), "never-created")
	for _, tc := range usageCases(state) {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			code := Run(ctx, tc.args, strings.NewReader(""), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("Run(%q) = %d, want %d\nstderr:\n%s", tc.args, code, tc.code, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("Run(%q): stderr lacks %q:\n%s", tc.args, w, stderr.String())
				}
			}
			if _, err := os.Stat(state); err == nil {
				t.Errorf("Run(%q) created the state directory", tc.args)
			}
		})
	}
}

// TestUsageBinary checks the same through the built binary, as a user sees
// it (exit status included).
func TestUsageBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary; skipped with -short")
	}
	state := filepath.Join(t.TempDir(), "never-created")
	for _, tc := range usageCases(state) {
		t.Run(tc.name, func(t *testing.T) {
			r := runWeft(t, "", tc.args...)
			if r.code != tc.code {
				t.Errorf("want exit %d:\n%v", tc.code, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%v", w, r)
				}
			}
			if _, err := os.Stat(state); err == nil {
				t.Errorf("created the state directory:\n%v", r)
			}
		})
	}
}

// TestNotRunning checks that every command that needs the daemon says how
// to start it.
func TestNotRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary; skipped with -short")
	}
	state := filepath.Join(t.TempDir(), "S")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"status"},
		{"status", "--json"},
		{"peers"},
		{"down"},
		{"nc", "alpha", "22"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runWeft(t, "", append(args, "--state", state)...)
			want := "weft " + args[0] + ": weft is not running for state " + state + ": start it with `weft up --state " + state + "`"
			if r.code != 1 || strings.TrimSpace(r.stderr) != want {
				t.Errorf("want exit 1 and %q:\n%v", want, r)
			}
		})
	}
}

// TestJoinRejections runs two one-anchor networks and checks that bad joins
// are refused with a message that says what is wrong and what to do.
func TestJoinRejections(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary; skipped with -short")
	}
	dir := t.TempDir()
	state := func(name string) string { return filepath.Join(dir, name) }

	mustWeft(t, "init", "--state", state("A"), "--name", "alpha", "--network", "weft")
	mustWeft(t, "init", "--state", state("C"), "--name", "gamma", "--network", "other")
	anchorA := startDaemon(t, "anchor alpha", state("A"), "--listen", loopback(freePort(t, "udp")))
	anchorC := startDaemon(t, "anchor gamma", state("C"), "--listen", loopback(freePort(t, "udp")))

	// The expired invite first, so that its second runs out while the
	// other cases run.
	expiring := strings.TrimSpace(mustWeft(t, "invite", "--state", state("A"), "--ttl", "1s").stdout)
	expires := time.Now().Add(time.Second)

	tok := strings.TrimSpace(mustWeft(t, "invite", "--state", state("A")).stdout)
	mustWeft(t, "join", "--state", state("B"), "--name", "beta", tok)

	t.Run("other network", func(t *testing.T) {
		other := strings.TrimSpace(mustWeft(t, "invite", "--state", state("C")).stdout)
		for _, s := range []string{"B", "A"} { // a member and an anchor of "weft"
			before := readState(t, state(s))
			r := runWeft(t, "", "join", "--state", state(s), "--name", "intruder", other)
			for _, w := range []string{`already belongs to network "weft"`, `this invite is for "other"`, "use another --state directory"} {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("join %s with another network's invite: stderr lacks %q:\n%v", s, w, r)
				}
			}
			if r.code != 1 {
				t.Errorf("join %s with another network's invite: want exit 1:\n%v", s, r)
			}
			if after := readState(t, state(s)); !reflect.DeepEqual(before, after) {
				t.Errorf("the refused join changed state %s", s)
			}
		}
	})

	t.Run("use limit", func(t *testing.T) {
		once := strings.TrimSpace(mustWeft(t, "invite", "--state", state("A"), "--uses", "1").stdout)
		mustWeft(t, "join", "--state", state("D"), "--name", "delta", once)
		r := runWeft(t, "", "join", "--state", state("E"), "--name", "epsilon", once)
		if r.code != 1 {
			t.Errorf("second join with a one-use invite: want exit 1:\n%v", r)
		}
		for _, w := range []string{"already been used by 1 node", "limit", "weft invite", "--uses"} {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("second join with a one-use invite: stderr lacks %q:\n%v", w, r)
			}
		}
		// A fresh invite still works for the refused node.
		fresh := strings.TrimSpace(mustWeft(t, "invite", "--state", state("A")).stdout)
		mustWeft(t, "join", "--state", state("E"), "--name", "epsilon", fresh)
	})

	t.Run("garbled", func(t *testing.T) {
		for _, tc := range []struct{ name, token, want string }{
			{"not a token", "hello", `a weft invite token starts with "weft1-"`},
			{"empty", "", `join needs an invite token`},
			{"prefix only", "weft1-", "malformed invite"},
			{"bad base64", "weft1-!!!!", "malformed invite"},
			{"truncated", tok[:len(tok)/2], "malformed invite"},
			{"trailing garbage", tok + "AAAA", "malformed invite"},
			{"wrong version", "weft9" + tok[5:], `a weft invite token starts with "weft1-"`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := state("garbled-" + strings.ReplaceAll(tc.name, " ", "-"))
				r := runWeft(t, "", "join", "--state", s, tc.token)
				if r.code != 1 || !strings.HasPrefix(r.stderr, "weft join: ") || !strings.Contains(r.stderr, tc.want) {
					t.Errorf("want exit 1 and %q:\n%v", tc.want, r)
				}
				if !strings.Contains(r.stderr, "weft invite") {
					t.Errorf("the message does not say where a good token comes from:\n%v", r)
				}
				if _, err := os.Stat(s); err == nil {
					t.Errorf("a malformed token created state %s", s)
				}
			})
		}
	})

	t.Run("tampered", func(t *testing.T) {
		// Change one character at a time throughout the token (in process,
		// for speed): every variant is refused with a one-line message.
		// A panic here fails the whole test binary.
		if len(tok) < 100 {
			t.Fatalf("token too short: %q", tok)
		}
		for i := len("weft1-"); i < len(tok); i += 7 {
			c := byte('A')
			if tok[i] == 'A' {
				c = 'B'
			}
			bad := tok[:i] + string(c) + tok[i+1:]
			s := state("tampered")
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			code := Run(ctx, []string{"join", "--state", s, "--name", "mallory", bad}, strings.NewReader(""), &stdout, &stderr)
			cancel()
			msg := stderr.String()
			if code != 1 || !strings.HasPrefix(msg, "weft join: ") || strings.Count(msg, "\n") != 1 {
				t.Errorf("token altered at %d: want exit 1 and a one-line message, got %d:\n%s%s", i, code, msg, stdout.String())
			}
			os.RemoveAll(s)
		}
	})

	t.Run("expired", func(t *testing.T) {
		time.Sleep(time.Until(expires.Add(1100 * time.Millisecond)))
		r := runWeft(t, "", "join", "--state", state("F"), "--name", "late", expiring)
		if r.code != 1 {
			t.Errorf("join with an expired invite: want exit 1:\n%v", r)
		}
		for _, w := range []string{"invite expired at", "ask an anchor for a new one with `weft invite`"} {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("join with an expired invite: stderr lacks %q:\n%v", w, r)
			}
		}
	})

	t.Run("already joined", func(t *testing.T) {
		fresh := strings.TrimSpace(mustWeft(t, "invite", "--state", state("A")).stdout)
		r := runWeft(t, "", "join", "--state", state("B"), "--name", "beta", fresh)
		if r.code != 1 || !strings.Contains(r.stderr, `is already a member of "weft"`) || !strings.Contains(r.stderr, "weft up") {
			t.Errorf("joining twice: want exit 1 and \"already a member\":\n%v", r)
		}
	})

	stopDaemon(t, anchorA, state("A"))
	stopDaemon(t, anchorC, state("C"))
}

// readState returns the files of a state directory, for checking that a
// refused command left it alone.
func readState(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == socketName || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}
