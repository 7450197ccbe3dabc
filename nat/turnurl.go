package nat

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pion/stun/v4"
)

// TURNURL is a TURN server and the credential to allocate on it: an
// external server such as coturn (ParseTURNURL), or a weft relay
// (RelayCreds.TURN).
type TURNURL struct {
	// Host is an IP address or a DNS name (lower case, without brackets).
	Host string

	// Port is the server's port.
	Port uint16

	// Transport is "udp" or "tcp": how the client reaches the server. The
	// relayed side is UDP either way.
	Transport string

	// Username and Password are the long-term credential.
	Username, Password string

	// Addr is Host:Port when Host is an IP address; the zero value when
	// it is a name, which the caller resolves.
	Addr netip.AddrPort
}

// Limits of ParseTURNURL.
const (
	maxTURNURLSize  = 2048
	maxTURNUserSize = 513 // STUN USERNAME (RFC 8489 section 14.3)
	maxTURNPassSize = 513
)

// ParseTURNURL parses the configuration of an external TURN server:
//
//	turn:HOST[:PORT][?transport=udp|tcp&user=USER&pass=PASSWORD]
//
// as in RFC 7065, with the credential in the query (percent-encoded, as
// url.QueryEscape does). HOST is an IPv4 address, an IPv6 address in
// brackets or a DNS name; PORT defaults to 3478 and transport to udp. The
// credential is required. turns: (TURN over TLS or DTLS) is not supported.
// Errors wrap ErrBadTURNURL and never repeat the query, which holds the
// password.
func ParseTURNURL(s string) (TURNURL, error) {
	fail := func(format string, args ...any) (TURNURL, error) {
		// Never show the credential: not the query, nor user:pass@.
		shown, _, hasQuery := strings.Cut(s, "?")
		if i := strings.LastIndexByte(shown, '@'); i >= 0 {
			scheme, _, _ := strings.Cut(shown, ":")
			shown = scheme + ":...@" + shown[i+1:]
		}
		if hasQuery {
			shown += "?..."
		}
		if len(shown) > 100 {
			shown = shown[:100] + "..."
		}
		return TURNURL{}, fmt.Errorf("%w %q: %s", ErrBadTURNURL, shown, fmt.Sprintf(format, args...))
	}
	const want = "want turn:HOST[:PORT][?transport=udp|tcp&user=USER&pass=PASSWORD]"
	if len(s) > maxTURNURLSize {
		return fail("longer than %d bytes", maxTURNURLSize)
	}
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok {
		return fail("no scheme; %s", want)
	}
	switch strings.ToLower(scheme) {
	case "turn":
	case "turns":
		return fail("turns: (TURN over TLS or DTLS) is not supported; use turn:HOST:PORT?transport=udp (or transport=tcp)")
	case "stun", "stuns":
		return fail("this is a STUN server; configure it as a STUN server, not a TURN server")
	default:
		return fail("unknown scheme %q; %s", scheme, want)
	}
	if strings.HasPrefix(rest, "//") {
		return fail("write turn:HOST:PORT, without //")
	}
	if strings.ContainsRune(rest, '#') {
		return fail("unexpected fragment (#)")
	}
	hostport, query, _ := strings.Cut(rest, "?")
	if strings.ContainsRune(hostport, '@') {
		return fail("the credential goes in the query: turn:HOST:PORT?user=USER&pass=PASSWORD")
	}
	if strings.ContainsAny(hostport, "/\\%") {
		return fail("unexpected characters in HOST:PORT; %s", want)
	}

	var u TURNURL
	var host, port string
	bracketed := strings.HasPrefix(hostport, "[")
	switch {
	case bracketed:
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return fail("unclosed [")
		}
		host = hostport[1:end]
		after := hostport[end+1:]
		if after != "" {
			if after[0] != ':' {
				return fail("unexpected %q after ]", after)
			}
			port = after[1:]
			if port == "" {
				return fail("empty port")
			}
		}
	case strings.Count(hostport, ":") > 1:
		return fail("IPv6 addresses need brackets: turn:[ADDRESS]:PORT")
	default:
		var hasPort bool
		host, port, hasPort = strings.Cut(hostport, ":")
		if hasPort && port == "" {
			return fail("empty port")
		}
	}
	if host == "" {
		return fail("no host; %s", want)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return fail("zoned IPv6 addresses are not supported")
		}
		if ip.Is6() != bracketed {
			return fail("IPv6 addresses need brackets: turn:[ADDRESS]:PORT")
		}
		u.Host = ip.Unmap().String()
	} else if bracketed {
		return fail("%q in brackets is not an IPv6 address", host)
	} else if !validDNSName(host) {
		return fail("host %q is neither an IP address nor a DNS name", host)
	} else {
		u.Host = strings.ToLower(host)
	}
	u.Port = DefaultRelayPort
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || strings.TrimLeft(port, "0123456789") != "" {
			return fail("port %q: want a number from 1 to 65535", port)
		}
		u.Port = uint16(n)
	}

	q, err := url.ParseQuery(query)
	if err != nil {
		return fail("malformed query (percent-encode the credential, e.g. with url.QueryEscape)")
	}
	u.Transport = "udp"
	for k, vs := range q {
		switch k {
		case "transport", "user", "pass":
		default:
			return fail("unknown parameter %q (known: transport, user, pass)", k)
		}
		if len(vs) != 1 {
			return fail("parameter %s given %d times", k, len(vs))
		}
	}
	if t, ok := q["transport"]; ok {
		switch strings.ToLower(t[0]) {
		case "udp", "tcp":
			u.Transport = strings.ToLower(t[0])
		default:
			return fail("transport %q: want udp or tcp", t[0])
		}
	}
	u.Username, u.Password = q.Get("user"), q.Get("pass")
	if u.Username == "" || u.Password == "" {
		return fail("no credential: add ?user=USER&pass=PASSWORD (weft relays hand out their own; this is for external TURN servers)")
	}
	if len(u.Username) > maxTURNUserSize || !utf8.ValidString(u.Username) {
		return fail("user must be UTF-8 of at most %d bytes", maxTURNUserSize)
	}
	if len(u.Password) > maxTURNPassSize || !utf8.ValidString(u.Password) {
		return fail("pass must be UTF-8 of at most %d bytes", maxTURNPassSize)
	}
	if ip, err := netip.ParseAddr(u.Host); err == nil {
		u.Addr = netip.AddrPortFrom(ip, u.Port)
	}
	return u, nil
}

// validDNSName reports whether s is a plausible DNS host name: labels of
// letters, digits and inner hyphens, and not all-numeric at the end (that
// would be a malformed IPv4 address).
func validDNSName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return strings.TrimLeft(labels[len(labels)-1], "0123456789") != ""
}

// URL returns the canonical URL without the credential:
// "turn:HOST:PORT?transport=udp".
func (u TURNURL) URL() string {
	host := u.Host
	if strings.ContainsRune(host, ':') {
		host = "[" + host + "]"
	}
	return "turn:" + host + ":" + strconv.Itoa(int(u.Port)) + "?transport=" + u.Transport
}

// withCredential returns the canonical URL with the credential, which
// ParseTURNURL parses back to u.
func (u TURNURL) withCredential() string {
	return u.URL() + "&user=" + url.QueryEscape(u.Username) + "&pass=" + url.QueryEscape(u.Password)
}

// String returns the URL and user name, never the password.
func (u TURNURL) String() string {
	return u.URL() + "&user=" + url.QueryEscape(u.Username) + "&pass=REDACTED"
}

// URI returns u in the form pion/ice's AgentConfig.Urls takes.
func (u TURNURL) URI() *stun.URI {
	return &stun.URI{
		Scheme:   stun.SchemeTypeTURN,
		Host:     u.Host,
		Port:     int(u.Port),
		Username: u.Username,
		Password: u.Password,
		Proto:    stun.NewProtoType(u.Transport),
	}
}
