package weft

import (
	"context"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/weft-net/weft/addr"
	"github.com/weft-net/weft/dht"
	"github.com/weft-net/weft/trust"
)

// DHTStatus is the node's view of the DHT, for `weft dht`.
type DHTStatus struct {
	NodeID addr.NodeID `json:"node_id"`
	// Role is DHTRoleServer or DHTRoleClient; RoleForced says the
	// configuration chose it, RoleReason why it is what it is.
	Role       DHTRole `json:"role"`
	RoleForced bool    `json:"role_forced"`
	RoleReason string  `json:"role_reason"`
	// Rendezvous are a client's rendezvous servers.
	Rendezvous []netip.AddrPort `json:"rendezvous,omitempty"`
	// K is the bucket size and replication factor.
	K int `json:"k"`
	// Contacts is the routing table, bucket by bucket.
	Contacts []DHTContact `json:"contacts"`
	// Records is how many records the node's store holds.
	Records int `json:"records"`
	// StoreRefused counts records the store refused (invalid, expired,
	// replayed, conflicting, too large, full, rate limited).
	StoreRefused uint64 `json:"store_refused"`
}

// DHTContact is one routing-table entry.
type DHTContact struct {
	Bucket   int            `json:"bucket"`
	NodeID   addr.NodeID    `json:"node_id"`
	Name     string         `json:"name,omitempty"`
	Addr     netip.AddrPort `json:"addr"`
	RTTms    float64        `json:"rtt_ms"` // smoothed; 0 if never measured
	LastSeen time.Time      `json:"last_seen"`
	Failures int            `json:"failures"`
}

// DHT reports the node's routing table, role and store.
func (n *Node) DHT() (DHTStatus, error) {
	if n.isClosed() {
		return DHTStatus{}, ErrClosed
	}
	role, forced, why := n.role()
	st := DHTStatus{NodeID: n.nodeID, Role: role, RoleForced: forced, RoleReason: why,
		K: n.cfg.DHTReplication, Contacts: []DHTContact{}, Records: n.store.Len()}
	if st.K == 0 {
		st.K = dht.DefaultK
	}
	ss := n.store.Stats()
	st.StoreRefused = ss.Replayed + ss.Conflicts + ss.Invalid + ss.Expired + ss.TooLarge + ss.Full + ss.RateLimited
	n.disc.mu.Lock()
	if role == DHTRoleClient {
		for _, p := range n.disc.rendezvous {
			st.Rendezvous = append(st.Rendezvous, p.Addr)
		}
	}
	n.disc.mu.Unlock()
	t := n.dht.Table()
	for _, e := range t.Entries() {
		st.Contacts = append(st.Contacts, DHTContact{Bucket: t.BucketIndex(e.Key), NodeID: e.Contact.ID, Name: n.nameOf(e.Contact.ID),
			Addr: e.Contact.Peer.Addr, RTTms: ms(e.RTT), LastSeen: e.LastSeen, Failures: e.Failures})
	}
	return st, nil
}

// DHTRecord is one record the node's store holds.
type DHTRecord struct {
	Key dht.Key `json:"key"`
	// Kind is what the key names: "node" (node ID), "name", "ipv4" or
	// "ipv6".
	Kind    string      `json:"kind"`
	Owner   string      `json:"owner"`
	NodeID  addr.NodeID `json:"node_id"`
	Seq     uint64      `json:"seq"`
	Expires time.Time   `json:"expires"`
}

// DHTRecords lists the records the node's store holds, by owner name and
// kind.
func (n *Node) DHTRecords() ([]DHTRecord, error) {
	if n.isClosed() {
		return nil, ErrClosed
	}
	out := []DHTRecord{}
	n.store.Range(func(r dht.Record) bool {
		rec, err := trust.UnmarshalNodeRecord(r.Value)
		if err != nil {
			return true
		}
		c := rec.Cert
		kind := "?"
		switch r.Key {
		case dht.NodeKey(c.NodeID):
			kind = "node"
		case dht.NameKey(c.Name):
			kind = "name"
		case dht.IPKey(c.IPv4):
			kind = "ipv4"
		case dht.IPKey(c.IPv6()):
			kind = "ipv6"
		}
		out = append(out, DHTRecord{Key: r.Key, Kind: kind, Owner: c.Name, NodeID: c.NodeID, Seq: r.Seq, Expires: r.Expires})
		return true
	})
	order := map[string]int{"node": 0, "name": 1, "ipv4": 2, "ipv6": 3}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Owner != out[j].Owner {
			return out[i].Owner < out[j].Owner
		}
		return order[out[i].Kind] < order[out[j].Kind]
	})
	return out, nil
}

// LookupResult is one traced DHT lookup (`weft dht lookup`).
type LookupResult struct {
	Host string  `json:"host"`
	Key  dht.Key `json:"key"`
	// Record is what was found; nil if nothing was.
	Record *Peer `json:"record,omitempty"`
	// Error says why nothing was found.
	Error string `json:"error,omitempty"`
	// Hops is the depth of the node whose record won (0: this node's own
	// store); Messages the requests sent; Paths the disjoint paths taken
	// and PathsSucceeded those that found a valid record.
	Hops           int     `json:"hops"`
	Messages       int     `json:"messages"`
	Paths          int     `json:"paths"`
	PathsSucceeded int     `json:"paths_succeeded"`
	DurationMs     float64 `json:"duration_ms"`
	// Queries are the requests the lookup sent, in the order they were
	// answered (or failed).
	Queries []LookupQuery `json:"queries"`
}

// LookupQuery is one request of a lookup.
type LookupQuery struct {
	AtMs   float64        `json:"at_ms"` // when the answer came, from the lookup's start
	To     netip.AddrPort `json:"to"`
	NodeID addr.NodeID    `json:"node_id,omitzero"`
	Name   string         `json:"name,omitempty"`
	Msg    string         `json:"msg"`
	RTTms  float64        `json:"rtt_ms"`
	Error  string         `json:"error,omitempty"`
}

// Lookup looks host up in the DHT now (bypassing the short cache) and
// reports the path the lookup took. A host that is not found is not an
// error: the result says so in Error.
func (n *Node) Lookup(ctx context.Context, host string) (LookupResult, error) {
	key, err := n.keyFor(host)
	if err != nil {
		return LookupResult{}, err
	}
	tr := &lookupTrace{start: time.Now()}
	ctx = context.WithValue(ctx, traceKey{}, tr)
	p, st, err := n.lookup(ctx, host, true)
	res := LookupResult{Host: host, Key: key, Hops: st.Hops, Messages: st.Messages, Paths: st.Paths,
		PathsSucceeded: st.PathsSucceeded, DurationMs: ms(st.Duration), Queries: tr.list()}
	if err != nil {
		if n.isClosed() {
			return res, ErrClosed
		}
		res.Error = err.Error()
	} else {
		res.Record = &p
	}
	return res, nil
}

type traceKey struct{}

// lookupTrace collects the requests of one lookup (the DHT passes the
// caller's context down to the transport).
type lookupTrace struct {
	start time.Time
	mu    sync.Mutex // guards qs
	qs    []LookupQuery
}

func (t *lookupTrace) add(n *Node, to dht.Peer, mt dht.MsgType, sent time.Time, err error) {
	now := time.Now()
	q := LookupQuery{AtMs: ms(now.Sub(t.start)), To: to.Addr, Msg: mt.String(), RTTms: ms(now.Sub(sent))}
	n.disc.mu.Lock()
	if id, ok := n.disc.byKey[to.Key]; ok {
		q.NodeID = id
		if r := n.disc.known[id]; r != nil {
			q.Name = r.Cert.Name
		}
	}
	n.disc.mu.Unlock()
	if err != nil {
		q.Error = err.Error()
	}
	t.mu.Lock()
	t.qs = append(t.qs, q)
	t.mu.Unlock()
}

func (t *lookupTrace) list() []LookupQuery {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.qs)
}

// ms converts a duration to milliseconds, with microsecond precision.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
