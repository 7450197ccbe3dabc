// Package trust holds weft's membership and trust machinery: node
// identities, the genesis that defines a network and its anchor set,
// quorum-endorsed membership certificates, invites, join requests, signed
// node records, and the anchor-side admission logic.
//
// It imports only package addr (cmd → weft → {tunnel, netstack, platform,
// dns} → {nat, dht} → trust → addr).
//
// # Trust model
//
// A network is defined by its Genesis: name, DNS domain, IPv4 prefix, n
// anchor Ed25519 keys and a threshold t (default floor(2n/3)+1, tolerating
// f = floor((n-1)/3) Byzantine anchors). The network ID is the SHA-256 of
// the genesis encoding, so it commits to the anchor set.
//
// Certificates and invites are valid only with endorsements from at least
// t distinct current anchors. Endorsements are counted once per anchor
// however often they are repeated; endorsements by keys outside the anchor
// set are ignored (their signatures are not even checked, so padding a
// certificate with junk costs a verifier nothing) and only matter for the
// error message: when fewer than t anchors count, the rejection names the
// most specific cause — a non-anchor endorser (ErrNotAnchor), then an
// anchor signature that does not verify (ErrBadSignature), else
// ErrTooFewEndorsements. Ignoring rather than refusing extra endorsers
// keeps certificates valid across anchor-set changes as long as t current
// anchors still vouch for them.
//
// Each signature is over a domain-separated message ("weft/<kind>/v1\0" ||
// body) so a signature made for one kind of object is never valid for
// another. Ed25519 signatures are deterministic, so re-endorsing identical
// bytes yields identical certificates.
//
// # Wire encoding
//
// Signed objects never use JSON. Every object is a deterministic, versioned
// binary encoding: a type tag byte, a version byte (1), then fields in fixed
// order. Integers are big-endian fixed width, lengths and counts minimal
// uvarints, byte strings and strings length-prefixed, times int64 Unix
// seconds + uint32 nanoseconds (UTC), addresses a family byte (0/4/6) and
// 4 or 16 bytes (zones are dropped). Decoders bound every length and count
// (MaxAnchors, MaxTags, MaxEndpoints, MaxBootstrap, 253-byte strings, 64 KiB
// certificates), reject trailing bytes, non-minimal varints and
// out-of-range values, and never panic; decoding is canonical, so whenever
// Unmarshal(b) succeeds, Marshal of the result equals b (the fuzz targets
// check this). Decoding checks structure only; callers must Verify.
//
// Invites travel as one line: "weft1-" + unpadded base64url of the binary
// encoding. An invite embeds the whole genesis, so a joining node learns
// the network and its anchors from the token (the token is the out-of-band
// root of trust, like a Tailscale auth key or a Nebula CA file), plus the
// NodeID and WireGuard key of the anchor to contact and bootstrap
// addresses, all covered by the endorsements.
//
// # Errors
//
// Every refusal is a *RejectError{Reason, Detail} whose Detail says what
// was wrong and what to do ("invite expired at 2026-11-26T12:00Z; ask an
// anchor for a new one with `weft invite`"). errors.Is(err, ErrExpired)
// etc. match the sentinel of the Reason. JoinResponse carries the Reason
// over the wire so the joining side rebuilds the same error.
//
// # Anchors
//
// Anchor admits nodes. For a join request it checks, in order: the
// request's self-signature (proof of key possession) and its time (within
// JoinRequestSkew of the anchor's clock), the invite's network, expiry and
// endorsements, the invite's use ledger, the name, then allocates an IPv4
// address (addr.IPv4 with attempts 0..63, then a linear scan) and issues a
// certificate valid from now-CertBackdate (clock-skew tolerance) for
// CertValidity (default one year). Uses are counted per distinct node: the
// same key joining again with the same invite is idempotent (same
// certificate back while it is valid and the keys are unchanged; a
// reissue with the same name and address otherwise) and costs no use. A
// node without a requested or bound name is called "node-<short id>".
//
// All anchor state — invite ledger, members with their names, IPv4
// addresses and latest certificates, and the next serial — is one JSON
// document, Dir/anchor/state.json (mode 0600; it is local, unsigned state,
// so JSON is fine and debuggable), rewritten atomically (temp file, fsync,
// rename, directory fsync) before Admit or NewInvite returns, and rolled
// back in memory if the write fails. One file means the ledger, the
// allocations and the names can never disagree after a crash. Rewriting the
// whole file per admission is O(members); that is fine for thousands of
// nodes and can move to an append-only log later without API changes.
// Anchor serialises admissions with one mutex, which also covers the file.
//
// With n > 1 anchors each anchor keeps its own ledger and endorses
// independently; the joining node collects endorsements until it holds t.
// This issue exercises one anchor; multi-anchor admission (agreeing on the
// IPv4 address and name across anchors) comes with the BFT issue, and the
// types already carry n anchors, t and endorsement lists.
//
// # State files
//
// A node's state directory holds identity.key (Ed25519 seed and clamped
// Curve25519 key, binary, mode 0600, refused with a `chmod 600` hint when
// group/other can access it), genesis and cert (binary encodings, 0600),
// and anchor/ on anchors. All are written atomically.
package trust
