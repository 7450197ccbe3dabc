// Package dht stores and finds weft's signed records — node records, name
// records, later revocations and the anchor-set chain — on other nodes.
//
// Two layers live here. The first is a Client with explicit servers
// (it publishes and fetches on the servers it is given). The second, the
// Kademlia core of DESIGN.md, is what the node runs (package weft): Table
// and DHT, with k=20 buckets with replacement caches and an Admit hook for
// certificate checks, iterative FIND_NODE with alpha=3 and RTT-aware
// choice among equally close candidates, S/Kademlia Get over d=3 disjoint
// paths with every answer validated and liars scored down and banned, Put
// to the k closest, Refresh and Republish, the replication hand-off to new
// contacts, PING and Kademlia's eviction rule (Maintain), client mode,
// and Gossip for what every node must learn fast (the node's trust
// statements). It is also tested on the in-memory transport and in
// internal/sim at 10,000 nodes. Both layers share these pieces:
//
//   - Key is the 256-bit Kademlia ID space shared by record keys and node IDs,
//     with XOR Distance, CommonPrefixLen and CompareDistance.
//   - The messages are Kademlia's FIND_VALUE, STORE, FIND_NODE and PING,
//     and GOSSIP (push with a pull digest). Replies
//     carry Contacts (node ID + transport address + transport key) so an
//     iterative lookup can follow them; ServerOptions.Closest is where the
//     routing table answers FIND_NODE (a DHT feeds it; a bare Server
//     replies with no contacts).
//   - Client.Get and Client.Put take the servers to ask as an argument; an
//     iterative lookup will pass the k closest nodes it found instead of the
//     bootstrap list.
//
// Design decisions:
//
//   - Liveness. When a newcomer finds its bucket full it waits in the
//     replacement cache and the bucket's least recently seen entry becomes
//     due for a PING (Table.PingCandidates). DHT.Maintain, driven by the
//     owner like Refresh, pings those entries (each up to MaxFailures
//     times, concurrently, all returned before Maintain returns): an
//     answer moves the entry to the tail, silence evicts it for the best
//     replacement. Old live contacts are thus preferred (S/Kademlia) and
//     dead ones do not wait for a lookup to notice them.
//
//   - Identity of a contact. A known ID seen again from another address
//     is updated (the node moved); seen with another transport key it
//     must pass Admit again, and stays as it was if refused, so a hostile
//     node cannot take over a known ID by announcing it with its own key.
//
//   - Replication hand-off (handoff.go, Kademlia's rule for joins). When
//     a contact becomes a live table entry (TableOptions.Added), the
//     records in the Store it is closer to than this node, when this node
//     is among the k closest it knows, are stored on it: at most
//     Options.HandOff per contact, once per contact in ten minutes, by
//     one background goroutine that Close cancels and waits for.
//     Otherwise a record put while the network was smaller would stay on
//     nodes that lookups no longer ask until its owner republished it.
//
//   - Timeouts. A request to a contact with a measured RTT waits 3×RTT
//     (at least MinAdaptiveTimeout, at most Options.Timeout); a timeout
//     counts as a failure (Table.Failed), so a dead contact costs lookups
//     a fraction of a second a few times and is evicted, instead of
//     holding every lookup whose window it is in for Options.Timeout.
//
//   - Client mode (Options.Client) is for nodes behind NAT: no handlers
//     are registered, so a client answers nothing, is never learned from
//     a reply, and stores only remotely; the node's Identify keeps it out
//     of tables when it asks. Its lookups and Gossip pulls work as usual.
//
//   - Gossip (gossip.go) spreads revocations and anchor-set changes: an
//     immediate push to Fanout peers on first receipt, PushRounds more
//     pushes in the owner-driven rounds, and in every round a pull by
//     digest, so the uninformed fraction u falls to about u^(Fanout+1) per
//     round. Fan-out peers are sampled across buckets in proportion to the
//     ID space they cover (Table.Sample), approximating a uniform sample
//     of the network. IDs are SHA-256 of the payload, deduplicated for
//     Forget; each sender is rate-limited on new payloads and scored an
//     offence per invalid one (unless Validate wraps ErrGossipIgnored: a
//     payload that cannot be judged yet is dropped without blame and not
//     remembered). Package weft carries revocations, anchor-set changes
//     and policy on it, with rounds every 750 ms.
//
//   - Transport seam. dht does not import nat (they are siblings). It defines
//     Transport (Call/Handle, the shape of nat's control RPC) and Peer; the
//     message type numbers equal nat's (FIND_VALUE=3, STORE=4, FIND_NODE=5)
//     so package weft adapts *nat.Conn with plain conversions. dhttest is an
//     in-memory Transport for tests and internal/sim.
//
//   - Validation is injected. dht knows nothing of signatures or
//     certificates: a Validator, backed by trust in package weft, returns a
//     record's sequence number and expiry or rejects it. Stores validate
//     before storing; clients validate every answer and their own records
//     before publishing. dht imports only addr (for NodeKey).
//
//   - Keys are domain-separated hashes: NodeKey = SHA-256("weft/node/"||id),
//     NameKey = SHA-256("weft/name/"||name), IPKey = SHA-256("weft/ip/"||ip)
//     with 4-byte IPv4 (mapped addresses unmapped) and 16-byte IPv6. Hashing
//     the node ID (rather than using it as the key) keeps record kinds in
//     disjoint key spaces.
//
//   - Precedence. Per key the store keeps one record: a higher sequence
//     number replaces it; the same sequence number with identical bytes is
//     accepted as a no-op (republishing is idempotent); the same sequence
//     number with different bytes is rejected (ErrConflict) and the first
//     one kept; a lower one is rejected as a replay (ErrReplay) naming the
//     stored sequence number, which the STORE reply also carries so the
//     publisher knows what to exceed. An expired record counts as absent, is
//     never served, and is dropped by the sweeper.
//
//   - Abuse limits. Stores are rate-limited per peer with token buckets keyed
//     by the peer's transport key (authenticated by nat's sealed boxes);
//     the charge is taken before validation, so a flood of bad records costs
//     the sender its budget, not us signature checks. The bucket map is
//     bounded. Reads are not rate-limited here: they are cheap, and nat
//     limits handler work per source. Each record is capped
//     (MaxRecordSize, default 8 KiB; the codec's hard limit is MaxValueSize,
//     16 KiB) and so is the store's total (MaxTotalSize, default 64 MiB).
//     A full store rejects new records rather than evicting held ones, so a
//     flood cannot push out valid records.
//
//   - Get waits for every server (each bounded by ClientOptions.Timeout)
//     and returns the highest valid sequence number, so a lying or stale
//     server can neither forge a record (the Validator rejects it) nor hide
//     a newer one by answering first. When nothing is found, the error
//     (*QueryError) says what each server did: no record, timed out,
//     malformed reply, invalid or expired record.
//
//   - Wire format: version byte, message tag (reply tags have the high bit
//     set), fixed-size keys, length-prefixed and bounded values, one
//     encoding per message (unknown flags and trailing bytes rejected).
//     Decoders never panic and never alias their input. Rejections of a
//     STORE travel as a status in a normal reply, so their reason survives
//     any transport; handler errors are kept for undecodable requests.
//
//   - Clock and logger are injected (Now, Logger); the Store's sweeper can
//     be turned off (negative SweepInterval) so a simulator drives Sweep on
//     virtual time.
package dht
