package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weft-net/weft"
)

// The local API: HTTP/1.1 over the Unix socket DIR/weft.sock, mode 0600 in a
// 0700 directory, so only the owner can drive the daemon.
//
//	GET  /v1/status               weft.Status
//	POST /v1/invite               {"name","ttl","uses","tags"} → {"token","endorsements","threshold"}
//	GET  /v1/resolve?host=H       weft.Peer fields
//	POST /v1/dial?network=&addr=  101 Switching Protocols, then raw bytes
//	POST /v1/down                 the daemon exits
//	GET  /v1/dht                  weft.DHTStatus
//	GET  /v1/dht/records          []weft.DHTRecord
//	GET  /v1/dht/lookup?host=H    weft.LookupResult (found or not)
//
// and the trust endpoints of api_trust.go.
const socketName = "weft.sock"

func socketPath(dir string) string { return filepath.Join(dir, socketName) }

// errNotRunning says that no daemon answers on the state directory's socket.
type errNotRunning struct{ dir string }

func (e errNotRunning) Error() string {
	return fmt.Sprintf("weft is not running for state %s: start it with `weft up --state %s`", e.dir, e.dir)
}

// apiServer serves the local API for one node.
type apiServer struct {
	node   *weft.Node
	dir    string // the node's state directory
	logger *slog.Logger
	down   func()
	ln     net.Listener
	srv    *http.Server

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
}

// listenAPI creates the socket, refusing if another daemon answers on it.
func listenAPI(dir string) (net.Listener, error) {
	path := socketPath(dir)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("a weft daemon is already running for state %s (stop it with `weft down --state %s`)", dir, dir)
	}
	os.Remove(path) // stale socket of a daemon that died
	old := syscall.Umask(0o077)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("local API socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func serveAPI(ln net.Listener, node *weft.Node, dir string, logger *slog.Logger, down func()) *apiServer {
	s := &apiServer{node: node, dir: dir, logger: logger, down: down, ln: ln, conns: map[net.Conn]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("POST /v1/invite", s.invite)
	mux.HandleFunc("GET /v1/resolve", s.resolve)
	mux.HandleFunc("POST /v1/dial", s.dial)
	mux.HandleFunc("POST /v1/down", s.downHandler)
	mux.HandleFunc("GET /v1/dht", s.dhtStatus)
	mux.HandleFunc("GET /v1/dht/records", s.dhtRecords)
	mux.HandleFunc("GET /v1/dht/lookup", s.dhtLookup)
	s.routeTrust(mux)
	s.routeNAT(mux)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s
}

// Close stops the API and every spliced connection. Requests in flight get
// a moment to finish first, so that the answer to POST /v1/down, which
// starts the shutdown, reaches `weft down` whole.
func (s *apiServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	s.srv.Shutdown(ctx)
	cancel()
	s.srv.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	http.Error(w, err.Error(), code)
}

func (s *apiServer) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.node.Status()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, st)
}

type inviteRequest struct {
	Name string        `json:"name"`
	TTL  time.Duration `json:"ttl"`
	Uses int           `json:"uses"`
	Tags []string      `json:"tags,omitempty"`
}

// inviteResult is a new invite and how many of the endorsements it needs
// it carries.
type inviteResult struct {
	Token        string `json:"token"`
	Endorsements int    `json:"endorsements"`
	Threshold    int    `json:"threshold"`
}

func (s *apiServer) invite(w http.ResponseWriter, r *http.Request) {
	var req inviteRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	tok, err := s.node.Invite(weft.InviteOptions{Name: req.Name, TTL: req.TTL, Uses: req.Uses, Tags: req.Tags})
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	k, t := inviteProgress(tok)
	writeJSON(w, inviteResult{Token: tok, Endorsements: k, Threshold: t})
}

// resolveResult is the JSON form of a resolved peer.
type resolveResult struct {
	Name      string   `json:"name"`
	NodeID    string   `json:"node_id"`
	IPv4      string   `json:"ipv4"`
	IPv6      string   `json:"ipv6"`
	Endpoints []string `json:"endpoints"`
	Tags      []string `json:"tags,omitempty"`
	Seq       uint64   `json:"seq"`
	Expires   string   `json:"expires"`
}

func (s *apiServer) resolve(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	p, err := s.node.Resolve(ctx, r.URL.Query().Get("host"))
	if err != nil {
		writeErr(w, http.StatusNotFound, err)
		return
	}
	res := resolveResult{Name: p.Name, NodeID: p.NodeID.String(), IPv4: p.IPv4.String(), IPv6: p.IPv6.String(),
		Tags: p.Tags, Seq: p.Seq, Expires: p.Expires.UTC().Format(time.RFC3339)}
	for _, e := range p.Endpoints {
		res.Endpoints = append(res.Endpoints, e.String())
	}
	writeJSON(w, res)
}

func (s *apiServer) dhtStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.node.DHT()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, st)
}

func (s *apiServer) dhtRecords(w http.ResponseWriter, r *http.Request) {
	recs, err := s.node.DHTRecords()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, recs)
}

func (s *apiServer) dhtLookup(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	res, err := s.node.Lookup(ctx, r.URL.Query().Get("host"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, res)
}

// dial connects inside the overlay and then splices the API connection to
// it, for `weft nc`.
func (s *apiServer) dial(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	network := q.Get("network")
	if network == "" {
		network = "tcp"
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	oc, err := s.node.Dial(ctx, network, q.Get("addr"))
	cancel()
	if err != nil {
		writeErr(w, http.StatusBadGateway, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		oc.Close()
		writeErr(w, http.StatusInternalServerError, errors.New("cannot hijack"))
		return
	}
	lc, brw, err := hj.Hijack()
	if err != nil {
		oc.Close()
		return
	}
	s.mu.Lock()
	s.conns[lc] = struct{}{}
	s.conns[oc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, lc)
		delete(s.conns, oc)
		s.mu.Unlock()
		lc.Close()
		oc.Close()
	}()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: weft-stream\r\nConnection: Upgrade\r\n\r\n")
	if err := brw.Flush(); err != nil {
		return
	}
	splice(lc, brw.Reader, oc)
}

func (s *apiServer) downHandler(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]string{"status": "stopping"})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	go s.down()
}

// closeWriter is a connection that can half-close.
type closeWriter interface{ CloseWrite() error }

// splice copies both ways between a and b (reading a through ar) until both
// directions end, half-closing as each one does.
func splice(a net.Conn, ar io.Reader, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst net.Conn, src io.Reader) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(closeWriter); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go cp(b, ar)
	go cp(a, b)
	wg.Wait()
}

// apiClient talks to a daemon's local API.
type apiClient struct {
	dir  string
	http *http.Client
}

func newAPIClient(dir string) *apiClient {
	path := socketPath(dir)
	return &apiClient{dir: dir, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

func (c *apiClient) wrap(err error) error {
	var op *net.OpError
	if errors.As(err, &op) || errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
		return errNotRunning{c.dir}
	}
	return err
}

// do sends a request and decodes a JSON answer into out.
func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://weft"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.wrap(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errors.New(strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// dial asks the daemon for an overlay connection and returns the spliced
// socket.
func (c *apiClient) dial(ctx context.Context, network, address string) (net.Conn, *bufio.Reader, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath(c.dir))
	if err != nil {
		return nil, nil, c.wrap(err)
	}
	q := url.Values{"network": {network}, "addr": {address}}
	fmt.Fprintf(conn, "POST /v1/dial?%s HTTP/1.1\r\nHost: weft\r\nContent-Length: 0\r\n\r\n", q.Encode())
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		conn.Close()
		return nil, nil, errors.New(strings.TrimSpace(string(b)))
	}
	return conn, br, nil
}
