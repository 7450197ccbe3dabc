// Package sim is weft's in-process simulator for the DHT and gossip: many
// thousands of real dht.DHT and dht.Gossip nodes (dht.New, Bootstrap, Put,
// Get, Maintain, NewGossip, Publish, Round — the production code, not a
// model of it) talking through a simulated packet network that implements
// dht.Transport.
//
// The network gives every pair of nodes a fixed one-way latency around
// Config.Latency, loses packets with probability Config.Loss, and applies
// the Byzantine behaviours of Kind to the requests that reach a Byzantine
// node (each still runs a real DHT, so it is admitted to tables and
// answers PING): Silent, Dropping, Eclipse (answers with the colluders
// closest to the target), Stale (serves an older validly signed record)
// and Forged (serves records and gossip with bad signatures). Records are
// node records stored under NodeKey of their honest owner, signed with a
// MAC (a stand-in for ed25519), with real sequence numbers and expiry.
//
// Time. Run uses only the time package (timers for latency, the DHT's
// context deadlines, time.Now as every node's clock), so run inside a
// testing/synctest bubble, as TestSimulate does, all of it is virtual: the
// fake clock jumps whenever every goroutine is blocked, and a minute of
// churn costs only the CPU its messages need. The simulator is therefore
// a test: `make sim` runs TestSimulate with -sim.full (N=10,000) and
// prints the table; without the flag, a scaled-down version (N=1,000, or
// 300 with -short) runs inside go test ./... and checks the same targets.
//
// Setup. Initial routing tables are seeded from a global view through
// Table.Seen (for each node and each bucket, up to k random nodes of that
// bucket's range, with their true RTT): the tables of a converged network,
// without 10,000 bootstraps. Every node that joins during churn uses the
// real Bootstrap, and every record is stored by the owner's real Put.
package sim
