package dht

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// DefaultTimeout bounds one request to one server.
const DefaultTimeout = 5 * time.Second

// ClientOptions configures a Client.
type ClientOptions struct {
	// Transport sends the requests. Required.
	Transport Transport

	// Validator checks every record a server returns, and every record
	// before it is published. Required.
	Validator Validator

	// Now is the clock. Nil means time.Now.
	Now func() time.Time

	// Logger receives per-server failures at Debug. Nil discards.
	Logger *slog.Logger

	// Timeout bounds each request to one server, so one silent server
	// cannot hold up an answer the others gave. Zero means DefaultTimeout;
	// negative means only the caller's context bounds requests.
	Timeout time.Duration
}

// Client publishes and fetches records on a given set of servers (for this
// issue, the bootstrap nodes). It is safe for concurrent use and holds no
// goroutines between calls.
type Client struct {
	tr        Transport
	validator Validator
	now       func() time.Time
	log       *slog.Logger
	timeout   time.Duration
}

// NewClient returns a Client.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.Transport == nil {
		return nil, errors.New("dht new client: ClientOptions.Transport must be non-nil")
	}
	if opts.Validator == nil {
		return nil, errors.New("dht new client: ClientOptions.Validator must be non-nil")
	}
	c := &Client{
		tr:        opts.Transport,
		validator: opts.Validator,
		now:       opts.Now,
		log:       opts.Logger,
		timeout:   opts.Timeout,
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "dht-client")
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	return c, nil
}

// Put validates value and sends it to all servers in parallel. It returns
// nil if at least one server stored it (or already held the identical
// record). Otherwise it returns a *QueryError wrapping ErrNotStored and
// each server's reason (a *StoreError for rejections, so errors.Is(err,
// ErrReplay) tells the publisher to raise its sequence number); or an error
// wrapping ErrInvalid or ErrExpired if value does not validate locally.
func (c *Client) Put(ctx context.Context, servers []Peer, key Key, value []byte) error {
	now := c.now()
	seq, expires, err := c.validator.Validate(key, value, now)
	if err != nil {
		return fmt.Errorf("dht put %s: %w: %w", key.Short(), ErrInvalid, err)
	}
	if !expires.After(now) {
		return fmt.Errorf("dht put %s: %w at %s", key.Short(), ErrExpired, expires.UTC().Format(time.RFC3339))
	}
	body, err := StoreRequest{Key: key, Value: value}.MarshalBinary()
	if err != nil {
		return fmt.Errorf("dht put %s: %w", key.Short(), err)
	}
	servers = dedupe(servers)
	if len(servers) == 0 {
		return &QueryError{Op: "put", Key: key, Err: ErrNoServers}
	}
	errs := c.fanout(ctx, servers, MsgStore, body, func(i int, reply []byte) error {
		var resp StoreResponse
		if err := resp.UnmarshalBinary(reply); err != nil {
			return err
		}
		if resp.Status == StatusOK {
			return nil
		}
		return &StoreError{Key: key, Reason: resp.Status.Err(), Seq: seq, StoredSeq: resp.StoredSeq, Detail: resp.Detail}
	})
	q := &QueryError{Op: "put", Key: key, Err: ErrNotStored}
	stored := 0
	for i, err := range errs {
		if err == nil {
			stored++
			continue
		}
		c.log.Debug("put failed on server", "server", servers[i], "key", key.Short(), "err", err)
		q.Failures = append(q.Failures, ServerError{Server: servers[i], Err: err})
	}
	if stored == 0 {
		return q
	}
	c.log.Debug("put", "key", key.Short(), "seq", seq, "stored", stored, "servers", len(servers))
	return nil
}

// Get asks all servers in parallel for key, validates every answer with
// the Validator, and returns the valid, unexpired record with the highest
// sequence number (among equal sequence numbers, the lowest bytes, so the
// choice does not depend on reply order). It waits for every server to
// answer or time out, so a server cannot hide a newer record by answering
// first with an older one. Servers that time out, return garbage or return
// invalid or expired records are ignored. If no server returns a valid
// record, Get returns a *QueryError wrapping ErrNotFound and what each
// server did.
func (c *Client) Get(ctx context.Context, servers []Peer, key Key) (Record, error) {
	body, err := FindValueRequest{Key: key}.MarshalBinary()
	if err != nil {
		return Record{}, fmt.Errorf("dht get %s: %w", key.Short(), err)
	}
	servers = dedupe(servers)
	if len(servers) == 0 {
		return Record{}, &QueryError{Op: "get", Key: key, Err: ErrNoServers}
	}
	recs := make([]Record, len(servers))
	errs := c.fanout(ctx, servers, MsgFindValue, body, func(i int, reply []byte) error {
		var resp FindValueResponse
		if err := resp.UnmarshalBinary(reply); err != nil {
			return err
		}
		if !resp.Found {
			return errNoRecord
		}
		now := c.now()
		seq, expires, err := c.validator.Validate(key, resp.Value, now)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if !expires.After(now) {
			return fmt.Errorf("%w at %s (seq %d)", ErrExpired, expires.UTC().Format(time.RFC3339), seq)
		}
		recs[i] = Record{Key: key, Value: resp.Value, Seq: seq, Expires: expires}
		return nil
	})
	q := &QueryError{Op: "get", Key: key, Err: ErrNotFound}
	best := -1
	for i, err := range errs {
		if err != nil {
			c.log.Debug("get failed on server", "server", servers[i], "key", key.Short(), "err", err)
			q.Failures = append(q.Failures, ServerError{Server: servers[i], Err: err})
			continue
		}
		if best < 0 || better(recs[i], recs[best]) {
			best = i
		}
	}
	if best < 0 {
		return Record{}, q
	}
	for i, err := range errs {
		if err == nil && recs[i].Seq < recs[best].Seq {
			c.log.Debug("server returned outdated record", "server", servers[i], "key", key.Short(), "seq", recs[i].Seq, "latest", recs[best].Seq)
		}
	}
	return recs[best], nil
}

// errNoRecord is one server's "I have nothing"; the Get as a whole then
// fails with ErrNotFound.
var errNoRecord = fmt.Errorf("server has no record: %w", ErrNotFound)

func better(a, b Record) bool {
	if a.Seq != b.Seq {
		return a.Seq > b.Seq
	}
	return bytes.Compare(a.Value, b.Value) < 0
}

// fanout calls every server in parallel, each bounded by the per-server
// timeout, passes each reply to handle, and returns each server's error in
// server order. It returns after every call has finished.
func (c *Client) fanout(ctx context.Context, servers []Peer, t MsgType, body []byte, handle func(i int, reply []byte) error) []error {
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Go(func() {
			cctx, cancel := ctx, context.CancelFunc(func() {})
			if c.timeout > 0 {
				cctx, cancel = context.WithTimeout(ctx, c.timeout)
			}
			defer cancel()
			reply, err := c.tr.Call(cctx, srv, t, body)
			if err != nil {
				errs[i] = err
				return
			}
			errs[i] = handle(i, reply)
		})
	}
	wg.Wait()
	return errs
}

// dedupe drops repeated servers, keeping order.
func dedupe(servers []Peer) []Peer {
	seen := make(map[Peer]bool, len(servers))
	out := make([]Peer, 0, len(servers))
	for _, s := range servers {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
