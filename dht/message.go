package dht

import (
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"unicode/utf8"

	"github.com/weft-net/weft/addr"
)

// Wire format. Every message body is
//
//	version(1)=1 tag(1) fields...
//
// all integers big-endian, every variable-length field preceded by its
// length and bounded. The tag names the message (request tags equal the
// MsgType; reply tags have the high bit set), so a reply can never be
// decoded as a request or one message as another. Decoders reject unknown
// versions, unknown flags and trailing bytes, so each message has exactly
// one encoding.
//
//	FindValueRequest   key(32)
//	FindValueResponse  flags(1; bit0=found) [len(2) value] count(1) contact*count
//	StoreRequest       key(32) len(2) value
//	StoreResponse      status(1) storedSeq(8) len(1) detail(UTF-8)
//	FindNodeRequest    target(32)
//	FindNodeResponse   count(1) contact*count
//	PingRequest        nonce(8)
//	PingResponse       nonce(8)
//	GossipRequest      count(1) [len(2) payload]*count dcount(2) id(8)*dcount
//	GossipResponse     count(1) [len(2) payload]*count
//	contact            id(32) key(32) family(1; 4 or 6) ip(4 or 16) port(2)
const (
	wireVersion = 1

	tagFindValueRequest  = byte(MsgFindValue)
	tagStoreRequest      = byte(MsgStore)
	tagFindNodeRequest   = byte(MsgFindNode)
	tagFindValueResponse = 0x80 | byte(MsgFindValue)
	tagStoreResponse     = 0x80 | byte(MsgStore)
	tagFindNodeResponse  = 0x80 | byte(MsgFindNode)
	tagPingRequest       = byte(MsgPing)
	tagPingResponse      = 0x80 | byte(MsgPing)
	tagGossipRequest     = byte(MsgGossip)
	tagGossipResponse    = 0x80 | byte(MsgGossip)

	flagFound = 1 << 0
)

// Codec limits.
const (
	// MaxValueSize bounds a record value on the wire; it keeps a reply
	// within one sealed control packet of nat (8104-byte bodies). Stores apply their
	// own, usually smaller, cap (StoreOptions.MaxRecordSize).
	MaxValueSize = 6 << 10

	// MaxContacts bounds the contacts in one reply: Kademlia's k.
	MaxContacts = 20

	// MaxDetailSize bounds the detail text of a StoreResponse.
	MaxDetailSize = 255

	maxContactSize = 2*KeySize + 1 + 16 + 2

	// MaxMessageSize bounds every encoded message; the transport must
	// carry bodies at least this large.
	MaxMessageSize = 2 + 1 + 2 + MaxValueSize + 1 + MaxContacts*maxContactSize
)

// Contact is a node as named in FIND_NODE and FIND_VALUE replies: its
// Kademlia ID and where to reach it. Receivers must not trust a contact
// before verifying the node's certificate.
type Contact struct {
	ID   addr.NodeID
	Peer Peer
}

// FindValueRequest asks a server for the record stored under Key.
type FindValueRequest struct {
	Key Key
}

// FindValueResponse carries the stored value if the server has one, and
// contacts closer to the key (Kademlia's fallback; empty from servers with
// no routing table).
type FindValueResponse struct {
	Found    bool
	Value    []byte // meaningful only when Found
	Contacts []Contact
}

// StoreRequest asks a server to store Value under Key.
type StoreRequest struct {
	Key   Key
	Value []byte
}

// StoreStatus is a server's verdict on a StoreRequest.
type StoreStatus uint8

// Store statuses. Decoders accept values not listed here (from newer
// servers); clients treat them as a rejection.
const (
	StatusOK          StoreStatus = 0 // stored, or the same record was already stored
	StatusReplay      StoreStatus = 1 // ErrReplay
	StatusConflict    StoreStatus = 2 // ErrConflict
	StatusInvalid     StoreStatus = 3 // ErrInvalid
	StatusExpired     StoreStatus = 4 // ErrExpired
	StatusTooLarge    StoreStatus = 5 // ErrTooLarge
	StatusFull        StoreStatus = 6 // ErrFull
	StatusRateLimited StoreStatus = 7 // ErrRateLimited
)

var statusErrs = [...]error{
	StatusReplay:      ErrReplay,
	StatusConflict:    ErrConflict,
	StatusInvalid:     ErrInvalid,
	StatusExpired:     ErrExpired,
	StatusTooLarge:    ErrTooLarge,
	StatusFull:        ErrFull,
	StatusRateLimited: ErrRateLimited,
}

// Err returns the sentinel for s: nil for StatusOK, one of ErrReplay,
// ErrConflict, ... for known rejections, and a generic error otherwise.
func (s StoreStatus) Err() error {
	if s == StatusOK {
		return nil
	}
	if int(s) < len(statusErrs) && statusErrs[s] != nil {
		return statusErrs[s]
	}
	return fmt.Errorf("rejected with unknown status %d", uint8(s))
}

// statusOf maps an error from Store.Put to the status sent on the wire.
func statusOf(err error) StoreStatus {
	for s, e := range statusErrs {
		if e != nil && errors.Is(err, e) {
			return StoreStatus(s)
		}
	}
	return StatusInvalid
}

// StoreResponse is a server's answer to a StoreRequest. StoredSeq is the
// sequence number the server holds for the key after the request (so a
// publisher told StatusReplay learns what to exceed); Detail explains a
// rejection.
type StoreResponse struct {
	Status    StoreStatus
	StoredSeq uint64
	Detail    string
}

// FindNodeRequest asks a server for the contacts it knows closest to Target.
type FindNodeRequest struct {
	Target Key
}

// FindNodeResponse lists up to MaxContacts contacts.
type FindNodeResponse struct {
	Contacts []Contact
}

// PingRequest asks a node whether it is alive (Kademlia's PING). The
// nonce is echoed so a reply cannot be replayed for another request.
type PingRequest struct {
	Nonce uint64
}

// PingResponse answers a PingRequest with its nonce.
type PingResponse struct {
	Nonce uint64
}

var (
	_ encoding.BinaryMarshaler   = PingRequest{}
	_ encoding.BinaryUnmarshaler = (*PingRequest)(nil)
	_ encoding.BinaryMarshaler   = PingResponse{}
	_ encoding.BinaryUnmarshaler = (*PingResponse)(nil)
	_ encoding.BinaryMarshaler   = FindValueRequest{}
	_ encoding.BinaryUnmarshaler = (*FindValueRequest)(nil)
	_ encoding.BinaryMarshaler   = FindValueResponse{}
	_ encoding.BinaryUnmarshaler = (*FindValueResponse)(nil)
	_ encoding.BinaryMarshaler   = StoreRequest{}
	_ encoding.BinaryUnmarshaler = (*StoreRequest)(nil)
	_ encoding.BinaryMarshaler   = StoreResponse{}
	_ encoding.BinaryUnmarshaler = (*StoreResponse)(nil)
	_ encoding.BinaryMarshaler   = FindNodeRequest{}
	_ encoding.BinaryUnmarshaler = (*FindNodeRequest)(nil)
	_ encoding.BinaryMarshaler   = FindNodeResponse{}
	_ encoding.BinaryUnmarshaler = (*FindNodeResponse)(nil)
)

// MarshalBinary encodes m.
func (m FindValueRequest) MarshalBinary() ([]byte, error) {
	b := header(make([]byte, 0, 2+KeySize), tagFindValueRequest)
	return append(b, m.Key[:]...), nil
}

// UnmarshalBinary decodes b into m.
func (m *FindValueRequest) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, what: "FIND_VALUE request"}
	d.header(tagFindValueRequest)
	var v FindValueRequest
	d.key(&v.Key)
	if err := d.finish(); err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalBinary encodes m. It fails if the value or contact list exceeds the
// codec limits or a contact's address is invalid.
func (m FindValueResponse) MarshalBinary() ([]byte, error) {
	b := header(make([]byte, 0, 4+len(m.Value)+1+len(m.Contacts)*maxContactSize), tagFindValueResponse)
	var flags byte
	if m.Found {
		flags |= flagFound
	}
	b = append(b, flags)
	if m.Found {
		var err error
		if b, err = appendValue(b, m.Value); err != nil {
			return nil, fmt.Errorf("encode FIND_VALUE response: %w", err)
		}
	}
	b, err := appendContacts(b, m.Contacts)
	if err != nil {
		return nil, fmt.Errorf("encode FIND_VALUE response: %w", err)
	}
	return b, nil
}

// UnmarshalBinary decodes b into m. Value and contacts do not alias b.
func (m *FindValueResponse) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, what: "FIND_VALUE response"}
	d.header(tagFindValueResponse)
	var v FindValueResponse
	flags := d.byte()
	if flags&^flagFound != 0 {
		d.fail("unknown flags %#x", flags)
	}
	if flags&flagFound != 0 {
		v.Found = true
		v.Value = d.value()
	}
	v.Contacts = d.contacts()
	if err := d.finish(); err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalBinary encodes m. It fails if the value exceeds MaxValueSize.
func (m StoreRequest) MarshalBinary() ([]byte, error) {
	b := header(make([]byte, 0, 2+KeySize+2+len(m.Value)), tagStoreRequest)
	b = append(b, m.Key[:]...)
	b, err := appendValue(b, m.Value)
	if err != nil {
		return nil, fmt.Errorf("encode STORE request: %w", err)
	}
	return b, nil
}

// UnmarshalBinary decodes b into m. Value does not alias b.
func (m *StoreRequest) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, what: "STORE request"}
	d.header(tagStoreRequest)
	var v StoreRequest
	d.key(&v.Key)
	v.Value = d.value()
	if err := d.finish(); err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalBinary encodes m. A Detail longer than MaxDetailSize bytes is
// truncated at a rune boundary; invalid UTF-8 in it is replaced.
func (m StoreResponse) MarshalBinary() ([]byte, error) {
	detail := clipDetail(m.Detail)
	b := header(make([]byte, 0, 2+1+8+1+len(detail)), tagStoreResponse)
	b = append(b, byte(m.Status))
	b = binary.BigEndian.AppendUint64(b, m.StoredSeq)
	b = append(b, byte(len(detail)))
	return append(b, detail...), nil
}

// UnmarshalBinary decodes b into m.
func (m *StoreResponse) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, what: "STORE response"}
	d.header(tagStoreResponse)
	var v StoreResponse
	v.Status = StoreStatus(d.byte())
	v.StoredSeq = d.uint64()
	n := int(d.byte())
	detail := d.bytes(n)
	if d.err == nil && !utf8.Valid(detail) {
		d.fail("detail is not UTF-8")
	}
	v.Detail = string(detail)
	if err := d.finish(); err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalBinary encodes m.
func (m FindNodeRequest) MarshalBinary() ([]byte, error) {
	b := header(make([]byte, 0, 2+KeySize), tagFindNodeRequest)
	return append(b, m.Target[:]...), nil
}

// UnmarshalBinary decodes b into m.
func (m *FindNodeRequest) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, what: "FIND_NODE request"}
	d.header(tagFindNodeRequest)
	var v FindNodeRequest
	d.key(&v.Target)
	if err := d.finish(); err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalBinary encodes m. It fails on more than MaxContacts contacts or an
// invalid contact address.
func (m FindNodeResponse) MarshalBinary() ([]byte, error) {
	b := header(make([]byte, 0, 3+len(m.Contacts)*maxContactSize), tagFindNodeResponse)
	b, err := appendContacts(b, m.Contacts)
	if err != nil {
		return nil, fmt.Errorf("encode FIND_NODE response: %w", err)
	}
	return b, nil
}

// UnmarshalBinary decodes b into m. Contacts do not alias b.
func (m *FindNodeResponse) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, what: "FIND_NODE response"}
	d.header(tagFindNodeResponse)
	var v FindNodeResponse
	v.Contacts = d.contacts()
	if err := d.finish(); err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalBinary encodes m.
func (m PingRequest) MarshalBinary() ([]byte, error) {
	b := header(make([]byte, 0, 2+8), tagPingRequest)
	return binary.BigEndian.AppendUint64(b, m.Nonce), nil
}

// UnmarshalBinary decodes b into m.
func (m *PingRequest) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, what: "PING request"}
	d.header(tagPingRequest)
	v := PingRequest{Nonce: d.uint64()}
	if err := d.finish(); err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalBinary encodes m.
func (m PingResponse) MarshalBinary() ([]byte, error) {
	b := header(make([]byte, 0, 2+8), tagPingResponse)
	return binary.BigEndian.AppendUint64(b, m.Nonce), nil
}

// UnmarshalBinary decodes b into m.
func (m *PingResponse) UnmarshalBinary(b []byte) error {
	d := decoder{b: b, what: "PING response"}
	d.header(tagPingResponse)
	v := PingResponse{Nonce: d.uint64()}
	if err := d.finish(); err != nil {
		return err
	}
	*m = v
	return nil
}

func header(b []byte, tag byte) []byte { return append(b, wireVersion, tag) }

func appendValue(b, v []byte) ([]byte, error) {
	if len(v) > MaxValueSize {
		return nil, fmt.Errorf("value is %d bytes, limit %d", len(v), MaxValueSize)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...), nil
}

func appendContacts(b []byte, cs []Contact) ([]byte, error) {
	if len(cs) > MaxContacts {
		return nil, fmt.Errorf("%d contacts, limit %d", len(cs), MaxContacts)
	}
	b = append(b, byte(len(cs)))
	for i, c := range cs {
		if err := checkContactAddr(c.Peer.Addr); err != nil {
			return nil, fmt.Errorf("contact %d (%s): %w", i, c.ID.String(), err)
		}
		ip := c.Peer.Addr.Addr().Unmap()
		b = append(b, c.ID[:]...)
		b = append(b, c.Peer.Key[:]...)
		if ip.Is4() {
			b = append(b, 4)
		} else {
			b = append(b, 6)
		}
		b = append(b, ip.AsSlice()...)
		b = binary.BigEndian.AppendUint16(b, c.Peer.Addr.Port())
	}
	return b, nil
}

// checkContactAddr accepts any address a packet could be sent to: a valid,
// specified IP without zone and a non-zero port. Whether an address is
// reachable or allowed is the caller's policy.
func checkContactAddr(ap netip.AddrPort) error {
	ip := ap.Addr()
	switch {
	case !ip.IsValid():
		return fmt.Errorf("invalid address")
	case ip.Zone() != "":
		return fmt.Errorf("address %s has a zone", ip)
	case ip.IsUnspecified():
		return fmt.Errorf("unspecified address %s", ip)
	case ap.Port() == 0:
		return fmt.Errorf("port 0")
	}
	return nil
}

func clipDetail(s string) string {
	s = string([]rune(s)) // replaces invalid UTF-8 with U+FFFD
	for len(s) > MaxDetailSize {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// decoder reads fields from b, recording the first error; after an error
// every read returns zero values, so decode functions check once at the end.
type decoder struct {
	b    []byte
	what string
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("decode %s: %w: %s", d.what, ErrMalformed, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail("truncated: need %d bytes, have %d", n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if v := d.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) uint16() uint16 {
	if v := d.bytes(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (d *decoder) uint64() uint64 {
	if v := d.bytes(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) key(k *Key) { copy(k[:], d.bytes(KeySize)) }

func (d *decoder) header(tag byte) {
	if v := d.byte(); d.err == nil && v != wireVersion {
		hint := ""
		if v > wireVersion {
			hint = "; the peer runs a newer weft, upgrade this node"
		}
		d.fail("unsupported version %d (this node speaks %d%s)", v, wireVersion, hint)
	}
	if t := d.byte(); d.err == nil && t != tag {
		d.fail("unexpected message tag %#x, want %#x", t, tag)
	}
}

func (d *decoder) value() []byte {
	n := int(d.uint16())
	if d.err == nil && n > MaxValueSize {
		d.fail("value is %d bytes, limit %d", n, MaxValueSize)
		return nil
	}
	v := d.bytes(n)
	if v == nil {
		return nil
	}
	return append([]byte{}, v...)
}

func (d *decoder) contacts() []Contact {
	n := int(d.byte())
	if d.err != nil {
		return nil
	}
	if n > MaxContacts {
		d.fail("%d contacts, limit %d", n, MaxContacts)
		return nil
	}
	if n == 0 {
		return nil
	}
	cs := make([]Contact, 0, n)
	for range n {
		var c Contact
		copy(c.ID[:], d.bytes(len(c.ID)))
		copy(c.Peer.Key[:], d.bytes(len(c.Peer.Key)))
		var ip netip.Addr
		switch fam := d.byte(); {
		case d.err != nil:
		case fam == 4:
			if v := d.bytes(4); v != nil {
				ip = netip.AddrFrom4([4]byte(v))
			}
		case fam == 6:
			v := d.bytes(16)
			if v == nil {
				break
			}
			ip = netip.AddrFrom16([16]byte(v))
			if ip.Is4In6() {
				d.fail("IPv4-mapped address %s must use family 4", ip)
			}
		default:
			d.fail("unknown address family %d", fam)
		}
		port := d.uint16()
		if d.err != nil {
			return nil
		}
		c.Peer.Addr = netip.AddrPortFrom(ip, port)
		if err := checkContactAddr(c.Peer.Addr); err != nil {
			d.fail("contact %d: %v", len(cs), err)
			return nil
		}
		cs = append(cs, c)
	}
	return cs
}

func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}
