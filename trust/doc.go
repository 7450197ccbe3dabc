// Package trust holds weft's membership and trust machinery: node
// identities, the genesis that defines a network and its anchor set, the
// anchor-set chain, quorum-endorsed membership certificates, invites, join
// and renew requests, revocations, policy, signed node records, the View
// they are all verified against, and the anchor-side admission logic.
//
// It imports only package addr (cmd → weft → {tunnel, netstack, platform,
// dns} → {nat, dht} → trust → addr).
//
// # Trust model
//
// A network is defined by its Genesis: name, DNS domain, IPv4 prefix, n
// anchors (AnchorInfo: Ed25519 and WireGuard keys, name, IPv4, endpoints)
// and a threshold t (default floor(2n/3)+1). The network ID is the SHA-256
// of the genesis encoding, so it commits to the initial anchor set; it
// never changes, even when the anchor set does.
//
// Each anchor generates its key on its own machine and publishes an
// AnchorDescriptor ("weft-anchor1-…": its public keys, name and endpoints
// signed by its key, proving possession). NewGenesisFromDescriptors
// assembles the genesis from descriptors, assigns each anchor an IPv4
// address, and the result travels as a "weft-genesis1-…" token; members
// pin its ID. No private key leaves its machine.
//
// Thresholds must satisfy n/2 < t <= n (CheckThreshold). Tolerance(n, t)
// is how many Byzantine anchors a set tolerates: f < t (they cannot reach
// t alone), f < 2t−n (any two quorums share at least 2t−n anchors, so two
// conflicting statements can both reach t only if all of those
// equivocated) and f <= n−t (the honest anchors still reach t). With the
// default threshold that is f = floor((n−1)/3); t <= n/2 would let two
// disjoint quorums approve conflicting statements, so it is refused.
//
// # View
//
// A View (genesis + anchor-set chain + revocations + policy) is the one
// thing everything verifies against; Certificate.Verify, NodeRecord.Verify
// and Invite.Verify are thin wrappers over a fresh View of a genesis (plus,
// for an invite, the chain it carries). The current anchor set is the
// genesis set followed by AnchorChanges: each names the next Seq and the
// Hash of the set it replaces (the network ID for the first), carries the
// whole new set and threshold (adding, removing and rotating anchors are
// all "a new full set"), and needs the threshold of distinct anchors of
// the set before it. A wrong Prev or a gap is ReasonFork, an old Seq is
// ReasonReplayed (ApplyChain skips changes already held). Honest anchors
// record, before signing, the hash of the one change they endorse per Seq
// (Anchor.EndorseChange) and refuse any other (ReasonFork), so two
// conflicting changes cannot both reach t while fewer than 2t−n anchors
// are Byzantine. Policies use the same per-Seq rule.
//
// Endorsements are counted once per anchor of the current set; revoked
// anchors do not count. Endorsements by keys outside the set are ignored
// (their signatures are not even checked, so padding with junk costs a
// verifier nothing) and only matter for the error message: when fewer
// than t anchors count, the rejection names the most specific cause — a
// revoked anchor or a non-anchor endorser (ErrNotAnchor), then an anchor
// signature that does not verify (ErrBadSignature), else
// ErrTooFewEndorsements. Ignoring rather than refusing extra endorsers
// keeps certificates valid across anchor-set changes as long as t current
// anchors vouch for them; a certificate whose endorsers were all replaced
// must be renewed by the new set.
//
// Anchors are members without endorsements: AnchorCertificate derives an
// anchor's certificate from the set (genesis Created − CertBackdate to
// Created + 100 years, serial 0, tag "anchor", no endorsements), and a
// certificate without endorsements verifies iff it is exactly the derived
// certificate of a current anchor. An anchor removed from the set loses
// its certificate with it.
//
// Revocations ("weft-revoke1-…") name a NodeID, never a certificate hash,
// so every certificate and record of that key is refused (ReasonRevoked)
// including ones endorsed later; they need t endorsements of the current
// set when first added, are permanent, and survive anchor-set changes. An
// anchor can be revoked by t others: it then also loses its anchor power
// (its endorsements stop counting) although it stays in the set — and
// counts towards n — until an AnchorChange removes it, which operators
// should do promptly since a revoked anchor reduces the margin for
// liveness. Members that receive a revocation signed by an older set after
// a change refuse it; the new set re-endorses the revocations it wants to
// keep spreading.
//
// A Policy ("weft-policy1-…") is a quorum-signed allow list of Rules over
// certificate tags; the highest valid Seq wins, no policy allows all,
// and with one the default is deny (Policy.Allows).
//
// Each signature is over a domain-separated message ("weft/<kind>/v1\0" ||
// body) so a signature made for one kind of object is never valid for
// another. Ed25519 signatures are deterministic, so re-endorsing identical
// bytes yields identical endorsements, which is what lets the endorsements
// of independent anchors over one proposed body add up.
//
// # Wire encoding
//
// Signed objects never use JSON. Every object is a deterministic, versioned
// binary encoding: a type tag byte, a version byte (1), then fields in fixed
// order. Integers are big-endian fixed width, lengths and counts minimal
// uvarints, byte strings and strings length-prefixed, times int64 Unix
// seconds + uint32 nanoseconds (UTC), addresses a family byte (0/4/6) and
// 4 or 16 bytes (zones are dropped). Decoders bound every length and count
// (MaxAnchors, MaxTags, MaxEndpoints, MaxAnchorEndpoints, MaxBootstrap,
// MaxRules, MaxInviteChain, 253-byte strings, 64 KiB certificates),
// reject trailing bytes, non-minimal varints and out-of-range values, and never panic; decoding is canonical, so whenever
// Unmarshal(b) succeeds, Marshal of the result equals b (the fuzz targets
// check this). Decoding checks structure only; callers must Verify.
//
// Tokens travel as one line: a prefix ("weft1-" for invites,
// "weft-genesis1-", "weft-anchor1-", "weft-revoke1-", "weft-change1-",
// "weft-policy1-") + unpadded base64url of the binary encoding. An invite
// embeds the whole genesis and the anchor-set chain (at most
// MaxInviteChain changes), so a joining node learns the network and its
// current anchors from the token alone (the token is the out-of-band root
// of trust, like a Tailscale auth key or a Nebula CA file), plus the
// tags granted, the anchor to contact and bootstrap addresses, all but
// the chain covered by the endorsements (the chain carries its own).
//
// # Errors
//
// Every refusal is a *RejectError{Reason, Detail} whose Detail says what
// was wrong and what to do ("invite expired at 2026-11-26T12:00Z; ask an
// anchor for a new one with `weft invite`"). errors.Is(err, ErrExpired)
// etc. match the sentinel of the Reason. JoinResponse carries the Reason
// over the wire so the joining side rebuilds the same error.
//
// # Admission by quorum
//
// The joining node proposes its whole certificate body in the JoinRequest
// (name, IPv4 = ProposeIPv4(prefix, NodeID, attempt), validity window,
// serial, the invite's tags), signs it, and sends the same request to
// anchors until t have endorsed it; Certificate.AddEndorsement merges
// their answers. Every anchor decides on its own (Anchor.Endorse): the
// request's signature and time (within JoinRequestSkew), network, body
// (valid name and tags, IPv4 a host of the prefix, window starting now
// and no longer than its CertValidity, serial >= 1), not revoked, not an
// anchor; then the invite (t endorsements of the current set, expiry,
// bound name, exact tags, its own use ledger) or, for a request without
// invite, its own operator's approval (unknown requests are queued —
// Pending, Approve, Reject — and refused with ReasonPendingApproval;
// rejected ones with ReasonDenied); then that no other unrevoked node
// holds the name (ReasonNameTaken) or address (ReasonAddressTaken: retry
// with attempt+1) in its ledger or the anchor set. It records the node
// before answering, so the same name or address cannot be endorsed to a
// second node: two conflicting certificates would need two quorums, which
// share at least 2t−n anchors. Uses are counted per distinct node; a
// member re-sending its request (same name and address) costs no use and
// gets the same endorsement. Reservations by nodes that never collected t
// endorsements stay until the node is revoked.
//
// Anchor.Admit is Endorse plus assembly, the one-anchor convenience (with
// t = 1 its result is a valid certificate). Anchor.Enroll endorses a node
// on the anchor's own authority, with anchor-chosen address and serial.
// Renewal (RenewRequest, Anchor.Renew): anchors endorse the same body with
// a new window and serial+1 while the current certificate verifies.
// NodeRecord.WGKey lets a node rotate its WireGuard key
// (Identity.RotateWG) without new endorsements: the record is signed by
// its Ed25519 identity, and zero means the certificate's key.
//
// All anchor state — invite ledger, members with their names, IPv4
// addresses and latest endorsed certificates, the pending queue, the Seq
// of each change and policy signed, the next Enroll serial — is one JSON
// document, Dir/anchor/state.json (mode 0600; local, unsigned state, so
// JSON is fine and debuggable), rewritten atomically (temp file, fsync,
// rename, directory fsync) before any answer, and rolled back in memory
// if the write fails. One file means the ledger, the allocations, the
// queue and the votes can never disagree after a crash. Rewriting the
// whole file per decision is O(members); fine for thousands of nodes.
// Anchor serialises decisions with one mutex, which also covers the file.
//
// # State files
//
// A node's state directory holds identity.key (Ed25519 seed and clamped
// Curve25519 key, binary, mode 0600, refused with a `chmod 600` hint when
// group/other can access it), genesis and cert (binary encodings, 0600),
// trust-view (the chain, revocations and policy; SaveView/LoadView,
// re-verified on load), and anchor/ on anchors. All are written
// atomically.
package trust
