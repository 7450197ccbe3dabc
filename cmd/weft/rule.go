package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/trust"
)

// The --rule syntax of `weft trust policy`: space-separated KEY=VALUE
// fields, each at most once, in any order.
//
//	from=TAGS    source tags, comma-separated, or * (any member); required
//	to=TAGS      destination tags, likewise; required
//	proto=P      tcp, udp, icmp or * (default *)
//	ports=LIST   destination ports and ranges, e.g. 22,80-89 (default: all;
//	             not with icmp)
//
// Example: from=ops to=db proto=tcp ports=22,5432.

// parseRule parses one --rule value.
func parseRule(s string) (trust.Rule, error) {
	var r trust.Rule
	seen := map[string]bool{}
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return r, fmt.Errorf("empty rule: want e.g. 'from=ops to=db proto=tcp ports=22,5432'")
	}
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return r, fmt.Errorf("%q is not KEY=VALUE (keys: from, to, proto, ports)", f)
		}
		if seen[k] {
			return r, fmt.Errorf("%s= given twice", k)
		}
		seen[k] = true
		var err error
		switch k {
		case "from":
			r.From, err = parseTagList(k, v)
		case "to":
			r.To, err = parseTagList(k, v)
		case "proto":
			switch v {
			case "tcp", "udp", "icmp", trust.Any:
				r.Proto = v
			default:
				err = fmt.Errorf("proto=%q: use tcp, udp, icmp or *", v)
			}
		case "ports":
			r.Ports, err = parsePorts(v)
		default:
			err = fmt.Errorf("unknown key %q (keys: from, to, proto, ports)", k)
		}
		if err != nil {
			return trust.Rule{}, err
		}
	}
	if r.From == nil || r.To == nil {
		return trust.Rule{}, fmt.Errorf("a rule needs from=TAGS and to=TAGS (* for any member)")
	}
	if r.Proto == "" {
		r.Proto = trust.Any
	}
	if r.Proto == "icmp" && len(r.Ports) > 0 {
		return trust.Rule{}, fmt.Errorf("proto=icmp has no ports: drop ports=")
	}
	// The trust package has the last word (limits, tag syntax).
	if _, err := trust.NewPolicy(addr.NetworkID{}, 1, []trust.Rule{r}, time.Unix(0, 0)); err != nil {
		return trust.Rule{}, err
	}
	return r, nil
}

// parseRules parses --rule values, naming the one that is wrong.
func parseRules(list []string) ([]trust.Rule, error) {
	if len(list) > trust.MaxRules {
		return nil, fmt.Errorf("%d rules, at most %d allowed", len(list), trust.MaxRules)
	}
	rules := make([]trust.Rule, 0, len(list))
	for _, s := range list {
		r, err := parseRule(s)
		if err != nil {
			return nil, fmt.Errorf("--rule %q: %w", s, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func parseTagList(key, v string) ([]string, error) {
	if v == "" {
		return nil, fmt.Errorf("%s= is empty: give tags, or * for any member", key)
	}
	tags := strings.Split(v, ",")
	if len(tags) > trust.MaxTags {
		return nil, fmt.Errorf("%s= has %d tags, at most %d allowed", key, len(tags), trust.MaxTags)
	}
	for _, t := range tags {
		if t == trust.Any {
			continue
		}
		if err := checkTag(t); err != nil {
			return nil, fmt.Errorf("%s= tag %q: %w", key, t, err)
		}
	}
	return tags, nil
}

// checkTag validates one tag: a DNS label, like a node name.
func checkTag(t string) error {
	if t == "" {
		return fmt.Errorf("empty tag")
	}
	return addr.CheckName(t)
}

func parsePorts(v string) ([]trust.PortRange, error) {
	if v == "" {
		return nil, fmt.Errorf("ports= is empty: give e.g. 22,80-89, or leave ports= out for every port")
	}
	var out []trust.PortRange
	for _, p := range strings.Split(v, ",") {
		lo, hi, isRange := strings.Cut(p, "-")
		l, err := parsePort(lo)
		if err != nil {
			return nil, fmt.Errorf("ports=%s: %q: %w", v, p, err)
		}
		h := l
		if isRange {
			if h, err = parsePort(hi); err != nil {
				return nil, fmt.Errorf("ports=%s: %q: %w", v, p, err)
			}
			if h < l {
				return nil, fmt.Errorf("ports=%s: range %q runs backwards", v, p)
			}
		}
		out = append(out, trust.PortRange{Lo: l, Hi: h})
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("want a port 1-65535")
	}
	return uint16(n), nil
}

// formatRule writes r in the --rule syntax; parseRule(formatRule(r))
// gives r back.
func formatRule(r trust.Rule) string {
	var b strings.Builder
	b.WriteString("from=" + strings.Join(r.From, ","))
	b.WriteString(" to=" + strings.Join(r.To, ","))
	b.WriteString(" proto=" + r.Proto)
	for i, pr := range r.Ports {
		if i == 0 {
			b.WriteString(" ports=")
		} else {
			b.WriteString(",")
		}
		b.WriteString(strconv.Itoa(int(pr.Lo)))
		if pr.Hi != pr.Lo {
			b.WriteString("-" + strconv.Itoa(int(pr.Hi)))
		}
	}
	return b.String()
}
