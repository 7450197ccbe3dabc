package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/weft-net/weft/trust"
)

func TestParseRule(t *testing.T) {
	pr := func(lo, hi uint16) trust.PortRange { return trust.PortRange{Lo: lo, Hi: hi} }
	for _, tc := range []struct {
		name    string
		in      string
		want    trust.Rule
		wantErr string // substring; "" means no error
	}{
		{name: "full", in: "from=web,ops to=db proto=tcp ports=22,80-89",
			want: trust.Rule{From: []string{"web", "ops"}, To: []string{"db"}, Proto: "tcp", Ports: []trust.PortRange{pr(22, 22), pr(80, 89)}}},
		{name: "any to any", in: "from=* to=*", want: trust.Rule{From: []string{"*"}, To: []string{"*"}, Proto: "*"}},
		{name: "any order, extra spaces", in: "  ports=443   proto=udp to=* from=edge ",
			want: trust.Rule{From: []string{"edge"}, To: []string{"*"}, Proto: "udp", Ports: []trust.PortRange{pr(443, 443)}}},
		{name: "icmp", in: "from=ops to=* proto=icmp", want: trust.Rule{From: []string{"ops"}, To: []string{"*"}, Proto: "icmp"}},
		{name: "ports without proto", in: "from=a to=b ports=1-65535",
			want: trust.Rule{From: []string{"a"}, To: []string{"b"}, Proto: "*", Ports: []trust.PortRange{pr(1, 65535)}}},
		{name: "empty", in: "", wantErr: "empty rule"},
		{name: "blank", in: "   ", wantErr: "empty rule"},
		{name: "no from", in: "to=db", wantErr: "needs from=TAGS and to=TAGS"},
		{name: "no to", in: "from=db proto=tcp", wantErr: "needs from=TAGS and to=TAGS"},
		{name: "not key=value", in: "from=a to=b tcp", wantErr: `"tcp" is not KEY=VALUE`},
		{name: "unknown key", in: "from=a to=b port=22", wantErr: `unknown key "port"`},
		{name: "twice", in: "from=a from=b to=c", wantErr: "from= given twice"},
		{name: "empty tags", in: "from= to=b", wantErr: "from= is empty"},
		{name: "empty tag in list", in: "from=a,,b to=c", wantErr: "empty tag"},
		{name: "bad tag", in: "from=a to=Not_A_Label", wantErr: `to= tag "Not_A_Label"`},
		{name: "bad proto", in: "from=a to=b proto=sctp", wantErr: `proto="sctp"`},
		{name: "icmp with ports", in: "from=a to=b proto=icmp ports=1", wantErr: "icmp has no ports"},
		{name: "port zero", in: "from=a to=b ports=0", wantErr: "want a port 1-65535"},
		{name: "port too big", in: "from=a to=b ports=65536", wantErr: "want a port 1-65535"},
		{name: "port garbage", in: "from=a to=b ports=ssh", wantErr: "want a port 1-65535"},
		{name: "negative port", in: "from=a to=b ports=-5", wantErr: "want a port 1-65535"},
		{name: "backwards range", in: "from=a to=b ports=90-80", wantErr: "runs backwards"},
		{name: "open range", in: "from=a to=b ports=80-", wantErr: "want a port 1-65535"},
		{name: "empty ports", in: "from=a to=b ports=", wantErr: "ports= is empty"},
		{name: "trailing comma", in: "from=a to=b ports=22,", wantErr: "want a port 1-65535"},
		{name: "too many tags", in: "from=" + strings.Repeat("a,", trust.MaxTags) + "a to=b", wantErr: "at most 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRule(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseRule(%q) = %+v, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("parseRule(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			if back, err := parseRule(formatRule(got)); err != nil || !reflect.DeepEqual(back, got) {
				t.Errorf("round trip through %q: %+v, %v", formatRule(got), back, err)
			}
		})
	}
}

func TestParseRules(t *testing.T) {
	rules, err := parseRules([]string{"from=* to=web proto=tcp ports=80", "from=ops to=* proto=icmp"})
	if err != nil || len(rules) != 2 {
		t.Fatalf("parseRules: %v, %v", rules, err)
	}
	_, err = parseRules([]string{"from=* to=*", "from=x"})
	if err == nil || !strings.Contains(err.Error(), `--rule "from=x"`) {
		t.Errorf("parseRules with a bad second rule: %v; want the rule named", err)
	}
}

var testEpoch = time.Unix(0, 0)

// FuzzParseRule checks that the parser never panics, that whatever it
// accepts the trust package accepts too, and that formatRule round-trips.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{
		"from=web,ops to=db proto=tcp ports=22,80-89", "from=* to=*", "from=a to=b proto=icmp",
		"ports=1-65535 to=x from=y proto=udp", "from=a from=b", "from=a to=b ports=0-", "=", "from==",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRule(s)
		if err != nil {
			return
		}
		if _, err := trust.NewPolicy([32]byte{}, 1, []trust.Rule{r}, testEpoch); err != nil {
			t.Fatalf("parseRule(%q) accepted a rule trust refuses: %v", s, err)
		}
		back, err := parseRule(formatRule(r))
		if err != nil || !reflect.DeepEqual(back, r) {
			t.Fatalf("parseRule(%q) = %+v; formatRule = %q parses to %+v, %v", s, r, formatRule(r), back, err)
		}
	})
}
