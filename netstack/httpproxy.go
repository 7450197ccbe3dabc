package netstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// httpIdleTimeout is how long a proxy client connection may sit idle
// between requests.
const httpIdleTimeout = 2 * time.Minute

// HTTPProxy is an HTTP proxy that dials through Dial. It tunnels CONNECT
// requests (https:// URLs, or any TCP) and forwards plain requests with an
// absolute http:// URI, so `curl -x http://ADDR` works for both. Bind it to
// loopback: it has no authentication.
//
// Every client connection is served by one goroutine that reads requests
// with net/http's parser and forwards them over one upstream connection at
// a time; no http.Transport pool or hidden goroutines are involved, so Close
// can wait for everything.
//
// The zero value is not usable: Dial must be set.
type HTTPProxy struct {
	// Dial connects to the target "host:port". Required.
	Dial DialFunc

	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger

	// DialTimeout bounds each dial. Zero means 30 seconds.
	DialTimeout time.Duration

	srv connServer
}

// Serve accepts proxy clients on l until l fails or Close is called, and
// then returns ErrProxyClosed (after Close) or the accept error.
func (p *HTTPProxy) Serve(l net.Listener) error {
	if p.Dial == nil {
		return errors.New("http proxy serve: HTTPProxy.Dial must be set")
	}
	log := logger(p.Logger, "httpproxy")
	return p.srv.serve(l, log, func(ctx context.Context, c net.Conn) {
		p.handle(ctx, log, c)
	})
}

// Close stops every Serve, closes all client and upstream connections and
// returns once all of the proxy's goroutines have exited. It is idempotent
// and returns nil.
func (p *HTTPProxy) Close() error { return p.srv.close() }

// upstream is the current forwarding connection of one client connection.
type upstream struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
}

func (p *HTTPProxy) handle(ctx context.Context, log *slog.Logger, c net.Conn) {
	log = log.With("client", c.RemoteAddr().String())
	br := bufio.NewReader(c)
	var up upstream
	defer func() {
		if up.conn != nil {
			p.srv.untrack(up.conn)
		}
	}()
	for {
		c.SetReadDeadline(time.Now().Add(httpIdleTimeout))
		req, err := http.ReadRequest(br)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				log.Debug("bad request", "err", err)
				writeHTTPError(c, http.StatusBadRequest, "malformed request")
			}
			return
		}
		c.SetReadDeadline(time.Time{})
		target, err := proxyTarget(req)
		if err != nil {
			log.Debug("bad proxy request", "method", req.Method, "uri", req.RequestURI, "err", err)
			writeHTTPError(c, http.StatusBadRequest, err.Error())
			return
		}
		if req.Method == http.MethodConnect {
			p.connect(ctx, log, c, br, target)
			return
		}
		if !p.forward(ctx, log, c, req, target, &up) {
			return
		}
	}
}

func (p *HTTPProxy) dial(ctx context.Context, target string) (net.Conn, error) {
	timeout := p.DialTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := p.Dial(ctx, "tcp", target)
	if err != nil {
		return nil, err
	}
	if !p.srv.trackConn(conn) {
		conn.Close()
		return nil, ErrProxyClosed
	}
	return conn, nil
}

// connect tunnels a CONNECT request. Bytes the client sent after the
// request (already buffered in br) go upstream first.
func (p *HTTPProxy) connect(ctx context.Context, log *slog.Logger, c net.Conn, br *bufio.Reader, target string) {
	conn, err := p.dial(ctx, target)
	if err != nil {
		log.Debug("dial failed", "target", target, "err", err)
		writeHTTPError(c, dialErrorStatus(err), fmt.Sprintf("dial %s: %v", target, err))
		return
	}
	defer p.srv.untrack(conn)
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := conn.Write(b); err != nil {
			return
		}
	}
	log.Debug("tunnel", "target", target)
	relay(c, conn)
}

// forward sends one plain request upstream and its response back. It
// reports whether the client connection may carry another request.
func (p *HTTPProxy) forward(ctx context.Context, log *slog.Logger, c net.Conn, req *http.Request, target string, up *upstream) bool {
	if up.conn != nil && up.addr != target {
		p.srv.untrack(up.conn)
		*up = upstream{}
	}
	if up.conn == nil {
		conn, err := p.dial(ctx, target)
		if err != nil {
			log.Debug("dial failed", "target", target, "err", err)
			writeHTTPError(c, dialErrorStatus(err), fmt.Sprintf("dial %s: %v", target, err))
			return false
		}
		*up = upstream{addr: target, conn: conn, br: bufio.NewReader(conn)}
	}
	clientClose := req.Close
	removeHopHeaders(req.Header)
	req.RequestURI = ""
	req.Close = false
	if err := req.Write(up.conn); err != nil {
		log.Debug("forward request failed", "target", target, "err", err)
		writeHTTPError(c, http.StatusBadGateway, "upstream write failed")
		return false
	}
	for {
		resp, err := http.ReadResponse(up.br, req)
		if err != nil {
			log.Debug("read response failed", "target", target, "err", err)
			writeHTTPError(c, http.StatusBadGateway, "upstream response failed")
			return false
		}
		informational := resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols
		upstreamClose := resp.Close
		removeHopHeaders(resp.Header)
		chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
		if !informational && resp.ContentLength < 0 && !chunked && bodyAllowed(req, resp) {
			// Length is delimited by the upstream closing: do the same.
			resp.Close = true
		} else {
			resp.Close = clientClose
		}
		err = resp.Write(c)
		resp.Body.Close()
		if err != nil {
			return false
		}
		if informational {
			continue
		}
		if upstreamClose {
			p.srv.untrack(up.conn)
			*up = upstream{}
		}
		return !resp.Close
	}
}

func bodyAllowed(req *http.Request, resp *http.Response) bool {
	return req.Method != http.MethodHead && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified
}

// proxyTarget returns the "host:port" a proxy request is for: the authority
// of a CONNECT, or the host of an absolute http:// URI (port 80 default).
func proxyTarget(req *http.Request) (string, error) {
	var host, port string
	if req.Method == http.MethodConnect {
		h, p, err := net.SplitHostPort(req.RequestURI)
		if err != nil {
			return "", fmt.Errorf("CONNECT %q: %w", req.RequestURI, ErrBadProxyRequest)
		}
		host, port = h, p
	} else {
		u := req.URL
		if u == nil || !u.IsAbs() || !strings.EqualFold(u.Scheme, "http") || u.Host == "" {
			return "", fmt.Errorf("%s %q: %w", req.Method, req.RequestURI, ErrBadProxyRequest)
		}
		host, port = u.Hostname(), u.Port()
		if port == "" {
			port = "80"
		}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || host == "" || strings.ContainsAny(host, " /\\@%") {
		return "", fmt.Errorf("%s %q: bad host or port: %w", req.Method, req.RequestURI, ErrBadProxyRequest)
	}
	return net.JoinHostPort(host, port), nil
}

// hopHeaders are the hop-by-hop headers of RFC 9110 section 7.6.1 plus the
// de-facto Proxy-Connection.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// dialErrorStatus maps a dial error to a gateway status.
func dialErrorStatus(err error) int {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func writeHTTPError(w io.Writer, code int, msg string) {
	body := msg + "\n"
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
}
