package trust

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weft-net/weft/addr"
)

// Policy is the network's quorum-signed allow list. Without a policy every
// member may reach every member on every port. With one, traffic is
// allowed only if some Rule matches (default deny); the tunnel enforces it
// on the receive path. A policy is valid with endorsements from at least
// the threshold of current anchors, and the highest Seq wins.
type Policy struct {
	// Network is the network's ID.
	Network addr.NetworkID
	// Seq orders policies; a policy replaces the one held only with a
	// higher Seq. At least 1.
	Seq uint64
	// Rules are the allow rules, at most MaxRules.
	Rules []Rule
	// Created is when the policy was proposed.
	Created time.Time
	// Endorsements are anchor signatures over the fields above.
	Endorsements []Endorsement
}

// Rule allows traffic from members carrying one of the From tags to
// members carrying one of the To tags, for Proto and Ports.
type Rule struct {
	// From are source tags; "*" means any member. At least one, at most
	// MaxTags.
	From []string
	// To are destination tags; "*" means any member. At least one, at most
	// MaxTags.
	To []string
	// Proto is "tcp", "udp", "icmp" or "*".
	Proto string
	// Ports are destination port ranges; empty means every port. Must be
	// empty for "icmp". At most MaxTags ranges.
	Ports []PortRange
}

// PortRange is an inclusive range of ports, Lo <= Hi.
type PortRange struct{ Lo, Hi uint16 }

// PolicyPrefix starts every encoded policy.
const PolicyPrefix = "weft-policy1-"

// Any matches every member in Rule.From and Rule.To, and every protocol
// in Rule.Proto.
const Any = "*"

// NewPolicy proposes rules as policy seq for network. It carries no
// endorsement yet.
func NewPolicy(network addr.NetworkID, seq uint64, rules []Rule, created time.Time) (*Policy, error) {
	p := &Policy{Network: network, Seq: seq, Rules: slices.Clone(rules), Created: created.UTC().Truncate(time.Second)}
	if err := p.checkContent(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Policy) checkContent() error {
	if p.Seq == 0 {
		return reject(ReasonInvalid, "policy has seq 0; policies start at seq 1")
	}
	if len(p.Rules) > MaxRules {
		return reject(ReasonInvalid, "policy %d has %d rules, at most %d allowed", p.Seq, len(p.Rules), MaxRules)
	}
	for i := range p.Rules {
		if err := p.Rules[i].check(); err != nil {
			return reject(ReasonInvalid, "policy %d rule %d: %v", p.Seq, i+1, err)
		}
	}
	return nil
}

func (r *Rule) check() error {
	for _, side := range []struct {
		name string
		tags []string
	}{{"from", r.From}, {"to", r.To}} {
		if len(side.tags) == 0 || len(side.tags) > MaxTags {
			return fmt.Errorf("%s needs 1 to %d tags (or %q)", side.name, MaxTags, Any)
		}
		for _, t := range side.tags {
			if t == Any {
				continue
			}
			if err := addr.CheckName(t); err != nil {
				return fmt.Errorf("%s tag: %v", side.name, err)
			}
		}
	}
	switch r.Proto {
	case "tcp", "udp", Any:
	case "icmp":
		if len(r.Ports) > 0 {
			return fmt.Errorf("icmp has no ports")
		}
	default:
		return fmt.Errorf("protocol %q unknown; use tcp, udp, icmp or %q", r.Proto, Any)
	}
	if len(r.Ports) > MaxTags {
		return fmt.Errorf("%d port ranges, at most %d allowed", len(r.Ports), MaxTags)
	}
	for _, pr := range r.Ports {
		if pr.Lo > pr.Hi || pr.Lo == 0 {
			return fmt.Errorf("port range %d-%d is empty or includes port 0", pr.Lo, pr.Hi)
		}
	}
	return nil
}

// Allows reports whether a packet from a member tagged fromTags to a
// member tagged toTags, protocol proto ("tcp", "udp", "icmp") and
// destination port (ignored for icmp) is allowed. A nil policy allows
// everything; otherwise the default is deny.
func (p *Policy) Allows(fromTags, toTags []string, proto string, port uint16) bool {
	if p == nil {
		return true
	}
	for i := range p.Rules {
		if p.Rules[i].matches(fromTags, toTags, proto, port) {
			return true
		}
	}
	return false
}

func (r *Rule) matches(fromTags, toTags []string, proto string, port uint16) bool {
	if !matchTags(r.From, fromTags) || !matchTags(r.To, toTags) {
		return false
	}
	if r.Proto != Any && r.Proto != proto {
		return false
	}
	if len(r.Ports) == 0 || proto == "icmp" {
		return true
	}
	for _, pr := range r.Ports {
		if port >= pr.Lo && port <= pr.Hi {
			return true
		}
	}
	return false
}

func matchTags(want, have []string) bool {
	for _, w := range want {
		if w == Any || slices.Contains(have, w) {
			return true
		}
	}
	return false
}

// String formats r as "web,ops -> db tcp/5432,8000-8080".
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString(strings.Join(r.From, ","))
	b.WriteString(" -> ")
	b.WriteString(strings.Join(r.To, ","))
	b.WriteString(" ")
	b.WriteString(r.Proto)
	if len(r.Ports) > 0 {
		b.WriteString("/")
		for i, pr := range r.Ports {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(strconv.Itoa(int(pr.Lo)))
			if pr.Hi != pr.Lo {
				b.WriteString("-" + strconv.Itoa(int(pr.Hi)))
			}
		}
	}
	return b.String()
}

// String summarises p in one line for logs.
func (p *Policy) String() string {
	if p == nil {
		return "no policy (every member may reach every member)"
	}
	return fmt.Sprintf("policy seq %d: %d rule(s), default deny", p.Seq, len(p.Rules))
}

// Describe returns a multi-line description for `weft status`.
func (p *Policy) Describe() string {
	if p == nil {
		return "policy: none — every member may reach every member on every port\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "policy: seq %d, created %s, %d anchor endorsement(s), default deny\n", p.Seq, fmtTime(p.Created), len(p.Endorsements))
	if len(p.Rules) == 0 {
		b.WriteString("  (no rules: all traffic between members is denied)\n")
	}
	for i, r := range p.Rules {
		fmt.Fprintf(&b, "  %2d  allow %s\n", i+1, r.String())
	}
	return b.String()
}

func (p *Policy) encodeBody(e *encoder) {
	e.u8(tagPolicy)
	e.u8(wireVersion)
	e.raw(p.Network[:])
	e.u64(p.Seq)
	e.uvarint(uint64(len(p.Rules)))
	for _, r := range p.Rules {
		e.strs(r.From)
		e.strs(r.To)
		e.str(r.Proto)
		e.uvarint(uint64(len(r.Ports)))
		for _, pr := range r.Ports {
			e.u16(pr.Lo)
			e.u16(pr.Hi)
		}
	}
	e.time(p.Created)
}

func (p *Policy) message() []byte {
	var e encoder
	p.encodeBody(&e)
	return signedMessage(ctxPolicy, e.b)
}

// Endorse adds (or replaces) the endorsement of the anchor holding key.
func (p *Policy) Endorse(key ed25519.PrivateKey) error {
	var err error
	p.Endorsements, err = addEndorsement(p.Endorsements, key, p.message())
	return err
}

func (p *Policy) verifyAt(set *AnchorSet, revoked func(addr.NodeID) bool) error {
	if p.Network != set.Network {
		return reject(ReasonWrongNetwork, "policy %d is for network %s, not %s; ignore it", p.Seq, p.Network.Short(), set.Genesis.describe())
	}
	if err := p.checkContent(); err != nil {
		return err
	}
	return verifyEndorsements(set, revoked, p.Endorsements, p.message(), fmt.Sprintf("policy %d", p.Seq),
		"ignore it; a policy needs the threshold of current anchors (`weft trust policy cosign`)")
}

// Marshal returns the canonical encoding of p.
func (p *Policy) Marshal() []byte {
	var e encoder
	p.encodeBody(&e)
	encodeEndorsements(&e, p.Endorsements)
	return e.b
}

// UnmarshalPolicy decodes a policy (structure only; View.SetPolicy
// verifies).
func UnmarshalPolicy(b []byte) (*Policy, error) {
	if len(b) > maxStmt {
		return nil, reject(ReasonMalformed, "malformed policy: %d bytes exceeds limit %d", len(b), maxStmt)
	}
	d := decoder{b: b}
	p := new(Policy)
	d.header(tagPolicy, "policy")
	copy(p.Network[:], d.take(32))
	p.Seq = d.u64()
	n := d.length("rules", MaxRules)
	for i := 0; i < n && d.err == nil; i++ {
		var r Rule
		r.From = d.strs("from tags", MaxTags)
		r.To = d.strs("to tags", MaxTags)
		r.Proto = d.str("protocol", maxString)
		m := d.length("port ranges", MaxTags)
		for j := 0; j < m && d.err == nil; j++ {
			r.Ports = append(r.Ports, PortRange{Lo: d.u16(), Hi: d.u16()})
		}
		p.Rules = append(p.Rules, r)
	}
	p.Created = d.time()
	p.Endorsements = decodeEndorsements(&d)
	if err := d.finish("policy"); err != nil {
		return nil, err
	}
	return p, nil
}

// Encode returns p as one line: "weft-policy1-" + base64url.
func (p *Policy) Encode() string { return encodeToken(PolicyPrefix, p.Marshal()) }

// ParsePolicy decodes a token made by Policy.Encode (structure only).
func ParsePolicy(s string) (*Policy, error) {
	b, err := decodeToken(s, PolicyPrefix, "policy", "`weft trust policy`", maxStmt)
	if err != nil {
		return nil, err
	}
	return UnmarshalPolicy(b)
}
