package netstack

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// SOCKS5Server is a SOCKS5 proxy (RFC 1928) that serves CONNECT with no
// authentication and dials through Dial. Domain-name requests are passed to
// Dial unresolved, so `curl --socks5-hostname` reaches overlay names. Bind it
// to loopback: it has no authentication.
//
// The zero value is not usable: Dial must be set. Serve may be called
// several times (one per listener); Close stops all of them.
type SOCKS5Server struct {
	// Dial connects to the requested "host:port". Required.
	Dial DialFunc

	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger

	// DialTimeout bounds each dial. Zero means 30 seconds.
	DialTimeout time.Duration

	srv connServer
}

// Serve accepts SOCKS5 clients on l until l fails or Close is called, and
// then returns ErrProxyClosed (after Close) or the accept error. Serve
// closes l when it returns because of Close.
func (p *SOCKS5Server) Serve(l net.Listener) error {
	if p.Dial == nil {
		return errors.New("socks5 serve: SOCKS5Server.Dial must be set")
	}
	log := logger(p.Logger, "socks5")
	return p.srv.serve(l, log, func(ctx context.Context, c net.Conn) {
		p.handle(ctx, log, c)
	})
}

// Close stops every Serve, closes all client and upstream connections and
// returns once all of the server's goroutines have exited. It is
// idempotent and returns nil.
func (p *SOCKS5Server) Close() error { return p.srv.close() }

func (p *SOCKS5Server) handle(ctx context.Context, log *slog.Logger, c net.Conn) {
	log = log.With("client", c.RemoteAddr().String())
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	noAuth, err := readSOCKSGreeting(c)
	if err != nil {
		log.Debug("bad greeting", "err", err)
		return
	}
	if !noAuth {
		c.Write([]byte{socksVersion, socksMethodNoAcceptable})
		log.Debug("rejected client", "err", ErrSOCKSNoMethod)
		return
	}
	if _, err := c.Write([]byte{socksVersion, socksMethodNoAuth}); err != nil {
		return
	}
	req, code, err := readSOCKSRequest(c)
	if err != nil {
		if code != 0 {
			c.Write(socksReply(code, netip.AddrPort{}))
		}
		log.Debug("bad request", "err", err)
		return
	}
	c.SetDeadline(time.Time{})

	timeout := p.DialTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	up, err := p.Dial(dctx, "tcp", req.Address())
	cancel()
	if err != nil {
		code := socksReplyCode(err)
		log.Debug("dial failed", "target", req.Address(), "code", code, "err", err)
		c.Write(socksReply(code, netip.AddrPort{}))
		return
	}
	if !p.srv.trackConn(up) {
		up.Close()
		return
	}
	defer p.srv.untrack(up)
	if _, err := c.Write(socksReply(socksSucceeded, addrPortOf(up.LocalAddr()))); err != nil {
		return
	}
	log.Debug("connected", "target", req.Address())
	relay(c, up)
}

// addrPortOf extracts an address from a net.Addr, or the zero value.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// logger returns l (or a discarding logger) tagged with component.
func logger(l *slog.Logger, component string) *slog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l.With("component", component)
}

var _ io.Closer = (*SOCKS5Server)(nil)
